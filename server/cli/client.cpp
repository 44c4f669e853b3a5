#include "server/cli/client.hpp"

#include <fcntl.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "server/net/asio.hpp"

namespace otahub::cli {
namespace {

using namespace otahub::net;  // asio, beast, ssl, tcp, awaitable, kAsTuple
namespace bhttp = beast::http;

constexpr auto kConnectTimeout = std::chrono::seconds(20);
// Between two reads or writes; the hub may take a while to verify a large upload.
constexpr auto kIoTimeout = std::chrono::minutes(10);
constexpr std::size_t kChunkBytes = 64 * 1024;
constexpr std::uint64_t kMaxAnswerBytes = 64ULL * 1024 * 1024;
constexpr std::size_t kMaxDetailChars = 400;

struct Url {
    bool tls = true;
    std::string host;  // without brackets
    std::string port;
    std::string host_header;
    std::string prefix;  // path prefix without the trailing '/'
};

std::string lower(std::string_view text) {
    std::string out(text);
    for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

Url parse_url(const std::string& text) {
    Url url;
    auto scheme_end = text.find("://");
    if (scheme_end == std::string::npos) {
        throw std::invalid_argument("URL '" + printable(text) +
                                    "' must start with https:// or http://");
    }
    auto scheme = lower(std::string_view(text).substr(0, scheme_end));
    if (scheme == "https") {
        url.tls = true;
    } else if (scheme == "http") {
        url.tls = false;
    } else {
        throw std::invalid_argument("URL scheme must be https or http, not '" + printable(scheme) +
                                    "'");
    }
    auto rest = std::string_view(text).substr(scheme_end + 3);
    auto authority_end = rest.find_first_of("/?#");
    auto authority = rest.substr(0, authority_end);
    auto path =
        authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);
    if (authority.find('@') != std::string_view::npos) {
        throw std::invalid_argument("URL must not contain credentials; use otahub login");
    }
    std::string_view port;
    if (!authority.empty() && authority.front() == '[') {
        auto close = authority.find(']');
        if (close == std::string_view::npos) throw std::invalid_argument("URL has a bad IPv6 host");
        url.host = std::string(authority.substr(1, close - 1));
        auto after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') throw std::invalid_argument("URL has a bad port");
            port = after.substr(1);
        }
    } else {
        auto colon = authority.rfind(':');
        url.host = std::string(authority.substr(0, colon));
        if (colon != std::string_view::npos) port = authority.substr(colon + 1);
    }
    if (url.host.empty()) throw std::invalid_argument("URL has no host");
    if (port.empty()) {
        url.port = url.tls ? "443" : "80";
    } else {
        unsigned long value = 0;
        for (char c : port) {
            if (c < '0' || c > '9' || value > 65535) {
                throw std::invalid_argument("URL has a bad port");
            }
            value = value * 10 + static_cast<unsigned long>(c - '0');
        }
        if (value == 0 || value > 65535) throw std::invalid_argument("URL has a bad port");
        url.port = std::to_string(value);
    }
    if (path.find_first_of("?#") != std::string_view::npos) {
        throw std::invalid_argument("URL must not have a query or fragment");
    }
    while (!path.empty() && path.back() == '/') path.remove_suffix(1);
    url.prefix = std::string(path);
    const bool ipv6 = url.host.find(':') != std::string::npos;
    url.host_header = ipv6 ? "[" + url.host + "]" : url.host;
    if (port.size() > 0 && url.port != (url.tls ? "443" : "80")) url.host_header += ":" + url.port;
    return url;
}

/// What to send.
struct Outgoing {
    bhttp::verb method = bhttp::verb::get;
    std::string target;
    std::string content_type;
    std::string body;  // in-memory body
    int body_fd = -1;  // or a file body of body_length bytes
    std::uint64_t body_length = 0;
    std::string sink_path;  // a 2xx answer goes to this file ("-" stdout) instead of memory
    const ProgressFn* progress = nullptr;
};

/// What came back.
struct Incoming {
    int status = 0;
    std::string body;
    std::uint64_t sunk_bytes = 0;
};

/// Closes a file descriptor on scope exit.
struct FdGuard {
    int fd = -1;
    FdGuard() = default;
    explicit FdGuard(int value) : fd(value) {}
    FdGuard(const FdGuard&) = delete;
    FdGuard& operator=(const FdGuard&) = delete;
    ~FdGuard() {
        if (fd > 2) ::close(fd);
    }
};

void write_all(int fd, const char* data, std::size_t size, const std::string& name) {
    while (size > 0) {
        auto n = ::write(fd, data, size);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw std::runtime_error("cannot write " + name + ": " + std::strerror(errno));
        data += n;
        size -= static_cast<std::size_t>(n);
    }
}

/// A download target that only becomes the named file once complete.
class Sink {
  public:
    explicit Sink(std::string path) : path_(std::move(path)) {
        if (path_ == "-") {
            fd_.fd = STDOUT_FILENO;
            return;
        }
        temp_ = path_ + ".part";
        fd_.fd = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd_.fd < 0) {
            throw std::runtime_error("cannot create " + temp_ + ": " + std::strerror(errno));
        }
    }
    Sink(const Sink&) = delete;
    Sink& operator=(const Sink&) = delete;
    ~Sink() {
        if (!temp_.empty() && !committed_) ::unlink(temp_.c_str());
    }

