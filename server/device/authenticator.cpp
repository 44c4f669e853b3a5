#include "server/device/authenticator.hpp"

#include <spdlog/spdlog.h>

#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <utility>

#include "db/repositories/audit_repository.hpp"
#include "db/repositories/ca_certificates_repository.hpp"
#include "db/repositories/devices_repository.hpp"
#include "db/repositories/managed_ca_repository.hpp"
#include "server/device/rotation.hpp"
#include "server/device/trust_sync.hpp"
#include "server/events/event_bus.hpp"

namespace otahub::device {
namespace {

AuthResult refuse(int status, std::string reason) {
    AuthResult result;
    result.status = status;
    result.reason = std::move(reason);
    return result;
}

/// An admission of device `id` (its org, product and identifier) on connection `connection_id`.
AuthResult admit(std::int64_t id, std::int64_t org_id, std::int64_t product_id,
                 std::string identifier, std::int64_t connection_id) {
    AuthResult result;
    result.ok = true;
    result.status = 101;
    result.device_id = id;
    result.org_id = org_id;
    result.product_id = product_id;
    result.identifier = std::move(identifier);
    result.connection_id = connection_id;
    return result;
}

// The stable code a refusal is counted under (handshake_refusals.reason, stage "upgrade").
std::string refusal_code(const std::string& reason) {
    static const std::pair<std::string_view, std::string_view> kCodes[] = {
        {"certificate revoked", "revoked"},
        {"revoked by", "revoked"},
        {"another organization", "other_org"},
        {"common name does not match", "common_name_mismatch"},
        {"has no common name", "no_common_name"},
        {"unexpected public key", "unexpected_key"},
        {"not registered", "not_registered"},
        {"device deleted", "device_deleted"},
        {"device disabled", "device_disabled"},
        {"conflicts", "certificate_conflict"},
        {"CRL", "crl_missing"},
    };
    for (const auto& [needle, code] : kCodes) {
        if (reason.find(needle) != std::string::npos) return std::string(code);
    }
    return "refused";
}

/// The `device_connected` event sent with the connection row (open_connection_and_notify adds
/// the connection id).
std::string connected_event(std::int64_t device_id, const std::string& node_id) {
    return events::payload(events::kDeviceConnected,
                           {{"device_id", device_id}, {"node_id", node_id}});
}

AuthResult authenticate_in(db::Tx& tx, const AuthRequest& request) {
    const auto& leaf = request.leaf;
    const std::int64_t org_id = request.ca.org_id;
    std::optional<db::DeviceRow> device;
    bool provisioned = false;
    bool added = false;
    std::optional<std::int64_t> known_certificate;  // its last use is written on success

    // The CA's imported CRL (a listed serial, or no current CRL when the CA's policy refuses)
    // was checked by the batched statement (settle) a moment before this transaction.

    if (auto cert = db::devices::find_certificate_by_fingerprint(tx, leaf.fingerprint)) {
        if (cert->revoked) return refuse(403, "certificate revoked");
        device = db::devices::find_by_id(tx, cert->device_id);
        if (!device || device->org_id != org_id) {
            return refuse(403, "certificate belongs to a device of another organization");
        }
        known_certificate = cert->id;
    } else {
        auto same_key =
            db::devices::certificates_by_public_key(tx, org_id, leaf.public_key_fingerprint);
        if (!same_key.empty()) {
            // A new certificate for a known key: rotation, only for the device owning the key.
            device = db::devices::find_by_id(tx, same_key.front().device_id);
            if (!device || device->identifier != leaf.common_name) {
                return refuse(403,
                              "certificate common name does not match the device owning its key");
            }
        } else {
            if (leaf.common_name.empty()) return refuse(401, "certificate has no common name");
            device = db::devices::find_any(tx, org_id, leaf.common_name);
            if (device && !device->deleted &&
                db::devices::count_certificates_with_other_key(tx, device->id,
                                                               leaf.public_key_fingerprint) > 0) {
                return refuse(403, "unexpected public key for an existing device");
            }
            if (!device) {
                auto ca = db::ca_certificates::find_by_id(tx, request.ca.id);
                if (!ca || !ca->jitp) {
                    return refuse(401, "device not registered and its CA has no JITP profile");
                }
                // A concurrent first connection may have created it a moment ago: only the
                // connection that inserted the row counts and audits the provisioning.
                device = db::devices::create_if_missing(tx, org_id, ca->jitp->product_id,
                                                        leaf.common_name, ca->jitp->description,
                                                        ca->jitp->tags, &provisioned);
                if (provisioned) {
                    db::AuditEntry entry;
                    entry.org_id = org_id;
                    entry.actor_type = "device";
                    entry.actor = leaf.common_name;
                    entry.action = "device.provisioned";
                    entry.resource_type = "device";
                    entry.resource = leaf.common_name;
                    entry.details = {{"product", ca->jitp->product_name},
                                     {"ca_serial", ca->serial},
                                     {"certificate_serial", leaf.serial},
                                     {"remote", request.remote}};
                    db::audit::record(tx, entry);
                }
            }
        }
        if (device->deleted) return refuse(403, "device deleted");
        // Concurrent first connections insert the same certificate; the losers find it stored.
        added = db::devices::insert_certificate(tx, certificate_row(leaf, org_id, device->id))
                    .has_value();
    }

    if (device->deleted) return refuse(403, "device deleted");
    if (device->disabled) return refuse(403, "device disabled");

    // The connection row and its NOTIFY (sent at COMMIT) in one statement.
    const auto connection_id = db::devices::open_connection_and_notify(
        tx, device->id, request.node_id, request.remote, leaf.fingerprint, request.ca.id,
        known_certificate, connected_event(device->id, request.node_id));
    auto result =
        admit(device->id, device->org_id, device->product_id, device->identifier, connection_id);
    result.provisioned = provisioned;
    result.certificate_added = added;
    return result;
}

/// Why the connection check refuses, or nullopt when it admits (or the certificate is not
/// stored). Same order as authenticate_in: the CA's CRL first, then the certificate, then the
/// device.
std::optional<AuthResult> known_refusal(const db::devices::ConnectionCheck& check,
                                        std::int64_t org_id) {
    if (auto crl = db::managed_ca::crl_refusal(check.crl)) return refuse(403, *crl);
    if (!check.certificate) return std::nullopt;
    const auto& cert = *check.certificate;
    if (cert.revoked) return refuse(403, "certificate revoked");
    if (!cert.device || cert.device->org_id != org_id) {
        return refuse(403, "certificate belongs to a device of another organization");
    }
    if (cert.device->deleted) return refuse(403, "device deleted");
    if (cert.device->disabled) return refuse(403, "device disabled");
    return std::nullopt;
}

/// The connection attempt for `request` (check_open_or_provision).
db::devices::ConnectionAttempt attempt_of(const AuthRequest& request) {
    db::devices::ConnectionAttempt a;
    a.ca_id = request.ca.id;
    a.org_id = request.ca.org_id;
    a.issued_by_ca = request.ca.depth == 1;
    a.jitp = request.ca.jitp && !request.leaf.common_name.empty();
    a.identifier = request.leaf.common_name;
    a.certificate = certificate_row(request.leaf, request.ca.org_id, 0);
    a.remote_address = request.remote;
    return a;
}

/// What the batched statement (devices::check_open_or_provision) leaves of a connection's
/// admission: the answer, or a step that needs the database, to run on the worker pool.
struct Settled {
    std::optional<AuthResult> result{};
    std::function<AuthResult()> rest{};
};

/// A certificate seen before (the common case: every reconnect) is decided and admitted by one
/// statement (the checks, then the connection row and NOTIFY when they pass), without a
/// transaction block, shared with the connections that arrive with it (ConnectionBatcher): 1
/// round trip (2 before 2026-11-25). When the CA has a JITP profile the same statement also
/// provisions a never-seen device in the plain case: 1 round trip for a new device (2 before
/// 2026-12-05). What it cannot decide goes to authenticate_in's transaction: the certificate is
/// not stored and the CA's CRL does not refuse it and nothing was provisioned (first connections
/// of registered devices, rotation, JITP that is not plain), or another connection stored the
/// certificate the statement was provisioning (the device is ours and stays). Never blocks; throws
/// when the statement's answer is inconsistent.
Settled settle(db::Database& db, const AuthRequest& request,
               const db::devices::CheckOrProvision& decided) {
    const auto& leaf = request.leaf;
    const auto& check = decided.check;
    if (const auto& made = decided.provisioned) {
        if (!made->connection_id) {
            return {std::nullopt, [&db, &request] {
                        auto result =
                            db.transact([&](db::Tx& tx) { return authenticate_in(tx, request); });
                        result.provisioned = result.ok;
                        return result;
                    }};
        }
        auto result = admit(made->device_id, made->org_id, made->product_id, made->identifier,
                            *made->connection_id);
        result.provisioned = true;
        result.certificate_added = true;
        return {std::move(result), {}};
    }
    auto refusal = known_refusal(check, request.ca.org_id);
    if (check.connection_id && (refusal || !check.certificate)) {
        // The statement's rule (SQL) and known_refusal disagree: believe the refusal.
        spdlog::error("device admission rules disagree cn={} serial={}: connection {} closed",
                      leaf.common_name, leaf.serial, *check.connection_id);
        auto answer = refusal ? std::move(*refusal) : refuse(503, "platform unavailable");
        return {std::nullopt, [&db, id = *check.connection_id, answer = std::move(answer)] {
                    db.autocommit(
                        [&](db::Tx& tx) { db::devices::close_connection(tx, id, "refused"); });
                    return answer;
                }};
    }
    if (refusal) return {std::move(refusal), {}};
    if (!check.certificate) {
        return {std::nullopt, [&db, &request] {
                    return db.transact([&](db::Tx& tx) { return authenticate_in(tx, request); });
                }};
    }
    if (!check.connection_id) {
        throw std::runtime_error("device admission rules disagree: admitted but not opened");
    }
    const auto& device = *check.certificate->device;
    return {
        admit(device.id, device.org_id, device.product_id, device.identifier, *check.connection_id),
        {}};
}

/// A refusal is counted (handshake_refusals) unless the platform was unavailable.
AuthResult counted(const AuthRequest& request, AuthResult result) {
    if (!result.ok && result.status != 503) {
        refusal_counter().add(request.ca.id, request.ca.org_id, refusal_code(result.reason),
                              "upgrade", request.leaf.common_name, request.leaf.serial);
    }
    return result;
}

}  // namespace

// GCC 12 pairs the coroutine frame's allocation (Asio's aligned_alloc) with the frame type's
// operator delete once both are inlined here and warns; Asio frees that memory with std::free.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
net::awaitable<AuthResult> authenticate_device(db::Database& db, db::ConnectionBatcher& batcher,
                                               net::asio::thread_pool& workers,
                                               const AuthRequest& request) {
    try {
        // The batch's answer, awaited without holding a worker thread.
        auto attempt = attempt_of(request);
        const auto decided = co_await net::submit_batched(batcher, std::move(attempt));
        auto settled = settle(db, request, decided);
        if (settled.result) co_return counted(request, std::move(*settled.result));
        auto rest = std::move(settled.rest);
        co_return counted(request, co_await net::run_blocking(workers, std::move(rest)));
    } catch (const ApiError& e) {
        if (e.code() == ErrorCode::kConflict) {
            co_return counted(request,
                              refuse(403, "certificate conflicts with a stored certificate"));
        }
        spdlog::warn("device authentication failed cn={} serial={}: {}", request.leaf.common_name,
                     request.leaf.serial, e.what());
    } catch (const std::exception& e) {
        spdlog::error("device authentication failed cn={} serial={}: {}", request.leaf.common_name,
                      request.leaf.serial, e.what());
    }
    co_return refuse(503, "platform unavailable");
}
#pragma GCC diagnostic pop

}  // namespace otahub::device
