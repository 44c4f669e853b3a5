#include "server/sim/sim_device.hpp"

#include <openssl/ssl.h>

#include <algorithm>
#include <deque>
#include <utility>

#include "server/device/phoenix.hpp"
#include "server/sim/firmware_download.hpp"
#include "server/sim/tls_socket.hpp"

namespace otahub::sim {

using namespace net;
using namespace asio::experimental::awaitable_operators;
namespace phx = device::phoenix;
namespace websocket = beast::websocket;

namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(15);
constexpr std::string_view kDeviceTopic = "device";
constexpr std::string_view kJoinRef = "1";
/// A websocket read buffer larger than this is released after the message (memory per device).
constexpr std::size_t kKeepBufferBytes = 4096;

std::string describe(const boost::system::error_code& ec) {
    if (ec == websocket::error::closed) return "closed by server";
    return ec.message();
}

}  // namespace

/// One websocket connection of a device, alive for one session. Used on the device's strand.
struct Connection {
    Connection(const asio::any_io_executor& executor, ssl::context& tls)
        : ws(executor, tls.native_handle()), signal(executor) {}

    /// Queues a frame for the writer.
    void send(const phx::Message& message) {
        if (closing) return;
        outbox.push_back(phx::encode(message));
        signal.cancel();
    }
    /// Queues `[join_ref, ref, topic, event, payload]` with the next ref.
    void push(std::optional<std::string> join_ref, std::string_view topic, std::string event,
              nlohmann::json payload) {
        send(phx::Message{std::move(join_ref), std::to_string(next_ref++), std::string(topic),
                          std::move(event), std::move(payload)});
    }
    /// Asks the writer to flush and send a websocket close.
    void close() {
        closing = true;
        signal.cancel();
    }
    /// Drops the TCP connection, failing every pending operation.
    void abort() {
        boost::system::error_code ec;
        beast::get_lowest_layer(ws).close(ec);
    }

    websocket::stream<TlsSocket> ws;
    beast::flat_buffer buffer;
    std::deque<std::string> outbox;
    asio::steady_timer signal;
    bool closing = false;
    std::uint64_t next_ref = 1;
    std::optional<std::string> pending_heartbeat;
    std::chrono::steady_clock::time_point heartbeat_sent;
    std::string reason;
};

Pacer::Pacer(double per_second)
    : step_(per_second > 0 ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::duration<double>(1.0 / per_second))
                           : std::chrono::steady_clock::duration::zero()) {}

std::chrono::steady_clock::time_point Pacer::next_slot() {
    const std::lock_guard lock{mutex_};
    const auto now = std::chrono::steady_clock::now();
    next_ = std::max(next_, now);
    const auto slot = next_;
    next_ += step_;
    return slot;
}

SimDevice::SimDevice(Shared& shared, const Identity& identity, std::size_t index,
                     asio::any_io_executor executor)
    : shared_(shared),
      identity_(identity),
      index_(index),
      strand_(asio::make_strand(executor)),
      timer_(strand_),
      random_(static_cast<std::minstd_rand::result_type>(std::random_device{}() + index)),
      fw_uuid_(shared.options.initial_uuid),
      fw_version_(shared.options.initial_version) {}

void SimDevice::start(std::function<void()> done) {
    auto self = shared_from_this();
    asio::co_spawn(strand_, run(), [self, done = std::move(done)](std::exception_ptr error) {
        if (error) {
            try {
                std::rethrow_exception(error);
            } catch (const std::exception& e) {
                self->shared_.reporter.emit("error", self->identity_.id, {{"reason", e.what()}});
            }
        }
        done();
    });
}

void SimDevice::stop() {
    asio::post(strand_, [self = shared_from_this()] {
        self->timer_.cancel();
        if (self->current_) self->current_->close();
    });
}

std::chrono::milliseconds SimDevice::jitter() {
    const auto max = shared_.options.reconnect_jitter.count();
    if (max <= 0) return std::chrono::milliseconds(0);
    return std::chrono::milliseconds(std::uniform_int_distribution<long long>(0, max)(random_));
}

