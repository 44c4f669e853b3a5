#include "db/connection_batcher.hpp"

#include <utility>

#include "db/tx.hpp"

namespace otahub::db {

ConnectionBatcher::ConnectionBatcher(Database& db, std::string node_id, std::string event,
                                     Post post, std::size_t max_batch)
    : StatementBatcher(
          db,
          [node = std::move(node_id), event = std::move(event)](
              Tx& tx, const std::vector<devices::ConnectionAttempt>& attempts) {
              return devices::check_open_or_provision(tx, attempts, node, event);
          },
          [](const devices::ConnectionAttempt& a) {
              const auto org = std::to_string(a.org_id) + ':';
              return std::vector<std::string>{"f" + a.certificate.fingerprint,
                                              "i" + org + a.identifier,
                                              "k" + org + a.certificate.public_key_fingerprint};
          },
          std::move(post), max_batch) {}

}  // namespace otahub::db
