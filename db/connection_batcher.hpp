#pragma once

#include <cstddef>
#include <string>

#include "db/repositories/devices_repository.hpp"
#include "db/statement_batcher.hpp"

namespace otahub::db {

/// Decides the device connections that arrive together in one statement
/// (devices::check_open_or_provision; see StatementBatcher). Attempts that share a fingerprint,
/// or an organization with an identifier or a public key, go to separate batches.
class ConnectionBatcher
    : public StatementBatcher<devices::ConnectionAttempt, devices::CheckOrProvision> {
  public:
    /// Connections are opened on node `node_id`; a known certificate's NOTIFYs `event` (a JSON
    /// object; the statement adds `connection_id` and `device_id`). Statements run through
    /// `post` (the worker pool); `max_batch` attempts at most per statement.
    ConnectionBatcher(Database& db, std::string node_id, std::string event, Post post,
                      std::size_t max_batch = 64);

    std::size_t attempts() const { return items(); }
};

}  // namespace otahub::db