awaitable<void> SimDevice::sleep(std::chrono::steady_clock::duration delay) {
    if (delay <= std::chrono::steady_clock::duration::zero()) co_return;
    timer_.expires_after(delay);
    co_await timer_.async_wait(kAsTuple);
}

awaitable<void> SimDevice::run() {
    int failures = 0;
    bool first = true;
    while (!shared_.stopping) {
        if (!first) {
            std::chrono::steady_clock::duration delay = jitter();
            if (!reconnect_soon_) {
                // NervesHubLink's backoff: 1 s doubling to 60 s, up to 50% shorter at random.
                const auto base = std::chrono::milliseconds(1000LL << std::min(failures, 6));
                const auto capped =
                    std::min<std::chrono::milliseconds>(base, std::chrono::seconds(60));
                const double factor = std::uniform_real_distribution<double>(0.5, 1.0)(random_);
                delay += std::chrono::duration_cast<std::chrono::milliseconds>(capped * factor);
            }
            co_await sleep(delay);
            if (shared_.stopping) break;
        }
        first = false;
        reconnect_soon_ = false;
        timer_.expires_at(shared_.pacer.next_slot());
        co_await timer_.async_wait(kAsTuple);
        if (shared_.stopping) break;

        auto conn = std::make_shared<Connection>(strand_, shared_.device_tls);
        current_ = conn;
        const bool joined = co_await session(conn);
        current_.reset();
        failures = joined ? 0 : failures + 1;
    }
}

awaitable<void> SimDevice::connect(Connection& conn) {
    auto& tls = conn.ws.next_layer();
    auto& socket = tls.next_layer();
    const auto& options = shared_.options;
    asio::steady_timer deadline{strand_};
    boost::system::error_code last = asio::error::host_not_found;
    const asio::ip::address* source =
        shared_.sources.empty() ? nullptr : &shared_.sources[index_ % shared_.sources.size()];
    for (const auto& endpoint : shared_.endpoints) {
        boost::system::error_code ec;
        if (socket.is_open()) socket.close(ec);
        socket.open(endpoint.protocol(), ec);
        if (!ec && source != nullptr) {
            if (source->is_v4() != endpoint.address().is_v4()) continue;
            socket.bind(tcp::endpoint{*source, 0}, ec);
        }
        if (ec) {
            last = ec;
            continue;
        }
        deadline.expires_after(kConnectTimeout);
        auto done =
            co_await (socket.async_connect(endpoint, kAsTuple) || deadline.async_wait(kAsTuple));
        ec = done.index() == 0 ? std::get<0>(std::get<0>(done)) : asio::error::timed_out;
        if (!ec) {
            last = {};
            break;
        }
        last = ec;
    }
    if (last) throw boost::system::system_error(last, "connect");

    SSL* ssl = tls.native_handle();
    if (!use_identity(ssl, identity_))
        throw std::runtime_error("cannot use the client certificate");
    if (net::is_ip_literal(options.host)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), options.host.c_str());
    } else {
        SSL_set_tlsext_host_name(ssl, options.host.c_str());
        SSL_set1_host(ssl, options.host.c_str());
    }
    if (!tls.attach()) throw std::runtime_error("cannot start TLS on the socket");
    deadline.expires_after(kConnectTimeout);
    auto handshake = co_await (tls.async_handshake(kAsTuple) || deadline.async_wait(kAsTuple));
    if (handshake.index() == 1) throw boost::system::system_error(asio::error::timed_out, "TLS");
    if (auto [ec, n] = std::get<0>(handshake); ec) {
        (void)n;
        throw boost::system::system_error(ec, "TLS handshake");
    }

    websocket::stream_base::timeout timeout{};
    timeout.handshake_timeout = kConnectTimeout;
    // The hub answers every heartbeat, so silence for two intervals means a dead peer.
    timeout.idle_timeout = options.heartbeat * 2 + std::chrono::seconds(5);
    timeout.keep_alive_pings = false;
    conn.ws.set_option(timeout);
    conn.ws.set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
        req.set(beast::http::field::user_agent, "otahub-sim");
    }));
    conn.ws.read_message_max(1 << 20);
    websocket::response_type response;
    auto [ec] = co_await conn.ws.async_handshake(response,
                                                 options.host + ":" + std::to_string(options.port),
                                                 "/socket/websocket?vsn=2.0.0", kAsTuple);
    if (ec == websocket::error::upgrade_declined) {
        std::string why = "upgrade refused: HTTP " + std::to_string(response.result_int());
        if (auto reason = response.find("nh-connection-error-reason"); reason != response.end()) {
            why += " (" + std::string(reason->value().substr(0, 200)) + ")";
        } else if (!response.body().empty()) {
            why += " (" + response.body().substr(0, 200) + ")";
        }
        throw std::runtime_error(why);
    }
    if (ec) throw boost::system::system_error(ec, "websocket handshake");
    conn.ws.text(true);
}

