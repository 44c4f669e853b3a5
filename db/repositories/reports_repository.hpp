#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {

/// A device certificate that expires soon (or has expired) and is not revoked.
struct ExpiringCertificateRow {
    std::string identifier;
    std::string product;
    std::string serial;
    std::string not_after;
    bool expired = false;
    /// Serial of the org's CA that issued it, when registered.
    std::optional<std::string> ca_serial;
    /// When the device was last asked to renew it.
    std::optional<std::string> renew_requested_at;
    /// Whether a successor was issued (rotation in progress).
    bool replaced = false;
};

/// A CA of the org that expires soon (or has expired).
struct ExpiringCaRow {
    std::string serial;
    std::string subject;
    std::string not_after;
    bool expired = false;
    bool active = true;
    bool managed = false;
};

/// A device (by certificate common name) refused recently with a revoked, unknown or expired
/// certificate.
struct RefusedDeviceRow {
    std::string identifier;
    std::optional<std::string> product;
    bool registered = false;
    /// "revoked", "unknown" or "expired".
    std::string category;
    std::string reason;
    std::string stage;
    std::optional<std::string> ca_serial;
    /// Refusals of that reason and CA in the hours the device was among them.
    std::int64_t refusals = 0;
    std::string last_at;
};

/// Certificate reports of an org.
namespace reports {

/// Row cap of each list.
inline constexpr int kMaxRows = 1000;

std::vector<ExpiringCertificateRow> expiring_certificates(Tx& tx, std::int64_t org_id, int days);
std::vector<ExpiringCaRow> expiring_cas(Tx& tx, std::int64_t org_id, int days);
/// From the refusal counts of the last `recent_days` days: the org's CAs' refusals, and refusals
/// by an unknown CA whose common name is one of the org's devices.
std::vector<RefusedDeviceRow> refused_devices(Tx& tx, std::int64_t org_id, int recent_days);

}  // namespace reports
}  // namespace otahub::db
