#include "server/device/device_server.hpp"
#include <algorithm>

#include "server/app/metrics.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <malloc.h>

#include <atomic>
#include <cstdlib>

#include "db/repositories/devices_repository.hpp"
#include "server/device/authenticator.hpp"
#include "server/device/presence.hpp"
#include "server/device/ws_session.hpp"
#include "server/events/event_bus.hpp"
#include "server/http/message.hpp"
#include "server/net/http_server.hpp"
#include "server/net/tls.hpp"

namespace otahub::device {
namespace {

namespace beast = net::beast;
namespace bhttp = net::beast::http;
namespace websocket = net::beast::websocket;
namespace asio = net::asio;
using net::kAsTuple;
using net::tcp;

/// When glibc's malloc is the allocator (OTAHUB_MALLOC=system; tcmalloc's mallopt does
/// nothing): glibc gives each allocating thread its own arena (up to 8 per core), and
/// the handshake and database temporaries of thousands of devices then leave partly used pages in
/// every arena of the I/O and worker threads. Two arenas keep ~9 KiB less resident per connected
/// device (26.8 vs 36.1 KiB at 2,000 devices). Set before main(), so before any thread exists;
/// MALLOC_ARENA_MAX in the environment still wins.
[[maybe_unused]] const bool kMallocArenasLimited = [] {
    if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
    return true;
}();

/// What NervesHub answers when no credentials were presented.
constexpr const char* kNoAuthReason =
    "no certificate pair or shared secrets connection settings were provided";

/// Per-node admission of new TLS handshakes, in one-second windows.
class Admission {
  public:
    explicit Admission(int limit) : limit_(limit) {}

    bool admit() {
        if (limit_ <= 0) return true;
        const auto second = std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::steady_clock::now().time_since_epoch())
                                .count();
        const std::lock_guard lock{mutex_};
        if (second != window_) {
            if (refused_ > 0) {
                spdlog::warn(
                    "device handshake rate limit: refused {} connection(s) in the last "
                    "second (limit {}/s, OTAHUB_HANDSHAKE_RATE_LIMIT)",
                    refused_, limit_);
            }
            window_ = second;
            admitted_ = 0;
            refused_ = 0;
        }
        if (admitted_ < limit_) {
            ++admitted_;
            return true;
        }
        metrics::handshake("refused", "rate_limited");
        if (refused_++ == 0) {
            spdlog::warn(
                "device handshake rate limit of {}/s reached: refusing new connections "
                "for the rest of this second",
                limit_);
        }
        return false;
    }