awaitable<bool> SimDevice::session(std::shared_ptr<Connection> conn) {
    auto& reporter = shared_.reporter;
    auto& stats = reporter.stats;
    bool joined = false;
    end_reason_.clear();
    try {
        co_await connect(*conn);
        const phx::Message join{std::string(kJoinRef), std::string(kJoinRef),
                                std::string(kDeviceTopic), std::string(phx::kPhxJoin),
                                join_payload()};
        conn->next_ref = 2;
        co_await conn->ws.async_write(asio::buffer(phx::encode(join)), use_awaitable);
        for (;;) {
            conn->buffer.clear();
            co_await conn->ws.async_read(conn->buffer, use_awaitable);
            auto message = phx::decode(beast::buffers_to_string(conn->buffer.data()));
            if (!message || message->event != phx::kPhxReply || message->ref != join.ref) continue;
            const auto& payload = message->payload;
            if (!payload.is_object() || payload.value("status", "") != "ok") {
                auto response =
                    payload.is_object() ? payload.value("response", nlohmann::json()) : payload;
                conn->reason =
                    "join refused: " +
                    response.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
                conn->close();
                co_await conn->ws.async_close(websocket::close_code::normal, kAsTuple);
            }
            break;
        }
        if (!conn->reason.empty()) throw std::runtime_error(conn->reason);
        joined = true;
        stats.connects++;
        stats.connected++;
        reporter.emit(
            "joined", identity_.id,
            {{"uuid", fw_uuid_}, {"version", fw_version_}, {"port", shared_.options.port}});
        co_await (reader(conn) || writer(conn) || heartbeat(conn));
    } catch (const boost::system::system_error& error) {
        conn->reason =
            error.code() == websocket::error::closed ? describe(error.code()) : error.what();
    } catch (const std::exception& error) {
        conn->reason = error.what();
    }
    conn->abort();
    if (joined) {
        stats.connected--;
        stats.disconnects++;
        reporter.emit("disconnected", identity_.id, {{"reason", conn->reason}});
    } else {
        stats.connect_failures++;
        reporter.emit("connect_error", identity_.id, {{"reason", conn->reason}});
    }
    co_return joined;
}

awaitable<void> SimDevice::reader(std::shared_ptr<Connection> conn) {
    for (;;) {
        conn->buffer.clear();
        auto [ec, bytes] = co_await conn->ws.async_read(conn->buffer, kAsTuple);
        (void)bytes;
        if (ec) {
            if (conn->reason.empty()) {
                conn->reason = !conn->closing        ? describe(ec)
                               : end_reason_.empty() ? std::string("closed")
                                                     : end_reason_;
            }
            co_return;
        }
        on_message(*conn, beast::buffers_to_string(conn->buffer.data()));
        if (conn->buffer.capacity() > kKeepBufferBytes) conn->buffer.shrink_to_fit();
    }
}

