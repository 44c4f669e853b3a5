#pragma once

#include <chrono>
#include <list>
#include <memory>
#include <optional>
#include <string>

#include "db/database.hpp"
#include "db/join_batcher.hpp"
#include "server/device/device_channel.hpp"
#include "server/device/registry.hpp"
#include "server/device/session_info.hpp"
#include "server/net/asio.hpp"
#include "server/net/tls.hpp"

namespace otahub::device {

class Presence;

/// The TLS stream under a device websocket (OpenSSL on the socket, no idle buffers).
using TlsStream = net::TlsSocket;
/// A device websocket.
using WsStream = net::beast::websocket::stream<TlsStream>;

/// What sessions share, owned by the device server.
struct SessionDeps {
    net::asio::thread_pool& workers;
    db::Database& db;
    /// Stores joins (devices::record_joins) without holding a worker thread per join.
    db::JoinBatcher& joins;
    SessionRegistry& registry;
    Presence& presence;
    const DeviceHooks& hooks;
};

/// One accepted device websocket speaking Phoenix V2 JSON on topics `phoenix` and `device`.
/// Everything runs on the socket's strand; `close` and `push` may be called from any thread.
class WsSession final : public SessionHandle, public std::enable_shared_from_this<WsSession> {
  public:
    /// Takes an accepted websocket (options already set).
    WsSession(WsStream ws, SessionInfo info, SessionDeps deps);

    /// Registers the session, serves it until it ends, then closes its connection row.
    /// Spawn on the socket's executor.
    static net::awaitable<void> run(std::shared_ptr<WsSession> self);

    const SessionInfo& info() const override { return info_; }
    void close(std::uint16_t code, std::string reason) override;
    void push(std::string event, nlohmann::json payload) override;
    void push_frame(std::shared_ptr<const std::string> frame, std::string event) override;

  private:
    net::awaitable<void> read_loop();
    /// Runs a step's statement (`join` or `work`); false when it failed.
    net::awaitable<bool> run_step(ChannelStep& step, const phoenix::Message& message);
    static net::awaitable<void> write_loop(std::shared_ptr<WsSession> self);
    void enqueue(std::string text);
    void request_close(std::uint16_t code, std::string reason);

    WsStream ws_;
    SessionInfo info_;
    SessionDeps deps_;
    DeviceChannel channel_;
    net::asio::steady_timer wake_;
    // A list, not a deque: an empty std::deque still holds ~600 bytes (its map and first node),
    // and the outbox of an idle session is empty.
    std::list<std::string> outbox_;
    std::size_t outbox_bytes_ = 0;
    std::optional<net::beast::websocket::close_reason> pending_close_;
    bool closing_ = false;
    bool reader_done_ = false;
    std::string end_reason_;
    std::chrono::steady_clock::time_point last_seen_mark_;
};

}  // namespace otahub::device
