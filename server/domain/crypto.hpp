#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace otahub::crypto {

/// Cryptographically secure random bytes (OpenSSL RAND_bytes); throws if the RNG fails.
std::string random_bytes(std::size_t count);
/// SHA-256 of data, raw 32 bytes.
std::string sha256(std::string_view data);
/// HMAC-SHA256(key, data), raw 32 bytes.
std::string hmac_sha256(std::string_view key, std::string_view data);
/// Hex encoding; upper-case when `upper`.
std::string hex(std::string_view bytes, bool upper = false);
/// Base64url without padding, and its inverse (nullopt-free: returns false on bad input).
std::string base64url(std::string_view bytes);
bool base64url_decode(std::string_view text, std::string& out);
/// Standard base64 with padding, and its inverse.
std::string base64(std::string_view bytes);
bool base64_decode(std::string_view text, std::string& out);
/// Compares two strings in time independent of where they differ.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace otahub::crypto