awaitable<void> SimDevice::writer(std::shared_ptr<Connection> conn) {
    for (;;) {
        if (!conn->outbox.empty()) {
            std::string frame = std::move(conn->outbox.front());
            conn->outbox.pop_front();
            auto [ec, bytes] = co_await conn->ws.async_write(asio::buffer(frame), kAsTuple);
            (void)bytes;
            if (ec) {
                if (conn->reason.empty()) conn->reason = describe(ec);
                co_return;
            }
            continue;
        }
        if (conn->closing) {
            co_await conn->ws.async_close(websocket::close_code::normal, kAsTuple);
            if (conn->reason.empty()) conn->reason = end_reason_.empty() ? "closed" : end_reason_;
            co_return;
        }
        conn->signal.expires_at(std::chrono::steady_clock::time_point::max());
        co_await conn->signal.async_wait(kAsTuple);
    }
}

awaitable<void> SimDevice::heartbeat(std::shared_ptr<Connection> conn) {
    asio::steady_timer timer{strand_};
    for (;;) {
        timer.expires_after(shared_.options.heartbeat);
        auto [ec] = co_await timer.async_wait(kAsTuple);
        if (ec) co_return;
        if (conn->pending_heartbeat) {
            // As the Phoenix client does: an unanswered heartbeat ends the connection.
            if (conn->reason.empty()) conn->reason = "heartbeat timeout";
            co_return;
        }
        conn->pending_heartbeat = std::to_string(conn->next_ref);
        conn->heartbeat_sent = std::chrono::steady_clock::now();
        conn->push(std::nullopt, phx::kPhoenixTopic, std::string(phx::kHeartbeat),
                   nlohmann::json::object());
    }
}

void SimDevice::on_message(Connection& conn, std::string_view text) {
    auto decoded = phx::decode(text);
    if (!decoded) {
        shared_.reporter.emit("bad_frame", identity_.id, {{"reason", decoded.error().reason}});
        return;
    }
    auto& message = decoded.value();
    if (message.topic == phx::kPhoenixTopic) {
        if (message.event == phx::kPhxReply && message.ref == conn.pending_heartbeat) {
            conn.pending_heartbeat.reset();
            shared_.reporter.stats.heartbeats++;
            const auto rtt = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - conn.heartbeat_sent);
            shared_.reporter.emit("heartbeat", identity_.id, {{"rtt_ms", rtt.count()}});
        }
        return;
    }
    if (message.topic != kDeviceTopic) return;
    if (message.event == phx::kPhxError || message.event == phx::kPhxClose) {
        end_reason_ = "channel " + message.event;
        conn.close();
        return;
    }
    if (message.event == "update") {
        if (updating_) {
            shared_.reporter.emit("update_ignored", identity_.id,
                                  {{"reason", "an update is in progress"}});
            return;
        }
        updating_ = true;
        asio::co_spawn(strand_, update(std::move(message.payload)),
                       [self = shared_from_this()](std::exception_ptr error) {
                           self->updating_ = false;
                           if (!error) return;
                           try {
                               std::rethrow_exception(error);
                           } catch (const std::exception& e) {
                               self->shared_.reporter.emit("error", self->identity_.id,
                                                           {{"reason", e.what()}});
                           }
                       });
        return;
    }
    if (message.event == "reboot") {
        conn.push(std::string(kJoinRef), kDeviceTopic, "rebooting", nlohmann::json::object());
        shared_.reporter.emit("reboot", identity_.id);
        end_reason_ = "reboot";
        reconnect_soon_ = true;
        conn.close();
        return;
    }
    shared_.reporter.emit("push", identity_.id, {{"push", message.event}});
}

void SimDevice::send_device(std::string event, nlohmann::json payload) {
    if (current_ && !current_->closing) {
        current_->push(std::string(kJoinRef), kDeviceTopic, std::move(event), std::move(payload));
    }
}

