#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {

/// One audit log entry.
struct AuditEntry {
    std::int64_t id = 0;
    std::optional<std::int64_t> org_id;
    /// "user", "device" or "system".
    std::string actor_type = "system";
    /// User email, device identifier or subsystem name.
    std::string actor;
    /// What happened, e.g. "deployment.paused", "device.certificate.revoked".
    std::string action;
    /// What it happened to: a type ("deployment") and a name or identifier.
    std::string resource_type;
    std::string resource;
    nlohmann::json details = nlohmann::json::object();
    std::optional<std::string> request_id;
    std::string inserted_at;
};

/// Filters of `audit::list`; every given field must match.
struct AuditFilter {
    std::optional<std::string> action;
    std::optional<std::string> actor;
    std::optional<std::string> resource_type;
    std::optional<std::string> resource;
    /// Entries inserted at or after / before this ISO-8601 instant.
    std::optional<std::string> since;
    std::optional<std::string> until;
    /// Entries with an id below this one (pagination, newest first).
    std::optional<std::int64_t> before_id;
    int limit = 100;
};

/// The append-only audit log (the table refuses UPDATE).
namespace audit {

/// Appends an entry (its id and inserted_at are ignored); returns the new id.
std::int64_t record(Tx& tx, const AuditEntry& entry);
/// Appends `entry` unless a row with its request id exists already (the handler of that
/// request recorded a more specific one); returns whether a row was added.
bool record_unless_recorded(Tx& tx, const AuditEntry& entry);
/// Entries of an org, newest first.
std::vector<AuditEntry> list(Tx& tx, std::int64_t org_id, const AuditFilter& filter);

}  // namespace audit
}  // namespace otahub::db
