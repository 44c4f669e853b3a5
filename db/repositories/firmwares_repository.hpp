#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {

/// A stored, verified firmware archive.
struct FirmwareRow {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::int64_t product_id = 0;
    std::int64_t org_key_id = 0;
    /// Name of the product and of the signing key (joined).
    std::string product;
    std::string key_name;
    std::string uuid;
    std::string version;
    std::string platform;
    std::string architecture;
    std::string author;
    std::string description;
    std::string misc;
    std::string vcs_identifier;
    std::string fwup_version;
    std::string tool;
    std::string creation_date;
    std::int64_t size = 0;
    std::string sha256;
    std::vector<std::string> partial_sha256;
    std::string storage_key;
    std::optional<std::int64_t> ttl_seconds;
    /// ISO 8601, or nullopt while referenced by a deployment or without TTL.
    std::optional<std::string> ttl_until;
    std::string inserted_at;
    std::string updated_at;
};

/// What an upload inserts.
struct NewFirmware {
    std::int64_t org_id = 0;
    std::int64_t product_id = 0;
    std::int64_t org_key_id = 0;
    std::optional<std::int64_t> uploaded_by;
    std::string uuid;
    std::string version;
    std::string platform;
    std::string architecture;
    std::string author;
    std::string description;
    std::string misc;
    std::string vcs_identifier;
    std::string fwup_version;
    std::string creation_date;
    std::int64_t size = 0;
    std::string sha256;
    std::vector<std::string> partial_sha256;
    std::string storage_key;
    std::optional<std::int64_t> ttl_seconds;
};

/// A firmware row the TTL job removed; its file is still to be deleted.
struct ExpiredFirmware {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::string uuid;
    std::string storage_key;
};

/// Firmware of an org's products.
///
/// For the deployments code: a deployment's `firmware_id` must reference firmwares(id) with
/// ON DELETE RESTRICT (deleting referenced firmware then fails with 409 "still referenced"),
/// and whenever a deployment starts or stops pointing at a firmware, call referenced() /
/// unreferenced() in the same transaction so the TTL clock stops and restarts.
namespace firmwares {

/// Inserts the row; ttl_until = now() + ttl_seconds when a TTL is given. Conflict when the org
/// already has that uuid.
FirmwareRow create(Tx& tx, const NewFirmware& firmware);
/// A product's firmware, oldest first.
std::vector<FirmwareRow> list(Tx& tx, std::int64_t product_id);
std::optional<FirmwareRow> find(Tx& tx, std::int64_t product_id, const std::string& uuid);
/// By org and uuid (what a signed download URL names).
std::optional<FirmwareRow> find_in_org(Tx& tx, std::int64_t org_id, const std::string& uuid);
std::optional<FirmwareRow> find_by_id(Tx& tx, std::int64_t id);
/// Deletes the row (not the file); ApiError 409 while a deployment references it.
void remove(Tx& tx, std::int64_t id);

/// A deployment now references the firmware: its TTL clock stops (ttl_until = NULL).
void referenced(Tx& tx, std::int64_t id);
/// No deployment references the firmware any more: ttl_until = now + ttl_seconds (no-op for
/// firmware without a TTL). `now` defaults to the database clock.
void unreferenced(Tx& tx, std::int64_t id,
                  std::optional<std::chrono::system_clock::time_point> now = std::nullopt);

/// Deletes up to `limit` rows whose ttl_until is before `now`, skipping rows other transactions
/// hold locked (several hub nodes may run this at once). A row something still references (a
/// deployment whose code forgot referenced()) is kept and its clock stopped. Returns the
/// deleted rows; delete their files after the commit.
std::vector<ExpiredFirmware> delete_expired(Tx& tx, std::chrono::system_clock::time_point now,
                                            int limit = 100);

}  // namespace firmwares
}  // namespace otahub::db