    void write(const char* data, std::size_t size) {
        write_all(fd_.fd, data, size, temp_.empty() ? "stdout" : temp_);
    }

    void commit() {
        if (temp_.empty()) return;
        if (::fsync(fd_.fd) != 0 || ::close(fd_.fd) != 0) {
            fd_.fd = -1;
            throw std::runtime_error("cannot write " + temp_ + ": " + std::strerror(errno));
        }
        fd_.fd = -1;
        if (::rename(temp_.c_str(), path_.c_str()) != 0) {
            throw std::runtime_error("cannot rename " + temp_ + " to " + path_ + ": " +
                                     std::strerror(errno));
        }
        committed_ = true;
    }

  private:
    std::string path_;
    std::string temp_;
    FdGuard fd_;
    bool committed_ = false;
};

std::string where(const Url& url) { return url.host_header + (url.tls ? "" : " (plain HTTP)"); }

/// Sends `out` on an established stream and reads the answer.
template <class Stream>
awaitable<Incoming> exchange(Stream& stream, Url url, std::string token, Outgoing out) {
    auto& tcp_layer = beast::get_lowest_layer(stream);
    bhttp::request<bhttp::empty_body> req{out.method, out.target, 11};
    req.set(bhttp::field::host, url.host_header);
    req.set(bhttp::field::user_agent, "otahub-cli/0.1");
    req.set(bhttp::field::accept, "application/json");
    req.keep_alive(false);  // one request per connection
    if (!token.empty()) req.set(bhttp::field::authorization, "Bearer " + token);
    const bool has_body = out.body_fd >= 0 || !out.body.empty() ||
                          out.method == bhttp::verb::post || out.method == bhttp::verb::put;
    const std::uint64_t length = out.body_fd >= 0 ? out.body_length : out.body.size();
    if (has_body) {
        if (!out.content_type.empty()) req.set(bhttp::field::content_type, out.content_type);
        req.content_length(length);
    }

    bhttp::request_serializer<bhttp::empty_body> serializer{req};
    tcp_layer.expires_after(kIoTimeout);
    auto [header_ec, header_n] = co_await bhttp::async_write_header(stream, serializer, kAsTuple);
    (void)header_n;
    if (header_ec) {
        throw ConnectionError("sending the request to " + where(url) +
                              " failed: " + header_ec.message());
    }

    // The hub may answer early (413, 401) and close while the body is still going out: keep the
    // write error and try to read that answer before reporting it.
    boost::system::error_code write_ec;
    if (out.body_fd >= 0) {
        std::vector<char> chunk(kChunkBytes);
        std::uint64_t sent = 0;
        if (out.progress != nullptr && *out.progress) (*out.progress)(0, length);
        while (sent < length) {
            auto want =
                static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), length - sent));
            auto n = ::read(out.body_fd, chunk.data(), want);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                throw std::runtime_error(std::string("cannot read the file: ") +
                                         std::strerror(errno));
            }
            if (n == 0) throw std::runtime_error("the file shrank while it was being uploaded");
            tcp_layer.expires_after(kIoTimeout);
            auto [ec, written] = co_await asio::async_write(
                stream, asio::buffer(chunk.data(), static_cast<std::size_t>(n)), kAsTuple);
            if (ec) {
                write_ec = ec;
                break;
            }
            sent += written;
            if (out.progress != nullptr && *out.progress) (*out.progress)(sent, length);
        }
    } else if (!out.body.empty()) {
        tcp_layer.expires_after(kIoTimeout);
        auto [ec, written] = co_await asio::async_write(stream, asio::buffer(out.body), kAsTuple);
        (void)written;
        write_ec = ec;
    }

    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::empty_body> header_parser;
    header_parser.header_limit(64 * 1024);
    header_parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    tcp_layer.expires_after(write_ec
                                ? std::chrono::seconds(5)
                                : std::chrono::duration_cast<std::chrono::seconds>(kIoTimeout));
    auto [read_ec, read_n] =
        co_await bhttp::async_read_header(stream, buffer, header_parser, kAsTuple);
    (void)read_n;
    if (read_ec) {
        auto cause = write_ec ? write_ec : read_ec;
        throw ConnectionError((write_ec ? "sending the request to " : "reading the answer from ") +
                              where(url) + " failed: " + cause.message());
    }
    Incoming in;
    in.status = static_cast<int>(header_parser.get().result_int());
    const bool success = in.status >= 200 && in.status < 300;
    if (success && !out.sink_path.empty()) {
        bhttp::response_parser<bhttp::buffer_body> parser{std::move(header_parser)};
        parser.body_limit(std::numeric_limits<std::uint64_t>::max());
        const std::uint64_t total = parser.content_length().value_or(0);
        Sink sink(out.sink_path);
        std::vector<char> chunk(kChunkBytes);
        if (out.progress != nullptr && *out.progress) (*out.progress)(0, total);
        while (!parser.is_done()) {
            parser.get().body().data = chunk.data();
            parser.get().body().size = chunk.size();
            tcp_layer.expires_after(kIoTimeout);
            auto [ec, n] = co_await bhttp::async_read(stream, buffer, parser, kAsTuple);
            (void)n;
            if (ec == bhttp::error::need_buffer) ec = {};
            if (ec) {
                throw ConnectionError("the download from " + where(url) +
                                      " broke off: " + ec.message());
            }
            const std::size_t got = chunk.size() - parser.get().body().size;
            sink.write(chunk.data(), got);
            in.sunk_bytes += got;
            if (out.progress != nullptr && *out.progress) (*out.progress)(in.sunk_bytes, total);
        }
        sink.commit();
        co_return in;
    }
    bhttp::response_parser<bhttp::string_body> parser{std::move(header_parser)};
    parser.body_limit(kMaxAnswerBytes);
    if (!parser.is_done()) {
        tcp_layer.expires_after(kIoTimeout);
        auto [ec, n] = co_await bhttp::async_read(stream, buffer, parser, kAsTuple);
        (void)n;
        if (ec) {
            throw ConnectionError("reading the answer from " + where(url) +
                                  " failed: " + ec.message());
        }
    }
    in.body = std::move(parser.get().body());
    co_return in;
}

