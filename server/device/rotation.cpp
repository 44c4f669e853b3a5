#include "server/device/rotation.hpp"

#include <spdlog/spdlog.h>

#include "db/repositories/audit_repository.hpp"
#include "server/common/api_error.hpp"
#include "server/domain/pki/trust_store.hpp"
#include "server/events/event_bus.hpp"

namespace otahub::device {
namespace {

using Clock = std::chrono::system_clock;

std::int64_t now_epoch() {
    return std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch())
        .count();
}

void audit_device(db::Tx& tx, const SessionInfo& info, std::string action, nlohmann::json details) {
    db::AuditEntry entry;
    entry.org_id = info.org_id;
    entry.actor_type = "device";
    entry.actor = info.identifier;
    entry.action = std::move(action);
    entry.resource_type = "device";
    entry.resource = info.identifier;
    entry.details = std::move(details);
    db::audit::record(tx, entry);
}

}  // namespace

pki::CertifiedKey unlock_managed_ca(const db::ManagedCaRow& ca, const std::string& secret) {
    if (secret.empty()) {
        throw ApiError(ErrorCode::kUnavailable,
                       "hub-managed CAs need OTAHUB_SECRET_KEY, which this hub does not have");
    }
    auto certificate = pki::Certificate::from_der(ca.der);
    if (!certificate) {
        throw ApiError(ErrorCode::kInternal, "the managed CA's certificate cannot be read");
    }
    pki::CertifiedKey key{std::move(*certificate), {}};
    try {
        key.private_key_pem = pki::decrypt_private_key(ca.encrypted_key, secret);
    } catch (const pki::KeyDecryptionError& e) {
        spdlog::error("managed CA serial={} id={}: private key does not decrypt ({})", ca.serial,
                      ca.id, e.what());
        throw ApiError(ErrorCode::kUnavailable,
                       "the managed CA's private key cannot be decrypted with this hub's "
                       "OTAHUB_SECRET_KEY (was it changed? the key is kept; restore the "
                       "original secret)");
    }
    return key;
}

db::NewDeviceCertificate certificate_row(const pki::CertificateFacts& facts, std::int64_t org_id,
                                         std::int64_t device_id) {
    db::NewDeviceCertificate row;
    row.org_id = org_id;
    row.device_id = device_id;
    row.serial = facts.serial;
    row.aki = facts.aki;
    row.ski = facts.ski;
    row.not_before = facts.not_before;
    row.not_after = facts.not_after;
    row.fingerprint = facts.fingerprint;
    row.public_key_fingerprint = facts.public_key_fingerprint;
    row.der = facts.der;
    return row;
}

CertificateRotation::CertificateRotation(db::Database& db, RotationOptions options,
                                         PushFunction push)
    : db_(db), options_(std::move(options)), push_(std::move(push)) {
    sweeper_ = std::thread([this] { run(); });
}

CertificateRotation::~CertificateRotation() {
    {
        const std::lock_guard lock{mutex_};
        stopping_ = true;
    }
    wake_.notify_all();
    if (sweeper_.joinable()) sweeper_.join();
}

void CertificateRotation::install(DeviceHooks& hooks) {
    hooks.on_join.emplace_back(
        [this](const SessionInfo& info, const db::FirmwareReport&,
               const db::devices::JoinFacts& facts) { joined(info, facts.rotation_work); });
    hooks.on_event.emplace_back(
        [this](const SessionInfo& info, const std::string& event, const nlohmann::json& payload) {
            if (event == kCertificateCsrEvent) handle_csr(info, payload);
        });
}

nlohmann::json managed_ca_chain(db::Tx& tx, std::int64_t org_id, const pki::Certificate& cert) {
    nlohmann::json chain = nlohmann::json::array();
    auto facts = cert.facts();
    for (int depth = 0; depth < pki::kMaxVerifyDepth; ++depth) {
        if (facts.aki.empty() || facts.aki == facts.ski) break;
        auto issuer = db::managed_ca::find_by_ski(tx, org_id, facts.aki);
        if (!issuer) break;
        auto issuer_cert = pki::Certificate::from_der(issuer->der);
        if (!issuer_cert) break;
        chain.push_back(issuer_cert->pem());
        facts = issuer_cert->facts();
    }
    return chain;
}

