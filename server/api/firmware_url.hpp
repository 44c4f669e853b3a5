#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "server/app/config.hpp"

namespace otahub::api {

/// The key firmware URLs are signed with: OTAHUB_SECRET_KEY, or when that is empty a random
/// key made once per process (URLs then validate only on the node that made them; a warning
/// is logged the first time). Thread-safe.
const std::string& firmware_url_secret(const Config& config);

/// A device download URL for a firmware, valid for `config.firmware_url_ttl_s` from `now`:
/// `<public_url>/firmware/<org_id>/<uuid>.fw?expires=<unix>&signature=<HMAC-SHA256>`. Served by
/// the hub's API listener without authentication; supports Range requests. Thread-safe.
std::string signed_firmware_url(const Config& config, std::int64_t org_id, const std::string& uuid,
                                std::chrono::system_clock::time_point now);

/// The default of OTAHUB_PUBLIC_URL: `<http|https>://<api host>:<bound port>` (a wildcard host
/// becomes 127.0.0.1, since devices cannot dial 0.0.0.0; set OTAHUB_PUBLIC_URL in production).
std::string default_public_url(const Config& config, std::uint16_t bound_port, bool tls);

}  // namespace otahub::api