  private:
    int limit_;
    std::mutex mutex_;
    std::int64_t window_ = 0;
    int admitted_ = 0;
    int refused_ = 0;
};

struct Target {
    std::string path;
    std::optional<std::string> vsn;
};

Target parse_target(std::string_view target) {
    Target out;
    const auto question = target.find('?');
    out.path = std::string(target.substr(0, question));
    if (question == std::string_view::npos) return out;
    std::string_view query = target.substr(question + 1);
    std::size_t start = 0;
    while (start <= query.size()) {
        auto end = query.find('&', start);
        if (end == std::string_view::npos) end = query.size();
        const auto pair = query.substr(start, end - start);
        const auto eq = pair.find('=');
        auto key = http::percent_decode(pair.substr(0, eq), true);
        if (key && *key == "vsn") {
            out.vsn = eq == std::string_view::npos
                          ? std::optional<std::string>("")
                          : http::percent_decode(pair.substr(eq + 1), true).value_or("?");
        }
        start = end + 1;
    }
    return out;
}

bool supported_vsn(const std::optional<std::string>& vsn) {
    // The V2 JSON serializer is `~> 2.0.0`; Slipstream sends 2.0.0, no vsn means 2.0.0.
    if (!vsn) return true;
    constexpr std::string_view kPrefix = "2.0.";
    const std::string_view v = *vsn;
    if (v.size() <= kPrefix.size() || v.size() > kPrefix.size() + 6 || !v.starts_with(kPrefix)) {
        return false;
    }
    return std::all_of(v.begin() + kPrefix.size(), v.end(),
                       [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

struct DeviceServer::State {
    asio::io_context& io;
    asio::thread_pool& workers;
    db::Database& db;
    net::ssl::context& tls;
    SessionRegistry& registry;
    Presence& presence;
    const DeviceHooks& hooks;
    DeviceServerOptions options;
    tcp::acceptor acceptor;
    Admission admission;
    db::ConnectionBatcher batcher;
    db::JoinBatcher joins;
    std::atomic<std::size_t> open{0};
    std::atomic<bool> stopped{false};

    State(asio::io_context& io_context, asio::thread_pool& pool, db::Database& database,
          net::ssl::context& context, SessionRegistry& sessions, Presence& node_presence,
          const DeviceHooks& device_hooks, DeviceServerOptions opts)
        : io(io_context),
          workers(pool),
          db(database),
          tls(context),
          registry(sessions),
          presence(node_presence),
          hooks(device_hooks),
          options(std::move(opts)),
          acceptor(io_context),
          admission(options.handshake_rate_limit),
          // connected_event without the device id, which the statement adds with the
          // connection's.
          batcher(database, options.node_id,
                  events::payload(events::kDeviceConnected, {{"node_id", options.node_id}}),
                  [&pool](std::function<void()> job) { asio::post(pool, std::move(job)); }),
          joins(database,
                [&pool](std::function<void()> job) { asio::post(pool, std::move(job)); }) {}
};

namespace {

// `stream` and `reason` must outlive the call (the caller awaits it at once). No std::string
// parameter: GCC 12 may destroy a temporary argument of a coroutine awaited in place twice.
/// RFC 6455 4.1: the key is 16 random bytes in base64 (24 characters ending in "==").
bool valid_websocket_key(std::string_view key) {
    if (key.size() != 24 || key.substr(22) != "==") return false;
    for (char c : key.substr(0, 22)) {
        const bool base64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                            (c >= '0' && c <= '9') || c == '+' || c == '/';
        if (!base64) return false;
    }
    // The 22nd character carries the last 2 bits of the 16th byte; its low 4 bits are zero.
    return std::string_view("AQgw").find(key[21]) != std::string_view::npos;
}

/// Cuts a connection off when a phase overruns: shuts the socket down (so pending and later I/O
/// fail; the descriptor stays ours until the socket is destroyed). All on the socket's strand.
class Deadline {
  public:
    Deadline(tcp::socket& socket, std::chrono::steady_clock::duration after)
        : armed_(std::make_shared<Flags>()), timer_(socket.get_executor(), after) {
        timer_.async_wait([flags = armed_, &socket](const boost::system::error_code& ec) {
            if (ec || !flags->armed) return;
            flags->fired = true;
            boost::system::error_code ignored;
            socket.shutdown(tcp::socket::shutdown_both, ignored);
            socket.cancel(ignored);
        });
    }
    ~Deadline() { disarm(); }
    Deadline(const Deadline&) = delete;
    Deadline& operator=(const Deadline&) = delete;

    /// Stops the clock (the socket may be destroyed afterwards).
    void disarm() {
        armed_->armed = false;
        timer_.cancel();
    }
    /// True once the deadline has cut the connection off.
    bool fired() const { return armed_->fired; }

  private:
    struct Flags {
        bool armed = true;
        bool fired = false;
    };
    std::shared_ptr<Flags> armed_;
    asio::steady_timer timer_;
};

net::awaitable<void> refuse_upgrade(TlsStream& stream, unsigned version, int status,
                                    std::string_view reason, bool auth_header) {
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), version};
    res.set(bhttp::field::server, "otahub");
    res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
    if (auth_header) res.set("nh-connection-error-reason", reason);
    res.keep_alive(false);
    res.body() = std::string(reason) + "\n";
    res.prepare_payload();
    auto [ec, n] = co_await bhttp::async_write(stream, res, kAsTuple);
    if (ec) co_return;
    Deadline deadline{stream.next_layer(), std::chrono::seconds(2)};
    auto [shutdown_ec, unused] = co_await stream.async_shutdown(kAsTuple);
    (void)shutdown_ec;
    (void)unused;
}

void log_handshake_failure(TlsStream& stream, const boost::system::error_code& ec,
                           const std::string& remote) {
    SSL* ssl = stream.native_handle();
    if (auto verified = pki::verification_result(ssl); verified && !verified->ok()) {
        return;  // logged by the verification hook
    }
    const bool no_certificate = ec.category() == asio::error::get_ssl_category() &&
                                ERR_GET_REASON(static_cast<unsigned long>(ec.value())) ==
                                    SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE;
    if (no_certificate) {
        spdlog::info("device refused at TLS: reason=no_certificate remote={}", remote);
        metrics::handshake("refused", "no_certificate");
    } else if (ec == beast::error::timeout) {
        spdlog::info("device refused at TLS: reason=handshake_timeout remote={}", remote);
        metrics::handshake("refused", "handshake_timeout");
    } else {
        spdlog::debug("device TLS handshake failed remote={}: {}", remote, ec.message());
    }
}

/// Runs one phase of a connection (handshake, then session) counted in `open_connections`.
void spawn_tracked(const std::shared_ptr<DeviceServer::State>& state,
                   const asio::any_io_executor& executor, net::awaitable<void> phase) {
    ++state->open;
    asio::co_spawn(executor, std::move(phase), [state](std::exception_ptr error) {
        --state->open;
        if (!error) return;
        try {
            std::rethrow_exception(error);
        } catch (const boost::system::system_error& e) {
            if (!net::is_benign_disconnect(e.code())) {
                spdlog::warn("device connection ended: {}", e.what());
            }
        } catch (const std::exception& e) {
            spdlog::warn("device connection ended: {}", e.what());
        }
    });
}

net::awaitable<void> handle_connection(tcp::socket socket,
                                       std::shared_ptr<DeviceServer::State> state) {
    boost::system::error_code ec;
    const auto endpoint = socket.remote_endpoint(ec);
    const std::string remote =
        ec ? "unknown" : endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
    if (!state->admission.admit()) {
        socket.close(ec);
        co_return;
    }
    socket.set_option(tcp::no_delay(true), ec);
    TlsStream stream{std::move(socket), state->tls.native_handle()};
    // One deadline for the TLS handshake and the upgrade request together.
    Deadline deadline{stream.next_layer(), state->options.handshake_timeout};
    auto [hs_ec, hs_unused] = co_await stream.async_handshake(kAsTuple);
    (void)hs_unused;
    if (hs_ec) {
        log_handshake_failure(stream, deadline.fired() ? beast::error::timeout : hs_ec, remote);
        co_return;
    }
    // What the verification found, taken off the SSL; then, for TLS 1.3, the record layer moves
    // out of OpenSSL and the SSL is freed (~20 KiB per connection; Tls13Records).
    const auto verified = pki::take_verification_result(stream.native_handle());
    const bool own_records = state->options.own_tls_records && stream.release_openssl();
    if (!own_records) net::forget_tls13_secrets(stream.native_handle());  // OpenSSL keeps it

    beast::flat_buffer buffer{state->options.max_upgrade_header_bytes};
    bhttp::request_parser<bhttp::empty_body> parser;
    parser.header_limit(state->options.max_upgrade_header_bytes);
    parser.body_limit(0);
    auto [read_ec, n] = co_await bhttp::async_read(stream, buffer, parser, kAsTuple);
    if (read_ec && deadline.fired()) read_ec = beast::error::timeout;
    if (read_ec) {
        if (read_ec == bhttp::error::header_limit) {
            spdlog::info("device upgrade refused: reason=request_header_too_large remote={}",
                         remote);
            metrics::handshake("refused", "request_header_too_large");
            co_await refuse_upgrade(stream, 11, 431, "request header too large", false);
        } else if (read_ec == beast::error::timeout) {
            spdlog::info("device upgrade refused: reason=upgrade_timeout remote={}", remote);
            metrics::handshake("refused", "upgrade_timeout");
        } else if (read_ec.category() ==
                   bhttp::make_error_code(bhttp::error::bad_method).category()) {
            spdlog::info("device upgrade refused: reason=malformed_request remote={}", remote);
            metrics::handshake("refused", "malformed_request");
            co_await refuse_upgrade(stream, 11, 400, "malformed request", false);
        }
        co_return;
    }
    auto request = parser.release();
    const auto target =
        parse_target(std::string_view(request.target().data(), request.target().size()));
    const unsigned version = request.version();

    std::string who = verified && verified->leaf ? "serial=" + verified->leaf->serial +
                                                       " cn=" + verified->leaf->common_name
                                                 : std::string("no certificate");
    if (target.path != "/socket/websocket" && target.path != "/device-socket/websocket") {
        spdlog::info("device upgrade refused: status=404 reason=unknown_path {} remote={}", who,
                     remote);
        metrics::handshake("refused", "unknown_path");
        co_await refuse_upgrade(stream, version, 404, "not found", false);
        co_return;
    }
    if (!supported_vsn(target.vsn)) {
        spdlog::info(
            "device upgrade refused: status=400 reason=unsupported_vsn vsn={} {} "
            "remote={}",
            target.vsn->substr(0, 32), who, remote);
        metrics::handshake("refused", "unsupported_vsn");
        co_await refuse_upgrade(stream, version, 400, "unsupported serializer version", false);
        co_return;
    }
    if (!websocket::is_upgrade(request)) {
        spdlog::info(
            "device upgrade refused: status=400 reason=not_a_websocket_upgrade {} "
            "remote={}",
            who, remote);
        metrics::handshake("refused", "not_a_websocket_upgrade");
        co_await refuse_upgrade(stream, version, 400, "expected a websocket upgrade", false);
        co_return;
    }
    if (const auto key = request[bhttp::field::sec_websocket_key];
        !key.empty() && !valid_websocket_key(std::string_view(key.data(), key.size()))) {
        spdlog::info("device upgrade refused: status=400 reason=bad_websocket_key {} remote={}",
                     who, remote);
        metrics::handshake("refused", "bad_websocket_key");
        co_await refuse_upgrade(stream, version, 400, "invalid Sec-WebSocket-Key", false);
        co_return;
    }
    if (!verified || !verified->ok() || !verified->leaf || !verified->ca) {
        spdlog::info("device upgrade refused: status=401 reason=no_auth remote={}", remote);
        metrics::handshake("refused", "no_auth");
        co_await refuse_upgrade(stream, version, 401, kNoAuthReason, true);
        co_return;
    }

    AuthRequest auth;
    auth.leaf = *verified->leaf;
    auth.ca = *verified->ca;
    auth.node_id = state->options.node_id;
    auth.remote = remote;
    AuthResult result =
        co_await authenticate_device(state->db, state->batcher, state->workers, auth);
    if (!result.ok) {
        spdlog::info("device upgrade refused: status={} reason=\"{}\" {} remote={}", result.status,
                     result.reason, who, remote);
        metrics::handshake("refused", "http_" + std::to_string(result.status));
        co_await refuse_upgrade(stream, version, result.status, result.reason, true);
        co_return;
    }

    SessionInfo info;
    info.device_id = result.device_id;
    info.org_id = result.org_id;
    info.product_id = result.product_id;
    info.identifier = result.identifier;
    info.connection_id = result.connection_id;
    info.fingerprint = auth.leaf.fingerprint;
    info.serial = auth.leaf.serial;
    info.ca_id = auth.ca.id;
    info.remote = remote;

    deadline.disarm();
    WsStream ws{std::move(stream)};
    websocket::stream_base::timeout timeouts{};
    timeouts.handshake_timeout = state->options.handshake_timeout;
    timeouts.idle_timeout = state->options.idle_timeout;
    timeouts.keep_alive_pings = false;
    ws.set_option(timeouts);
    ws.read_message_max(state->options.max_message_bytes);
    ws.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(bhttp::field::server, "otahub"); }));
    auto [accept_ec] = co_await ws.async_accept(request, kAsTuple);
    if (accept_ec) {
        spdlog::info("device upgrade refused: reason=\"{}\" {} remote={}", accept_ec.message(), who,
                     remote);
        metrics::handshake("refused", "websocket_accept");
        state->presence.connection_closed(info.connection_id, accept_ec.message());
        co_return;
    }
    spdlog::info("device={} connected {} connection={} remote={}{}", info.identifier,
                 "serial=" + info.serial, info.connection_id, remote,
                 result.provisioned ? " (provisioned just in time)" : "");
    metrics::handshake("accepted", "ok");
    metrics::tls_records(own_records ? "hub" : "openssl");
    if (result.provisioned) metrics::jitp_created();
    const asio::any_io_executor executor = ws.get_executor();
    auto session =
        std::make_shared<WsSession>(std::move(ws), std::move(info),
                                    SessionDeps{state->workers, state->db, state->joins,
                                                state->registry, state->presence, state->hooks});
    // The session runs as its own coroutine so this frame (upgrade request, parser, buffers,
    // verification result: several KiB) is freed now rather than held for the session's life.
    spawn_tracked(state, executor, WsSession::run(std::move(session)));
}