void CertificateRotation::joined(const SessionInfo& info, bool work) {
    // Most joins have no rotation work (a custom CA, no pending retirement), as the join's own
    // statement read: no transaction of three for them.
    if (!work) return;
    std::optional<nlohmann::json> renew;
    db_.transact([&](db::Tx& tx) {
        // Connected with a successor: the certificates it replaces retire after the grace.
        for (const auto& old :
             db::managed_ca::schedule_retirement(tx, info.fingerprint, options_.grace)) {
            audit_device(tx, info, "device.certificate.rotated",
                         {{"old_serial", old.serial},
                          {"new_serial", info.serial},
                          {"grace_seconds", options_.grace.count()}});
            spdlog::info(
                "device={} connected with certificate serial={}; serial={} retires in "
                "{} s",
                info.identifier, info.serial, old.serial, options_.grace.count());
        }
        auto cert = db::managed_ca::find_certificate(tx, info.fingerprint);
        if (!cert || cert->revoked || cert->replaced_by_id) return 0;
        if (!db::managed_ca::is_managed(tx, info.ca_id)) return 0;
        auto reason =
            renewal_reason(cert->not_after_epoch, options_.renew_window, false, now_epoch());
        if (!reason && cert->renew_requested_at) reason = "requested";
        if (!reason) return 0;
        if (!cert->renew_requested_at) db::managed_ca::mark_renew_requested(tx, cert->id);
        renew = nlohmann::json{{"reason", *reason}, {"not_after", cert->not_after}};
        return 0;
    });
    if (renew) push_(info.device_id, std::string(kCertificateRenewEvent), *renew);
}

void CertificateRotation::refuse(const SessionInfo& info, const std::string& reason) {
    spdlog::info("device={} certificate_csr refused: {}", info.identifier, reason);
    push_(info.device_id, std::string(kCertificateErrorEvent), {{"reason", reason}});
}

void CertificateRotation::handle_csr(const SessionInfo& info, const nlohmann::json& payload) {
    auto csr = csr_from_payload(payload);
    if (!csr) return refuse(info, "payload needs a \"csr\" (PEM, at most 16 KiB)");
    nlohmann::json issued;
    try {
        issued = db_.transact([&](db::Tx& tx) {
            auto ca = db::managed_ca::find(tx, info.ca_id);
            if (!ca || !ca->active) {
                throw ApiError(
                    ErrorCode::kUnprocessable,
                    "the current certificate was not issued by an active hub-managed CA");
            }
            auto current = db::managed_ca::find_certificate(tx, info.fingerprint);
            if (!current || current->revoked) {
                throw ApiError(ErrorCode::kUnprocessable, "the current certificate is revoked");
            }
            if (current->replaced_by_id) {
                throw ApiError(ErrorCode::kUnprocessable,
                               "a successor certificate was already issued; connect with it");
            }
            const auto key = unlock_managed_ca(*ca, options_.secret_key);
            const auto certificate =
                pki::sign_csr(key, *csr, info.identifier, std::nullopt, Clock::now());
            const auto& facts = certificate.facts();
            auto stored = db::devices::insert_certificate(
                tx, certificate_row(facts, info.org_id, info.device_id));
            if (!stored) throw ApiError(ErrorCode::kConflict, "certificate already stored");
            db::managed_ca::set_replaced_by(tx, current->id, stored->id);
            audit_device(tx, info, "device.certificate.issued",
                         {{"serial", facts.serial},
                          {"replaces_serial", current->serial},
                          {"ca_serial", ca->serial},
                          {"via", "device_channel"}});
            spdlog::info("device={} rotation: issued certificate serial={} replacing serial={}",
                         info.identifier, facts.serial, current->serial);
            return nlohmann::json{{"certificate", certificate.pem()},
                                  {"ca_chain", managed_ca_chain(tx, info.org_id, certificate)}};
        });
    } catch (const ApiError& e) {
        return refuse(info, e.what());
    }
    push_(info.device_id, std::string(kCertificateIssuedEvent), std::move(issued));
}

std::size_t CertificateRotation::sweep() {
    return db_.transact([](db::Tx& tx) {
        const auto retired = db::managed_ca::retire_due(tx);
        for (const auto& cert : retired) {
            db::AuditEntry entry;
            entry.org_id = cert.org_id;
            entry.actor_type = "system";
            entry.actor = "rotation";
            entry.action = "device.certificate.revoked";
            entry.resource_type = "device";
            entry.resource = cert.device_identifier;
            entry.details = {{"serial", cert.serial}, {"reason", "replaced by rotation"}};
            db::audit::record(tx, entry);
            events::publish(tx, events::kSessionClose,
                            {{"device_id", cert.device_id},
                             {"fingerprint", cert.fingerprint},
                             {"reason", "certificate retired after rotation"}});
            spdlog::info("device={} certificate serial={} retired after rotation",
                         cert.device_identifier, cert.serial);
        }
        if (!retired.empty()) events::publish(tx, events::kTrustChanged);
        return retired.size();
    });
}

void CertificateRotation::run() {
    const auto interval = sweep_interval(options_.grace);
    std::unique_lock lock{mutex_};
    while (!stopping_) {
        wake_.wait_for(lock, interval, [this] { return stopping_; });
        if (stopping_) break;
        lock.unlock();
        try {
            sweep();
        } catch (const std::exception& e) {
            spdlog::debug("certificate rotation sweep failed: {}", e.what());
        }
        lock.lock();
    }
}

}  // namespace otahub::device
