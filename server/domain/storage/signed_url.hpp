#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace otahub::storage {

/// The path of a firmware's device download: `/firmware/<org_id>/<uuid>.fw`.
std::string firmware_download_path(std::int64_t org_id, std::string_view uuid);

/// HMAC-SHA256 of the path and the expiry time (unix seconds) under `secret`, base64url.
std::string sign_download(std::string_view secret, std::string_view path, std::int64_t expires);

/// `<path>?expires=<unix seconds>&signature=<sign_download(...)>`.
std::string signed_download_target(std::string_view secret, std::string_view path,
                                   std::int64_t expires);

/// The result of checking a signed download request.
enum class SignatureCheck { kValid, kMalformed, kBadSignature, kExpired };

/// Checks the `expires` and `signature` query values of a request for `path` at time `now`
/// (constant-time comparison; the signature is checked before the expiry). A URL stays valid
/// through the second it names.
SignatureCheck check_download(std::string_view secret, std::string_view path,
                              std::string_view expires, std::string_view signature,
                              std::chrono::system_clock::time_point now);

}  // namespace otahub::storage
