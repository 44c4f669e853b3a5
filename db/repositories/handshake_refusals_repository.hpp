#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {

/// Refused device connections of one hour, CA, reason and stage (one upserted row each).
struct RefusalCount {
    /// Start of the hour, seconds since the epoch.
    std::int64_t hour_epoch = 0;
    /// The registered CA the refused chain reached; 0 when unknown.
    std::int64_t ca_id = 0;
    /// That CA's org; nullopt when the CA is unknown.
    std::optional<std::int64_t> org_id;
    std::string reason;
    /// "tls" or "upgrade".
    std::string stage;
    std::int64_t count = 0;
    /// A few distinct leaf common names and serials seen.
    std::vector<std::string> common_names;
    std::vector<std::string> serials;
    std::int64_t first_epoch = 0;
    std::int64_t last_epoch = 0;
};

/// A stored refusal row as the API shows it.
struct RefusalRow {
    std::string hour;
    std::optional<std::string> ca_serial;
    std::string reason;
    std::string stage;
    std::int64_t count = 0;
    std::vector<std::string> common_names;
    std::vector<std::string> serials;
    std::string first_at;
    std::string last_at;
};

/// Filters of `handshake_refusals::list`.
struct RefusalFilter {
    std::optional<std::string> since;
    std::optional<std::string> until;
    std::optional<std::string> reason;
    std::optional<std::string> ca_serial;
    int limit = 100;
};

/// Refused handshakes counted per hour, CA and reason.
namespace handshake_refusals {

/// Most distinct common names (and serials) kept per row.
inline constexpr int kMaxSamples = 10;

/// Adds the counts to their rows (creating them), in one statement per row.
void upsert(Tx& tx, const std::vector<RefusalCount>& counts);
/// Rows of an org's CAs, newest hour first, most refusals first within an hour.
std::vector<RefusalRow> list(Tx& tx, std::int64_t org_id, const RefusalFilter& filter);
/// Deletes the rows of hours that started more than `days` days ago; returns how many.
std::int64_t prune(Tx& tx, int days);

}  // namespace handshake_refusals
}  // namespace otahub::db
