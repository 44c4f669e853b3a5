#include "db/join_batcher.hpp"

#include <string>
#include <utility>
#include <vector>

namespace otahub::db {

JoinBatcher::JoinBatcher(Database& db, Post post, std::size_t max_batch)
    : StatementBatcher(
          db,
          [](Tx& tx, const std::vector<devices::JoinRecord>& joins) {
              return devices::record_joins(tx, joins);
          },
          [](const devices::JoinRecord& join) {
              return std::vector<std::string>{std::to_string(join.device_id)};
          },
          std::move(post), max_batch) {}

}  // namespace otahub::db
