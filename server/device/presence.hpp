#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_set>

#include "db/database.hpp"
#include "server/net/asio.hpp"

namespace otahub::device {

/// How often a live session's last_seen_at reaches the database at most.
inline constexpr auto kLastSeenWriteInterval = std::chrono::minutes(5);
/// How often the node heartbeat is written (dead after 30 s without one; see the migration).
inline constexpr auto kNodeHeartbeatInterval = std::chrono::seconds(5);

/// This node's presence in the cluster: its heartbeat row, batched last_seen writes, and the
/// sweep that marks sessions of dead nodes disconnected. Thread-safe.
class Presence {
  public:
    Presence(net::asio::io_context& io, net::asio::thread_pool& workers, db::Database& db,
             std::string node_id);

    /// At start-up (blocking): marks this node's stale sessions disconnected (a restart with the
    /// same node id), writes the heartbeat and sweeps dead nodes. Throws on database errors.
    void start_blocking();
    /// Starts the periodic heartbeat / flush / sweep loop on `io`.
    void start();
    /// Stops the loop.
    void stop();
    /// At shutdown (blocking, best effort): flushes last_seen and disconnects this node's
    /// sessions in the database.
    void shutdown_blocking();
    /// Queues a last_seen_at write for the device (flushed in one statement every 10 s).
    void mark_seen(std::int64_t device_id);
    /// Writes queued last_seen_at values now (blocking).
    void flush();
    /// This node's id.
    const std::string& node_id() const { return node_id_; }

  private:
    net::awaitable<void> loop();
    void tick(std::uint64_t n);

    net::asio::io_context& io_;
    net::asio::thread_pool& workers_;
    db::Database& db_;
    std::string node_id_;
    net::asio::steady_timer timer_;
    std::atomic<bool> stopped_{false};
    std::mutex mutex_;
    std::unordered_set<std::int64_t> seen_;
};

}  // namespace otahub::device