net::awaitable<void> accept_loop(std::shared_ptr<DeviceServer::State> state) {
    while (!state->stopped) {
        auto [ec, socket] =
            co_await state->acceptor.async_accept(asio::make_strand(state->io), kAsTuple);
        if (ec) {
            if (ec == asio::error::operation_aborted || state->stopped) break;
            spdlog::warn("device accept failed: {}", ec.message());
            if (ec == asio::error::no_descriptors) {
                // Out of file descriptors: back off instead of spinning.
                asio::steady_timer pause{state->io, std::chrono::milliseconds(100)};
                co_await pause.async_wait(kAsTuple);
            }
            continue;
        }
        auto executor = socket.get_executor();
        spawn_tracked(state, executor, handle_connection(std::move(socket), state));
    }
}

}  // namespace

net::ssl::context make_device_tls_context(const std::string& cert_chain_file,
                                          const std::string& key_file, pki::TrustStore& trust,
                                          const std::string& ticket_key) {
    auto ctx = net::make_server_context(cert_chain_file, key_file);
    pki::ClientVerificationOptions options;
    options.require_certificate = true;
    options.on_refusal = [](const pki::Refusal& refusal) {
        spdlog::info("device refused at TLS: reason={} serial={} cn={} issuer=\"{}\"",
                     pki::to_string(refusal.reason), refusal.serial, refusal.common_name,
                     refusal.issuer);
        metrics::handshake("refused", pki::to_string(refusal.reason));
    };
    pki::install_client_verification(ctx.native_handle(), trust.provider(), std::move(options));
    net::enable_session_tickets(ctx.native_handle(), ticket_key, "otahub-device");
    net::remember_tls13_secrets(ctx.native_handle());
    return ctx;
}

DeviceServer::DeviceServer(asio::io_context& io, asio::thread_pool& workers, db::Database& db,
                           net::ssl::context& tls, SessionRegistry& registry, Presence& presence,
                           const DeviceHooks& hooks, DeviceServerOptions options)
    : state_(std::make_shared<State>(io, workers, db, tls, registry, presence, hooks,
                                     std::move(options))) {}

DeviceServer::~DeviceServer() { stop(); }

std::uint16_t DeviceServer::listen(const ListenAddress& address) {
    return net::open_listener(state_->acceptor, address, state_->options.reuse_port);
}

void DeviceServer::start() {
    asio::co_spawn(state_->acceptor.get_executor(), accept_loop(state_), asio::detached);
}

void DeviceServer::stop() {
    if (state_->stopped.exchange(true)) return;
    asio::post(state_->acceptor.get_executor(), [state = state_] {
        boost::system::error_code ec;
        state->acceptor.close(ec);
    });
}

std::size_t DeviceServer::open_connections() const { return state_->open; }

}  // namespace otahub::device