std::string tls_failure(const boost::system::error_code& ec, SSL* ssl) {
    std::string text = ec.message();
    long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
        text = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify) +
               " (pass the hub's CA bundle with --ca FILE or OTAHUB_CA)";
    }
    return text;
}

}  // namespace

struct Client::Impl {
    Endpoint endpoint;
    Url url;
    std::optional<ssl::context> tls;

    awaitable<Incoming> run(Outgoing out) {
        auto executor = co_await asio::this_coro::executor;
        tcp::resolver resolver(executor);
        auto [resolve_ec, endpoints] =
            co_await resolver.async_resolve(url.host, url.port, kAsTuple);
        if (resolve_ec) {
            throw ConnectionError("cannot resolve " + url.host + ": " + resolve_ec.message());
        }
        beast::tcp_stream stream(executor);
        stream.expires_after(kConnectTimeout);
        auto [connect_ec, connected] = co_await stream.async_connect(endpoints, kAsTuple);
        (void)connected;
        if (connect_ec) {
            throw ConnectionError("cannot connect to " + endpoint.url + ": " +
                                  connect_ec.message());
        }
        stream.socket().set_option(tcp::no_delay(true));
        if (!url.tls) co_return co_await exchange(stream, url, endpoint.token, out);

        beast::ssl_stream<beast::tcp_stream> tls_stream(std::move(stream), *tls);
        SSL* ssl = tls_stream.native_handle();
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (net::is_ip_literal(url.host)) {
            X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str());
        } else {
            SSL_set_tlsext_host_name(ssl, url.host.c_str());
            X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), 0);
        }
        beast::get_lowest_layer(tls_stream).expires_after(kConnectTimeout);
        auto [handshake_ec] =
            co_await tls_stream.async_handshake(ssl::stream_base::client, kAsTuple);
        if (handshake_ec) {
            throw ConnectionError("TLS handshake with " + url.host_header +
                                  " failed: " + tls_failure(handshake_ec, ssl));
        }
        Incoming in = co_await exchange(tls_stream, url, endpoint.token, out);
        // A polite close_notify; the answer is complete, so a failure here changes nothing.
        beast::get_lowest_layer(tls_stream).expires_after(std::chrono::seconds(2));
        co_await tls_stream.async_shutdown(kAsTuple);
        co_return in;
    }

    Incoming perform(Outgoing out) {
        asio::io_context io;
        std::exception_ptr failure;
        Incoming result;
        asio::co_spawn(io, run(std::move(out)), [&](std::exception_ptr error, Incoming in) {
            failure = error;
            result = std::move(in);
        });
        io.run();
        if (failure) std::rethrow_exception(failure);
        return result;
    }

    Outgoing outgoing(std::string_view method, const std::string& path) const {
        Outgoing out;
        out.method = bhttp::string_to_verb(method);
        if (out.method == bhttp::verb::unknown) throw std::invalid_argument("bad HTTP method");
        out.target = url.prefix + path;
        return out;
    }
};

