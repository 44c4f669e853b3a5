#pragma once

#include <cstdint>
#include <string>

#include "db/connection_batcher.hpp"
#include "db/database.hpp"
#include "server/domain/pki/certificate.hpp"
#include "server/domain/pki/trust_store.hpp"
#include "server/net/asio.hpp"

namespace otahub::device {

/// What the handshake established about a connecting device.
struct AuthRequest {
    /// Facts of the verified client certificate.
    pki::CertificateFacts leaf{};
    /// The registered CA its chain ended at.
    pki::MatchedCa ca{};
    /// This node, for the connection row.
    std::string node_id{};
    /// Peer address, for the connection row.
    std::string remote{};
};

/// The decision after the handshake and before the upgrade is answered.
struct AuthResult {
    /// Whether the device may upgrade.
    bool ok = false;
    /// HTTP status of a refusal (401, 403 or 503).
    int status = 0;
    /// Why it was refused (sent as `nh-connection-error-reason`).
    std::string reason{};
    /// The device, on success.
    std::int64_t device_id = 0;
    std::int64_t org_id = 0;
    std::int64_t product_id = 0;
    std::string identifier{};
    /// The `device_connections` row opened for the session, on success.
    std::int64_t connection_id = 0;
    /// Whether the device was created just now (JITP).
    bool provisioned = false;
    /// Whether a new certificate row was stored (JITP, rotation, first certificate).
    bool certificate_added = false;
};

/// Looks the device up (or creates it) the NervesHub way and on success opens its connection row
/// and publishes `device_connected` (which closes the device's older sessions on every node; not
/// for a device the one-statement JITP has just created, which has none). A known certificate,
/// and plain JITP when the CA has a profile, are decided by one statement shared with the
/// connections that arrive together (`batcher`), which the caller awaits without holding a thread
/// of `workers`; anything else in one transaction on `workers`: a known public key of a device
/// with the same CN (rotation: new certificate row), a registered device without certificates, or
/// JITP that is not plain. `request` must outlive the call (await it at once). Never throws;
/// database failures give 503.
net::awaitable<AuthResult> authenticate_device(db::Database& db, db::ConnectionBatcher& batcher,
                                               net::asio::thread_pool& workers,
                                               const AuthRequest& request);

}  // namespace otahub::device
