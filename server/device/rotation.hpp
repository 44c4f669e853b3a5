#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "db/database.hpp"
#include "db/repositories/devices_repository.hpp"
#include "db/repositories/managed_ca_repository.hpp"
#include "server/device/device_channel.hpp"
#include "server/device/session_info.hpp"
#include "server/domain/pki/managed_ca.hpp"

// Certificate rotation over the device channel (an otahub extension of the NervesHub protocol,
// proto/device/certificate_rotation.json): the hub pushes `certificate_renew`, the device
// answers `certificate_csr`, the hub signs it with the managed CA that issued the current
// certificate and pushes `certificate_issued`; once the device connects with the new
// certificate the old one is revoked after a grace period.
namespace otahub::device {

/// Device event carrying a CSR.
inline constexpr std::string_view kCertificateCsrEvent = "certificate_csr";
/// Push asking the device to renew its certificate.
inline constexpr std::string_view kCertificateRenewEvent = "certificate_renew";
/// Push carrying the newly issued certificate.
inline constexpr std::string_view kCertificateIssuedEvent = "certificate_issued";
/// Push telling the device its CSR was refused.
inline constexpr std::string_view kCertificateErrorEvent = "certificate_error";
/// Largest CSR accepted over the channel.
inline constexpr std::size_t kMaxChannelCsrBytes = 16 * 1024;

/// Why a certificate should be renewed now (`expired`, `expiring`), or nullopt: only a
/// certificate that has no successor yet and ends within `window` of `now`.
inline std::optional<std::string> renewal_reason(std::int64_t not_after_epoch,
                                                 std::chrono::seconds window, bool replaced,
                                                 std::int64_t now_epoch) {
    if (replaced) return std::nullopt;
    if (not_after_epoch <= now_epoch) return std::string("expired");
    if (not_after_epoch - now_epoch <= window.count()) return std::string("expiring");
    return std::nullopt;
}

/// The CSR of a `certificate_csr` payload: a non-empty string `csr` of at most
/// `kMaxChannelCsrBytes`; nullopt otherwise.
inline std::optional<std::string> csr_from_payload(const nlohmann::json& payload) {
    if (!payload.is_object()) return std::nullopt;
    auto it = payload.find("csr");
    if (it == payload.end() || !it->is_string()) return std::nullopt;
    const auto& csr = it->get_ref<const std::string&>();
    if (csr.empty() || csr.size() > kMaxChannelCsrBytes) return std::nullopt;
    return csr;
}

/// How often due retirements are looked for: half the grace period, between 1 s and 30 s.
inline std::chrono::seconds sweep_interval(std::chrono::seconds grace) {
    return std::clamp(grace / 2, std::chrono::seconds{1}, std::chrono::seconds{30});
}

/// The managed CA's certificate and decrypted key. Throws ApiError 503 when no secret key is
/// configured or the key does not open with it (a changed OTAHUB_SECRET_KEY): nothing is lost,
/// the hub needs its original secret back.
pki::CertifiedKey unlock_managed_ca(const db::ManagedCaRow& ca, const std::string& secret);

/// PEMs of the org's managed CAs above `cert`: its issuer first, up to the root (AKI → SKI); a
/// self-signed certificate has none above it.
nlohmann::json managed_ca_chain(db::Tx& tx, std::int64_t org_id, const pki::Certificate& cert);

/// The `device_certificates` row for a certificate of a device.
db::NewDeviceCertificate certificate_row(const pki::CertificateFacts& facts, std::int64_t org_id,
                                         std::int64_t device_id);

/// Settings of certificate rotation.
struct RotationOptions {
    /// OTAHUB_SECRET_KEY (decrypts managed CA keys); empty = rotation refuses CSRs.
    std::string secret_key{};
    /// How long an old certificate keeps working after the device used its successor.
    std::chrono::seconds grace{std::chrono::hours{24}};
    /// Devices whose certificate expires within this window are asked to renew when they join.
    std::chrono::seconds renew_window{std::chrono::days{30}};
};

/// Sends an event to a device's live session on this node; false when it has none.
using PushFunction =
    std::function<bool(std::int64_t device_id, std::string event, nlohmann::json payload)>;

/// The rotation observers and the retirement sweeper (a thread started by the constructor and
/// joined by the destructor). Thread-safe.
class CertificateRotation {
  public:
    CertificateRotation(db::Database& db, RotationOptions options, PushFunction push);
    ~CertificateRotation();
    CertificateRotation(const CertificateRotation&) = delete;
    CertificateRotation& operator=(const CertificateRotation&) = delete;

    /// Adds the `on_join` and `on_event` observers to `hooks`.
    void install(DeviceHooks& hooks);
    /// Revokes the certificates whose grace period is over; returns how many.
    std::size_t sweep();

  private:
    /// `work`: whether the certificate has rotation work, as devices::record_joins read it.
    void joined(const SessionInfo& info, bool work);
    void handle_csr(const SessionInfo& info, const nlohmann::json& payload);
    void refuse(const SessionInfo& info, const std::string& reason);
    void run();

    db::Database& db_;
    RotationOptions options_;
    PushFunction push_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread sweeper_;
};

}  // namespace otahub::device
