#include "server/net/http_server.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/url/parse.hpp>
#include <filesystem>

#include "server/domain/crypto.hpp"
#include "server/net/tls.hpp"

namespace otahub::net {

namespace bhttp = beast::http;

struct HttpServer::State {
    asio::io_context& io;
    asio::thread_pool& workers;
    const http::Router& router;
    ssl::context* tls;
    HttpServerOptions options;
    tcp::acceptor acceptor;
    std::atomic<std::size_t> open{0};
    std::atomic<bool> stopped{false};

    State(asio::io_context& io_context, asio::thread_pool& pool, const http::Router& r,
          ssl::context* context, HttpServerOptions opts)
        : io(io_context),
          workers(pool),
          router(r),
          tls(context),
          options(std::move(opts)),
          acceptor(io_context) {}
};

bool is_benign_disconnect(const boost::system::error_code& ec) {
    return ec == asio::error::eof || ec == asio::error::connection_reset ||
           ec == asio::error::operation_aborted || ec == asio::error::broken_pipe ||
           ec == beast::error::timeout || ec == ssl::error::stream_truncated ||
           ec == bhttp::error::end_of_stream || ec == asio::error::not_connected ||
           ec == beast::websocket::error::closed;
}

namespace {

/// Fills a Request from a parsed header.
http::Request to_request(const bhttp::request_parser<bhttp::empty_body>& parser,
                         const std::string& remote) {
    const auto& msg = parser.get();
    http::Request req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    auto question = req.target.find('?');
    req.path = req.target.substr(0, question);
    if (question != std::string::npos) {
        std::string_view query = std::string_view(req.target).substr(question + 1);
        std::size_t start = 0;
        while (start <= query.size()) {
            auto end = query.find('&', start);
            if (end == std::string_view::npos) end = query.size();
            auto pair = query.substr(start, end - start);
            if (!pair.empty()) {
                auto eq = pair.find('=');
                auto key = http::percent_decode(pair.substr(0, eq), true);
                auto value = eq == std::string_view::npos
                                 ? std::optional<std::string>("")
                                 : http::percent_decode(pair.substr(eq + 1), true);
                if (key && value) req.query.emplace(std::move(*key), std::move(*value));
            }
            start = end + 1;
        }
    }
    for (const auto& field : msg) {
        std::string name{field.name_string()};
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        req.headers.emplace_back(std::move(name), std::string(field.value()));
    }
    req.remote_address = remote;
    req.request_id = crypto::hex(crypto::random_bytes(8));
    return req;
}

/// The API's TLS connection: OpenSSL on the socket itself (TlsSocket). asio::ssl::stream runs
/// OpenSSL over a BIO pair, so every encrypted byte is copied twice more before it reaches the
/// socket (11-15% of the hub's CPU per downloaded GiB). Whole writes: one SSL_write sends a 256 KiB
/// piece of a file as 16 records, not one record per call. Timeouts as Beast's tcp_stream has
/// them: when the time runs out, the socket is shut down and the pending operation fails.
class ApiTlsStream {
  public:
    using executor_type = TlsSocket::executor_type;

    ApiTlsStream(tcp::socket socket, SSL_CTX* ctx)
        : tls_(std::move(socket), ctx),
          timer_(tls_.get_executor()),
          watch_(std::make_shared<Watch>()) {
        if (SSL* ssl = tls_.native_handle()) SSL_clear_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE);
    }
    ~ApiTlsStream() { ++watch_->generation; }
    ApiTlsStream(const ApiTlsStream&) = delete;
    ApiTlsStream& operator=(const ApiTlsStream&) = delete;

    executor_type get_executor() { return tls_.get_executor(); }