awaitable<void> SimDevice::update(nlohmann::json payload) {
    auto self = shared_from_this();  // the update outlives the session that received it
    auto& reporter = shared_.reporter;
    auto& stats = reporter.stats;
    stats.updates_received++;
    const auto meta = payload.is_object() ? payload.value("firmware_meta", nlohmann::json::object())
                                          : nlohmann::json::object();
    auto text = [](const nlohmann::json& object, const char* key) {
        auto it = object.is_object() ? object.find(key) : object.end();
        return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    DownloadRequest request;
    request.url = text(payload, "firmware_url");
    if (auto size = payload.is_object() ? payload.find("size") : payload.end();
        size != payload.end() && size->is_number_unsigned()) {
        request.size = size->get<std::uint64_t>();
    }
    request.checksum = text(payload, "checksum");
    request.interrupt_once = shared_.options.interrupt_downloads;
    if (!shared_.sources.empty()) request.source = shared_.sources[index_ % shared_.sources.size()];
    const std::string new_uuid = text(meta, "uuid");
    const std::string new_version = text(meta, "version");
    reporter.emit(
        "update", identity_.id,
        {{"uuid", new_uuid},
         {"version", new_version},
         {"size", request.size},
         {"deployment_id", payload.is_object() ? payload.value("deployment_id", nlohmann::json())
                                               : nlohmann::json()}});
    send_device("status_update", {{"status", "received"}});
    downloading_uuid_ = new_uuid;

    int last_decile = 0;
    auto progress = [this, &last_decile](std::uint64_t done, std::uint64_t total) {
        if (total == 0) return;
        const int percent = static_cast<int>(std::min<std::uint64_t>(100, done * 100 / total));
        if (percent / 10 <= last_decile) return;
        last_decile = percent / 10;
        send_device("fwup_progress", {{"stage", "downloading"}, {"value", percent}});
        shared_.reporter.emit("progress", identity_.id, {{"value", percent}});
    };
    DownloadResult result = co_await download_firmware(request, shared_.download_tls, progress);
    downloading_uuid_.reset();
    stats.bytes_downloaded += result.bytes;
    reporter.emit("downloaded", identity_.id,
                  {{"ok", result.ok},
                   {"bytes", result.bytes},
                   {"sha256", result.sha256},
                   {"attempts", result.attempts},
                   {"resumed", result.resumed},
                   {"error", result.error}});

    std::string failure;
    if (!result.ok) {
        failure = "download failed: " + result.error;
    } else if (new_uuid.empty()) {
        failure = "update without firmware_meta.uuid";
    } else if (shared_.options.fail_rate > 0 && std::uniform_real_distribution<double>(0.0, 1.0)(
                                                    random_) < shared_.options.fail_rate) {
        failure = "simulated";
    }
    if (!failure.empty()) {
        stats.updates_failed++;
        send_device("status_update", {{"status", "failed"}, {"reason", failure}});
        reporter.emit("update_failed", identity_.id, {{"uuid", new_uuid}, {"reason", failure}});
        co_return;
    }
    // What NervesHubLink sends once fwup is done, then the device reboots into the new firmware.
    send_device("fwup_progress", {{"stage", "updating"}, {"value", 100}});
    send_device("status_update", {{"status", "completed"}});
    stats.updates_succeeded++;
    reporter.emit("update_succeeded", identity_.id, {{"uuid", new_uuid}, {"version", new_version}});
    fw_uuid_ = new_uuid;
    fw_version_ = new_version;
    end_reason_ = "rebooting into " + new_version;
    reconnect_soon_ = true;
    if (current_) current_->close();
}

nlohmann::json SimDevice::join_payload() const {
    const auto& o = shared_.options;
    return {{"nerves_fw_uuid", fw_uuid_},
            {"nerves_fw_version", fw_version_},
            {"nerves_fw_product", o.product},
            {"nerves_fw_architecture", o.architecture},
            {"nerves_fw_platform", o.platform},
            {"nerves_fw_author", "otahub-sim"},
            {"nerves_fw_description", "simulated device"},
            {"nerves_fw_vcs_identifier", ""},
            {"nerves_fw_misc", ""},
            {"nerves_fw_application_part0_devpath", "/dev/mmcblk0p3"},
            {"fwup_version", "1.13.0"},
            {"device_api_version", "2.3.0"},
            {"console_version", "2.0.0"},
            {"fwup_public_keys", "on_connect"},
            {"archive_public_keys", "on_connect"},
            {"currently_downloading_uuid",
             downloading_uuid_ ? nlohmann::json(*downloading_uuid_) : nlohmann::json()},
            {"meta", {{"firmware_auto_revert_detected", false}, {"firmware_validated", true}}}};
}

}  // namespace otahub::sim
