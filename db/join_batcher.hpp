#pragma once

#include <cstddef>

#include "db/repositories/devices_repository.hpp"
#include "db/statement_batcher.hpp"

namespace otahub::db {

/// Stores the device joins that arrive together in one statement (devices::record_joins; see
/// StatementBatcher). Joins of the same device go to separate batches.
class JoinBatcher : public StatementBatcher<devices::JoinRecord, devices::JoinFacts> {
  public:
    /// Statements run through `post` (the worker pool); `max_batch` joins at most per statement.
    JoinBatcher(Database& db, Post post, std::size_t max_batch = 64);
};

}  // namespace otahub::db