namespace {

nlohmann::json data_of(const Incoming& in) {
    if (in.status < 200 || in.status >= 300) throw ApiFailure(in.status, in.body);
    if (in.body.empty()) return nullptr;
    auto parsed = nlohmann::json::parse(in.body, nullptr, false);
    if (parsed.is_discarded()) {
        throw ConnectionError("the hub answered " + std::to_string(in.status) +
                              " with a body that is not JSON");
    }
    if (parsed.is_object() && parsed.contains("data")) return parsed["data"];
    return parsed;
}

}  // namespace

ApiFailure::ApiFailure(int status, std::string_view body)
    : std::runtime_error(describe_error(status, body)), status_(status) {}

Client::Client(Endpoint endpoint) : impl_(std::make_unique<Impl>()) {
    impl_->endpoint = std::move(endpoint);
    impl_->url = parse_url(impl_->endpoint.url);
    if (impl_->url.tls) {
        impl_->tls.emplace(ssl::context::tls_client);
        auto& context = *impl_->tls;
        SSL_CTX_set_min_proto_version(context.native_handle(), TLS1_2_VERSION);
        context.set_verify_mode(ssl::verify_peer);
        boost::system::error_code ec;
        if (!impl_->endpoint.ca_file.empty()) {
            context.load_verify_file(impl_->endpoint.ca_file, ec);
            if (ec) {
                throw std::runtime_error("cannot load the CA bundle " + impl_->endpoint.ca_file +
                                         ": " + ec.message());
            }
        } else {
            context.set_default_verify_paths(ec);
            if (ec) {
                throw std::runtime_error("cannot load the system CA store: " + ec.message());
            }
        }
    }
}

Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

