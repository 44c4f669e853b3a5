#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace otahub {

/// A user's role in one org; each role includes the rights of the ones below it.
enum class Role { kView = 0, kManage = 1, kAdmin = 2 };

std::string_view to_string(Role role);
std::optional<Role> parse_role(std::string_view text);

/// Org names appear in URLs: 1-64 of [A-Za-z0-9_.-], starting with a letter or digit.
bool valid_org_name(std::string_view name);
/// Product names come from fwup's meta-product: 1-100 printable characters, no '/'.
bool valid_product_name(std::string_view name);
/// A plausible e-mail address (one '@', something on both sides, at most 254 bytes).
bool valid_email(std::string_view email);

/// A new API token: "nhu_" + base62 of 32 random bytes and their CRC32 (NervesHub's shape).
std::string generate_token();
/// The stored form of a token: its SHA-256 digest (raw bytes).
std::string token_digest(std::string_view token);

/// Argon2id hash in PHC string form (salted, memory-hard).
std::string hash_password(std::string_view password);
/// Constant-time check of a password against a PHC string; false on any malformed hash.
bool verify_password(std::string_view password, const std::string& encoded);

}  // namespace otahub
