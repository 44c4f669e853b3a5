#include "server/api/firmware_url.hpp"

#include <spdlog/spdlog.h>

#include "server/domain/crypto.hpp"
#include "server/domain/storage/signed_url.hpp"

namespace otahub::api {

const std::string& firmware_url_secret(const Config& config) {
    if (!config.secret_key.empty()) return config.secret_key;
    static const std::string fallback = [] {
        spdlog::warn(
            "OTAHUB_SECRET_KEY is not set: firmware URLs are signed with a random per-process key "
            "and will not validate on other hub nodes or after a restart");
        return crypto::random_bytes(32);
    }();
    return fallback;
}

std::string signed_firmware_url(const Config& config, std::int64_t org_id, const std::string& uuid,
                                std::chrono::system_clock::time_point now) {
    auto expires =
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count() +
        config.firmware_url_ttl_s;
    std::string base = config.public_url;
    while (!base.empty() && base.back() == '/') base.pop_back();
    return base + storage::signed_download_target(firmware_url_secret(config),
                                                  storage::firmware_download_path(org_id, uuid),
                                                  expires);
}

std::string default_public_url(const Config& config, std::uint16_t bound_port, bool tls) {
    ListenAddress address{config.api_listen.host, bound_port};
    if (address.host == "0.0.0.0" || address.host == "::" || address.host.empty()) {
        address.host = "127.0.0.1";
    }
    return std::string(tls ? "https" : "http") + "://" + address.to_string();
}

}  // namespace otahub::api