const std::string& Client::url() const { return impl_->endpoint.url; }

nlohmann::json Client::request(std::string_view method, const std::string& path,
                               const nlohmann::json& body) {
    auto out = impl_->outgoing(method, path);
    if (!body.is_null()) {
        out.body = body.dump();
        out.content_type = "application/json";
    }
    return data_of(impl_->perform(std::move(out)));
}

nlohmann::json Client::upload(const std::string& path, const std::string& file,
                              const ProgressFn& progress) {
    FdGuard fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.fd < 0) throw std::runtime_error("cannot open " + file + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd.fd, &st) != 0) {
        throw std::runtime_error("cannot read " + file + ": " + std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) throw std::runtime_error(file + " is not a regular file");
    auto out = impl_->outgoing("POST", path);
    out.content_type = "application/octet-stream";
    out.body_fd = fd.fd;
    out.body_length = static_cast<std::uint64_t>(st.st_size);
    out.progress = &progress;
    return data_of(impl_->perform(std::move(out)));
}

std::uint64_t Client::download(const std::string& path, const std::string& out_file,
                               const ProgressFn& progress) {
    auto out = impl_->outgoing("GET", path);
    out.sink_path = out_file;
    out.progress = &progress;
    auto in = impl_->perform(std::move(out));
    if (in.status < 200 || in.status >= 300) throw ApiFailure(in.status, in.body);
    return in.sunk_bytes;
}

std::string path_segment(std::string_view text) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(text.size());
    for (unsigned char c : text) {
        if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        }
    }
    return out;
}

std::string printable(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (unsigned char c : text) {
        if (c == '\n' || c == '\r' || c == '\t') {
            out.push_back(' ');
        } else if (c < 0x20 || c == 0x7f) {
            out.push_back('?');
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    return out;
}

std::string describe_error(int status, std::string_view body) {
    std::string reason(bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(status))));
    std::string detail;
    std::string fields;
    auto parsed = nlohmann::json::parse(body, nullptr, false);
    const nlohmann::json* errors = nullptr;
    if (!parsed.is_discarded() && parsed.is_object()) {
        auto it = parsed.find("errors");
        if (it != parsed.end()) errors = &*it;
    }
    if (errors != nullptr && errors->is_object()) {
        for (const auto& [key, value] : errors->items()) {
            if (key == "detail") {
                detail = value.is_string() ? value.get<std::string>() : value.dump();
                continue;
            }
            std::string messages;
            if (value.is_array()) {
                for (const auto& item : value) {
                    if (!messages.empty()) messages += ", ";
                    messages += item.is_string() ? item.get<std::string>() : item.dump();
                }
            } else {
                messages = value.is_string() ? value.get<std::string>() : value.dump();
            }
            if (!fields.empty()) fields += "; ";
            fields += key + ": " + messages;
        }
    } else if (errors != nullptr && errors->is_string()) {
        detail = errors->get<std::string>();
    } else if (parsed.is_discarded() && !body.empty()) {
        // Not our API (a proxy's HTML page, say): its first line is the best hint.
        auto line = body.substr(0, body.find('\n'));
        detail = std::string(line.substr(0, 200));
    }
    if (detail.empty()) detail = reason.empty() ? "request failed" : reason;
    std::string text = std::to_string(status) + ": " + detail;
    if (!fields.empty()) text += " (" + fields + ")";
    text = printable(text);
    if (text.size() > kMaxDetailChars) text = text.substr(0, kMaxDetailChars) + "...";
    return text;
}

}  // namespace otahub::cli
