#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>

#include "db/database.hpp"
#include "db/repositories/devices_repository.hpp"

namespace otahub::db {

/// Decides the device connections that arrive together in one statement
/// (devices::check_open_or_provision): in a storm of first connections or reconnects PostgreSQL
/// then parses, plans, locks and commits once per batch instead of once per device. There is no
/// timer and no thread of its own: the first caller finding no batch in flight runs one with
/// everything queued (leader), the others wait for it; a connection alone is decided at once.
/// Attempts that share a fingerprint, or an organization with an identifier or a public key,
/// go to separate batches (the statement matches its rows to attempts by them).
class ConnectionBatcher {
  public:
    /// Connections are opened on node `node_id`; a known certificate's NOTIFYs `event` (a JSON
    /// object; the statement adds `connection_id` and `device_id`). `max_batch` attempts at most
    /// per statement.
    ConnectionBatcher(Database& db, std::string node_id, std::string event,
                      std::size_t max_batch = 64);
    ConnectionBatcher(const ConnectionBatcher&) = delete;
    ConnectionBatcher& operator=(const ConnectionBatcher&) = delete;

    /// The decision for `attempt`. Blocking: call on the worker pool. Throws what the statement
    /// throws for it: Unavailable for the whole batch; any other failure of a batch is
    /// retried attempt by attempt, so one attempt's fault fails only that attempt.
    devices::CheckOrProvision decide(const devices::ConnectionAttempt& attempt);

    /// Statements run and attempts decided so far (metrics, tests).
    std::size_t statements() const;
    std::size_t attempts() const;

  private:
    struct Slot;
    std::vector<Slot*> take_locked();
    void run(const std::vector<Slot*>& batch);

    Database& db_;
    const std::string node_id_;
    const std::string event_;
    const std::size_t max_batch_;
    mutable std::mutex mutex_;
    std::condition_variable done_;
    std::deque<Slot*> queue_;
    bool leading_ = false;
    std::size_t statements_ = 0;
    std::size_t attempts_ = 0;
};

}  // namespace otahub::db