    template <class Buffers, class Token>
    auto async_read_some(const Buffers& buffers, Token&& token) {
        return tls_.async_read_some(buffers, std::forward<Token>(token));
    }
    template <class Buffers, class Token>
    auto async_write_some(const Buffers& buffers, Token&& token) {
        return tls_.async_write_some(buffers, std::forward<Token>(token));
    }
    template <class Token>
    auto async_handshake(Token&& token) {
        return tls_.async_handshake(std::forward<Token>(token));
    }
    template <class Token>
    auto async_shutdown(Token&& token) {
        return tls_.async_shutdown(std::forward<Token>(token));
    }

    /// Cuts the connection off `after` from now unless called again first.
    void expires_after(std::chrono::steady_clock::duration after) {
        const auto generation = ++watch_->generation;
        timer_.expires_after(after);
        timer_.async_wait([watch = watch_, generation,
                           &socket = tls_.next_layer()](const boost::system::error_code& ec) {
            if (ec || watch->generation != generation) return;
            boost::system::error_code ignored;
            socket.shutdown(tcp::socket::shutdown_both, ignored);
            socket.cancel(ignored);
        });
    }
    void expires_never() {
        ++watch_->generation;
        timer_.cancel();
    }

  private:
    /// Shared with the timer's handler, which may run after the stream is gone.
    struct Watch {
        std::uint64_t generation = 0;
    };
    TlsSocket tls_;
    asio::steady_timer timer_;
    std::shared_ptr<Watch> watch_;
};

/// The timeouts of a connection: Beast's tcp_stream for plain HTTP, the stream itself for TLS.
inline beast::tcp_stream& timeouts(beast::tcp_stream& stream) { return stream; }
inline ApiTlsStream& timeouts(ApiTlsStream& stream) { return stream; }

/// A file body is handed to the stream this much at a time, from a mapping of this size.
constexpr std::size_t kFileWriteBytes = 256 * 1024;
constexpr std::uint64_t kFileWindowBytes = 2 * 1024 * 1024;

std::size_t page_size() {
    static const auto bytes = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return bytes;
}

/// A read-only mapping of `size` bytes of `fd` from `offset` (a multiple of the page size);
/// data() is null when the file cannot be mapped.
class FileWindow {
  public:
    FileWindow(int fd, off_t offset, std::size_t size) : size_(size) {
        void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, offset);
        if (p != MAP_FAILED) data_ = static_cast<const char*>(p);
    }
    ~FileWindow() {
        if (data_) ::munmap(const_cast<char*>(data_), size_);
    }
    FileWindow(const FileWindow&) = delete;
    FileWindow& operator=(const FileWindow&) = delete;
    const char* data() const { return data_; }

    /// Maps the pages of [from, from + n) in one call, reading from disk what the page cache
    /// lacks, so an I/O thread blocks for at most one piece at a time on a cold file (as a pread
    /// of it would) and takes no page fault per 64 KiB while encrypting. Best effort: before
    /// Linux 5.14 the pages fault in as they are read.
    void populate(std::size_t from, std::size_t n) const {
        const std::size_t start = from - from % page_size();
        (void)::madvise(const_cast<char*>(data_) + start, from + n - start, MADV_POPULATE_READ);
    }

  private:
    const char* data_ = nullptr;
    std::size_t size_;
};

