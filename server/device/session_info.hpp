#pragma once

#include <cstdint>
#include <string>

namespace otahub::device {

/// Who a device session is, fixed when the upgrade is accepted.
struct SessionInfo {
    /// Database id of the device.
    std::int64_t device_id = 0;
    /// Its org and product.
    std::int64_t org_id = 0;
    std::int64_t product_id = 0;
    /// The device identifier (certificate CN).
    std::string identifier{};
    /// The `device_connections` row of this session (larger = newer).
    std::int64_t connection_id = 0;
    /// SHA-1 fingerprint of the client certificate.
    std::string fingerprint{};
    /// Serial (decimal) of the client certificate.
    std::string serial{};
    /// The registered CA the certificate chained to.
    std::int64_t ca_id = 0;
    /// Peer address, for logs.
    std::string remote{};
};

}  // namespace otahub::device
