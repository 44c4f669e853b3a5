#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {

/// An org's fwup signing key (Ed25519 public key).
struct KeyRow {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::string name;
    /// base64 of the raw 32-byte public key.
    std::string key;
    std::string inserted_at;
    std::string updated_at;
};

/// Signing keys of an org.
namespace keys {

/// Inserts a key; Conflict when the org already has that name or that key.
KeyRow create(Tx& tx, std::int64_t org_id, const std::string& name, const std::string& key);
/// The org's keys by name.
std::vector<KeyRow> list(Tx& tx, std::int64_t org_id);
std::optional<KeyRow> find(Tx& tx, std::int64_t org_id, const std::string& name);
std::optional<KeyRow> find_by_id(Tx& tx, std::int64_t id);
/// Firmware rows signed by the key (they keep it from being deleted).
std::int64_t firmware_count(Tx& tx, std::int64_t key_id);
/// Deletes the key; an ApiError 409 when firmware still references it.
void remove(Tx& tx, std::int64_t id);

}  // namespace keys
}  // namespace otahub::db
