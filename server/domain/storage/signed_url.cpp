#include "server/domain/storage/signed_url.hpp"

#include <charconv>

#include "server/domain/crypto.hpp"

namespace otahub::storage {
namespace {

// Versioned, so a future format cannot be confused with this one.
constexpr std::string_view kScheme = "otahub-firmware-url-v1";

}  // namespace

std::string firmware_download_path(std::int64_t org_id, std::string_view uuid) {
    return "/firmware/" + std::to_string(org_id) + "/" + std::string(uuid) + ".fw";
}

std::string sign_download(std::string_view secret, std::string_view path, std::int64_t expires) {
    std::string message{kScheme};
    message += '\n';
    message += path;
    message += '\n';
    message += std::to_string(expires);
    return crypto::base64url(crypto::hmac_sha256(secret, message));
}

std::string signed_download_target(std::string_view secret, std::string_view path,
                                   std::int64_t expires) {
    return std::string(path) + "?expires=" + std::to_string(expires) +
           "&signature=" + sign_download(secret, path, expires);
}

SignatureCheck check_download(std::string_view secret, std::string_view path,
                              std::string_view expires, std::string_view signature,
                              std::chrono::system_clock::time_point now) {
    if (expires.empty() || expires.size() > 18 || signature.empty() || signature.size() > 100) {
        return SignatureCheck::kMalformed;
    }
    std::int64_t expiry = 0;
    auto [end, ec] = std::from_chars(expires.data(), expires.data() + expires.size(), expiry);
    if (ec != std::errc{} || end != expires.data() + expires.size() || expiry < 0 ||
        expires.front() == '+' || (expires.size() > 1 && expires.front() == '0')) {
        return SignatureCheck::kMalformed;
    }
    if (!crypto::constant_time_equal(sign_download(secret, path, expiry), signature)) {
        return SignatureCheck::kBadSignature;
    }
    auto seconds = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    if (seconds > expiry) return SignatureCheck::kExpired;
    return SignatureCheck::kValid;
}

}  // namespace otahub::storage
