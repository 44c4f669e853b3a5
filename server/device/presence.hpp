#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_set>

#include "db/database.hpp"
#include "db/repositories/devices_repository.hpp"
#include "server/common/bounded_queue.hpp"
#include "server/net/asio.hpp"

namespace otahub::device {

/// How often a live session's last_seen_at reaches the database at most.
inline constexpr auto kLastSeenWriteInterval = std::chrono::minutes(5);
/// How often the node heartbeat is written (dead after 30 s without one; see the migration).
inline constexpr auto kNodeHeartbeatInterval = std::chrono::seconds(5);

/// Most session ends kept for a database that does not answer; past it the oldest are dropped
/// (the node's shutdown, or another node's sweep after this one dies, still closes their rows).
inline constexpr std::size_t kMaxPendingCloses = 100'000;
/// Most session ends written by one statement.
inline constexpr std::size_t kCloseBatch = 1'000;
/// Longest disconnection reason stored.
inline constexpr std::size_t kMaxCloseReasonBytes = 500;

/// This node's presence in the cluster: its heartbeat row, batched last_seen writes, batched
/// session ends, and the sweep that marks sessions of dead nodes disconnected. Thread-safe.
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
    /// Records that session `connection_id` ended, without waiting: ends that arrive together
    /// are written by one statement on the worker pool, one statement at a time. When the
    /// database does not answer they are kept and written once it does (tried again with each
    /// heartbeat), with the time they happened.
    void connection_closed(std::int64_t connection_id, std::string reason);
    /// Session ends not yet written.
    std::size_t pending_closes() const;
    /// Writes the queued session ends now (blocking); false when the database refused them
    /// (they stay queued).
    bool write_closes();
    /// This node's id.
    const std::string& node_id() const { return node_id_; }

  private:
    net::awaitable<void> loop();
    void tick(std::uint64_t n);
    /// Starts a writer on the worker pool unless one runs; `retry`: also after a failure.
    void start_closing(bool retry);
    /// The writer: one statement per batch until the queue is empty or the database fails.
    void drain_closes();
    /// Writes one batch taken from the queue; puts it back and returns false on failure.
    bool write_close_batch();

    net::asio::io_context& io_;
    net::asio::thread_pool& workers_;
    db::Database& db_;
    std::string node_id_;
    net::asio::steady_timer timer_;
    std::atomic<bool> stopped_{false};
    mutable std::mutex mutex_;
    std::unordered_set<std::int64_t> seen_;
    BoundedQueue<db::devices::ConnectionClose> closes_{kMaxPendingCloses};
    bool closing_ = false;       // a writer is queued or running on the worker pool
    bool close_failed_ = false;  // the last write failed: wait for the next heartbeat
};

}  // namespace otahub::device