template <class Stream>
awaitable<void> write_response(Stream& stream, const http::Response& res, unsigned version,
                               bool keep_alive, bool head) {
    bhttp::response<bhttp::empty_body> header{static_cast<bhttp::status>(res.status), version};
    header.set(bhttp::field::server, "otahub");
    for (const auto& [name, value] : res.headers) header.insert(name, value);
    header.keep_alive(keep_alive);
    const bool from_file = !res.file_path.empty();
    const std::uint64_t length = from_file ? res.file_length : res.body.size();
    if (res.status != 204 && res.status != 304) header.content_length(length);

    bhttp::response_serializer<bhttp::empty_body> serializer{header};
    co_await bhttp::async_write_header(stream, serializer, use_awaitable);
    if (head || res.head_only || length == 0) co_return;
    if (!from_file) {
        co_await asio::async_write(stream, asio::buffer(res.body), use_awaitable);
        co_return;
    }
    int fd = ::open(res.file_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open " + res.file_path);
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    std::uint64_t offset = res.file_offset;
    std::uint64_t remaining = length;
    // TLS needs the bytes in user space (no kernel TLS here). The file is mapped a window at a
    // time and encrypted straight from the page cache: no copy into a buffer of ours (pread's
    // copy and page lookups were ~20% of the hub's CPU per downloaded GiB). Firmware files are
    // written once and renamed into place, never truncated, so a mapped page cannot vanish (an
    // unlinked file keeps its pages while mapped). Windows bound what the mapping adds to RSS.
    // A page past the end of the file would fault (SIGBUS) rather than read short.
    struct stat st {};
    const bool mappable = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                          offset + remaining <= static_cast<std::uint64_t>(st.st_size);
    while (mappable && remaining > 0) {
        const std::uint64_t start = offset - offset % page_size();
        const auto span = static_cast<std::size_t>(
            std::min<std::uint64_t>(kFileWindowBytes, offset - start + remaining));
        FileWindow window{fd, static_cast<off_t>(start), span};
        if (!window.data()) break;  // not mappable: the buffered reads below
        const auto skip = static_cast<std::size_t>(offset - start);
        const auto n = span - skip;
        for (std::size_t done = 0; done < n;) {
            const std::size_t part = std::min<std::size_t>(kFileWriteBytes, n - done);
            window.populate(skip + done, part);
            co_await asio::async_write(stream, asio::buffer(window.data() + skip + done, part),
                                       use_awaitable);
            done += part;
        }
        offset += n;
        remaining -= n;
    }
    if (remaining == 0) co_return;
    std::vector<char> chunk(kFileWriteBytes);
    while (remaining > 0) {
        auto want = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), remaining));
        auto got = ::pread(fd, chunk.data(), want, static_cast<off_t>(offset));
        if (got <= 0) throw std::runtime_error("short read from " + res.file_path);
        co_await asio::async_write(
            stream, asio::buffer(chunk.data(), static_cast<std::size_t>(got)), use_awaitable);
        offset += static_cast<std::uint64_t>(got);
        remaining -= static_cast<std::uint64_t>(got);
    }
}

/// After a response that refused a request whose body was not read (413, 431, 400), reads and
/// discards what the client still sends until it closes, for at most 2 s and 16 MiB. Closing a
/// socket with unread bytes makes the kernel send a reset, and a reset can destroy the response
/// before the client reads it: the client would see "connection reset" instead of the 413.
template <class Stream>
awaitable<void> drain_unread(Stream& stream) {
    constexpr std::uint64_t kMaxDrain = 16 * 1024 * 1024;
    timeouts(stream).expires_after(std::chrono::seconds(2));
    std::vector<char> scratch(16 * 1024);
    std::uint64_t drained = 0;
    while (drained < kMaxDrain) {
        auto [ec, n] = co_await stream.async_read_some(asio::buffer(scratch), kAsTuple);
        if (ec) break;
        drained += n;
    }
}

/// Serves requests until the connection ends; true when it ended with a request body (or
/// header) not read to its end.
template <class Stream>
awaitable<bool> serve_requests(Stream& stream, std::shared_ptr<HttpServer::State> state,
                               std::string remote) {
    beast::flat_buffer buffer;
    bool unread = false;
    auto& deadline = timeouts(stream);
    for (;;) {
        // One deadline covers reading, handling and writing a request.
        deadline.expires_after(state->options.idle_timeout);
        bhttp::request_parser<bhttp::empty_body> header_parser;
        header_parser.header_limit(16 * 1024);
        // The body limit depends on the route; it is applied once the route is known.
        header_parser.body_limit(std::numeric_limits<std::uint64_t>::max());
        auto [ec, _] = co_await bhttp::async_read_header(stream, buffer, header_parser, kAsTuple);
        if (ec) {
            if (ec == bhttp::error::header_limit ||
                ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category()) {
                auto res = http::error_response(ec == bhttp::error::header_limit ? 431 : 400,
                                                "malformed request: " + ec.message());
                co_await write_response(stream, res, 11, false, false);
                unread = true;
            }
            break;
        }
        http::Request req = to_request(header_parser, remote);
        const bool head = req.method == "HEAD";
        auto match = state->router.match(req.method, req.path);
        if (head && match.route == nullptr) {
            match = state->router.match("GET", req.path);
        }
        const unsigned version = header_parser.get().version();
        bool keep_alive = header_parser.get().keep_alive();
        const bool spool =
            match.route != nullptr && match.route->body_mode == http::BodyMode::kSpool;
        std::optional<http::Response> early;
        std::string spool_path;
        const std::uint64_t limit = spool ? state->options.upload_limit : state->options.body_limit;
        if (header_parser.content_length() && *header_parser.content_length() > limit) {
            // Refuse before reading: the declared length is already over the limit.
            auto res = http::error_response(
                413, "request body exceeds the limit of " + std::to_string(limit) + " bytes");
            res.set_header("x-request-id", req.request_id);
            co_await write_response(stream, res, header_parser.get().version(), false, false);
            unread = true;
            break;
        }
        if (spool) {
            bhttp::request_parser<bhttp::file_body> parser{std::move(header_parser)};
            parser.body_limit(state->options.upload_limit);
            std::filesystem::create_directories(state->options.spool_dir);
            spool_path = state->options.spool_dir + "/upload-" +
                         crypto::hex(crypto::random_bytes(12)) + ".part";
            boost::system::error_code open_ec;
            parser.get().body().open(spool_path.c_str(), beast::file_mode::write_new, open_ec);
            if (open_ec) {
                early = http::error_response(507, "cannot store the upload: " + open_ec.message());
                keep_alive = false;
                unread = true;
            } else {
                deadline.expires_after(std::chrono::hours(6));  // large uploads take their time
                auto [read_ec, n] = co_await bhttp::async_read(stream, buffer, parser, kAsTuple);
                parser.get().body().close();
                if (read_ec == bhttp::error::body_limit) {
                    early = http::error_response(
                        413, "upload exceeds the limit of " +
                                 std::to_string(state->options.upload_limit) + " bytes");
                    keep_alive = false;
                    unread = true;
                } else if (read_ec == boost::system::errc::no_space_on_device) {
                    early = http::error_response(507, "no space left to store the upload");
                    keep_alive = false;
                    unread = true;
                } else if (read_ec) {
                    std::filesystem::remove(spool_path, open_ec);
                    break;
                }
                req.body_file = spool_path;
                req.body_size = n;
            }
        } else {
            bhttp::request_parser<bhttp::string_body> parser{std::move(header_parser)};
            parser.body_limit(state->options.body_limit);
            auto [read_ec, n] = co_await bhttp::async_read(stream, buffer, parser, kAsTuple);
            if (read_ec == bhttp::error::body_limit) {
                early = http::error_response(413, "request body exceeds the limit of " +
                                                      std::to_string(state->options.body_limit) +
                                                      " bytes");
                keep_alive = false;
                unread = true;
            } else if (read_ec) {
                break;
            } else {
                req.body = std::move(parser.get().body());
                req.body_size = req.body.size();
            }
        }
        http::Response res;
        if (early) {
            res = std::move(*early);
        } else {
            const http::Router& router = state->router;
            // A named callable: see the GCC 12 note on net::run_blocking.
            auto handle = [&router, &req, &match]() { return router.dispatch(req, match); };
            res = co_await run_blocking(state->workers, std::move(handle));
        }
        if (!spool_path.empty()) {
            boost::system::error_code ignored;
            std::filesystem::remove(spool_path, ignored);
        }
        res.set_header("x-request-id", req.request_id);
        if (state->stopped) keep_alive = false;
        deadline.expires_after(state->options.idle_timeout +
                               std::chrono::hours(res.file_path.empty() ? 0 : 6));
        co_await write_response(stream, res, version, keep_alive, head);
        if (!keep_alive) break;
    }
    deadline.expires_never();
    co_return unread;
}

awaitable<void> handle_connection(tcp::socket socket, std::shared_ptr<HttpServer::State> state) {
    boost::system::error_code ec;
    auto endpoint = socket.remote_endpoint(ec);
    std::string remote = ec ? "unknown" : endpoint.address().to_string();
    socket.set_option(tcp::no_delay(true), ec);
    if (state->tls != nullptr) {
        ApiTlsStream stream{std::move(socket), state->tls->native_handle()};
        stream.expires_after(state->options.handshake_timeout);
        auto [hs_ec, hs_unused] = co_await stream.async_handshake(kAsTuple);
        (void)hs_unused;
        if (hs_ec) co_return;
        if (co_await serve_requests(stream, state, remote)) co_await drain_unread(stream);
        stream.expires_after(std::chrono::seconds(5));
        auto [shutdown_ec, shutdown_unused] = co_await stream.async_shutdown(kAsTuple);
        (void)shutdown_ec;
        (void)shutdown_unused;
    } else {
        beast::tcp_stream stream{std::move(socket)};
        const bool unread = co_await serve_requests(stream, state, remote);
        stream.socket().shutdown(tcp::socket::shutdown_send, ec);
        if (unread) co_await drain_unread(stream);
    }
}

awaitable<void> accept_loop(std::shared_ptr<HttpServer::State> state) {
    while (!state->stopped) {
        auto [ec, socket] =
            co_await state->acceptor.async_accept(asio::make_strand(state->io), kAsTuple);
        if (ec) {
            if (ec == asio::error::operation_aborted || state->stopped) break;
            spdlog::warn("api accept failed: {}", ec.message());
            continue;
        }
        ++state->open;
        auto executor = socket.get_executor();
        asio::co_spawn(executor, handle_connection(std::move(socket), state),
                       [state](std::exception_ptr error) {
                           --state->open;
                           if (!error) return;
                           try {
                               std::rethrow_exception(error);
                           } catch (const boost::system::system_error& e) {
                               if (!is_benign_disconnect(e.code())) {
                                   spdlog::warn("api connection ended: {}", e.what());
                               }
                           } catch (const std::exception& e) {
                               spdlog::warn("api connection ended: {}", e.what());
                           }
                       });
    }
}

}  // namespace

HttpServer::HttpServer(asio::io_context& io, asio::thread_pool& workers, const http::Router& router,
                       ssl::context* tls, HttpServerOptions options)
    : state_(std::make_shared<State>(io, workers, router, tls, std::move(options))) {}

HttpServer::~HttpServer() { stop(); }

std::uint16_t open_listener(tcp::acceptor& acceptor, const ListenAddress& address,
                            bool reuse_port) {
    auto endpoint = tcp::endpoint{asio::ip::make_address(address.host), address.port};
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    if (reuse_port) {
        acceptor.set_option(asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true));
    }
    acceptor.bind(endpoint);
    acceptor.listen(asio::socket_base::max_listen_connections);
    return acceptor.local_endpoint().port();
}

std::uint16_t HttpServer::listen(const ListenAddress& address) {
    return open_listener(state_->acceptor, address, state_->options.reuse_port);
}

void HttpServer::start() {
    asio::co_spawn(state_->acceptor.get_executor(), accept_loop(state_), asio::detached);
}

void HttpServer::stop() {
    if (state_->stopped.exchange(true)) return;
    asio::post(state_->acceptor.get_executor(), [state = state_] {
        boost::system::error_code ec;
        state->acceptor.close(ec);
    });
}

std::size_t HttpServer::open_connections() const { return state_->open; }

}  // namespace otahub::net
