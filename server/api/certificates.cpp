// Certificate lifecycle: hub-managed CAs, device certificate signing and creation, rotation
// requests, CRL import for custom CAs, the public CRL of managed CAs, and the audit log.
#include <spdlog/spdlog.h>

#include <chrono>

#include "db/repositories/audit_repository.hpp"
#include "db/repositories/ca_certificates_repository.hpp"
#include "db/repositories/devices_repository.hpp"
#include "db/repositories/managed_ca_repository.hpp"
#include "db/repositories/products_repository.hpp"
#include "server/api/audit.hpp"
#include "server/api/context.hpp"
#include "server/api/products.hpp"
#include "server/api/reports.hpp"
#include "server/common/api_error.hpp"
#include "server/device/rotation.hpp"
#include "server/domain/pki/crl.hpp"
#include "server/domain/pki/managed_ca.hpp"
#include "server/domain/pki/trust_store.hpp"
#include "server/events/event_bus.hpp"

namespace otahub::api {
namespace {

using Clock = std::chrono::system_clock;

/// Default lifetime of a managed CA.
constexpr int kDefaultCaValidityDays = 20 * 365;
/// Lifetime of the CRLs the hub issues for managed CAs.
constexpr auto kIssuedCrlLifetime = std::chrono::hours{24};

std::string iso8601(Clock::time_point tp) {
    const auto t = Clock::to_time_t(tp);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buffer[32];
    std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buffer;
}

void audit(db::Tx& tx, const http::Request& req, const Principal& principal, std::int64_t org_id,
           std::string action, std::string resource_type, std::string resource,
           nlohmann::json details) {
    db::AuditEntry entry;
    entry.org_id = org_id;
    entry.actor_type = "user";
    entry.actor = principal.user.email;
    entry.action = std::move(action);
    entry.resource_type = std::move(resource_type);
    entry.resource = std::move(resource);
    entry.details = std::move(details);
    if (!req.request_id.empty()) entry.request_id = req.request_id;
    db::audit::record(tx, entry);
}

void require_secret(const ApiContext& ctx) {
    if (ctx.config.secret_key.empty()) {
        throw ApiError(ErrorCode::kUnavailable,
                       "hub-managed CAs need OTAHUB_SECRET_KEY, which this hub does not have");
    }
}

std::optional<int> optional_int(const nlohmann::json& body, const char* field, int min, int max) {
    auto it = body.find(field);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_number_integer() || it->get<std::int64_t>() < min ||
        it->get<std::int64_t>() > max) {
        throw unprocessable(field, "must be a whole number from " + std::to_string(min) + " to " +
                                       std::to_string(max));
    }
    return static_cast<int>(it->get<std::int64_t>());
}

std::string crl_url(const ApiContext& ctx, const std::string& fingerprint) {
    std::string base = ctx.config.public_url;
    while (!base.empty() && base.back() == '/') base.pop_back();
    return base + "/crl/" + fingerprint + ".crl";
}

nlohmann::json managed_ca_json(const ApiContext& ctx, const db::CaCertificateRow& ca,
                               const std::string& pem) {
    nlohmann::json jitp = nullptr;
    if (ca.jitp) {
        jitp = {{"product_name", ca.jitp->product_name},
                {"tags", ca.jitp->tags},
                {"description", ca.jitp->description}};
    }
    return {{"serial", ca.serial},
            {"ski", ca.ski},
            {"subject", ca.subject},
            {"fingerprint", ca.fingerprint},
            {"not_before", ca.not_before},
            {"not_after", ca.not_after},
            {"description", ca.description},
            {"active", ca.active},
            {"managed", true},
            {"jitp", jitp},
            {"certificate", pem},
            {"crl_url", crl_url(ctx, ca.fingerprint)},
            {"inserted_at", ca.inserted_at}};
}

nlohmann::json crl_json(const ApiContext& ctx, const db::CaCertificateRow& ca, bool managed,
                        const db::CrlInfo& info) {
    auto opt = [](const std::optional<std::string>& v) {
        return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
    };
    return {{"ca_serial", ca.serial},
            {"managed", managed},
            {"crl_url",
             managed ? nlohmann::json(crl_url(ctx, ca.fingerprint)) : nlohmann::json(nullptr)},
            {"missing_crl", info.missing_crl},
            {"present", info.present},
            {"crl_number", opt(info.crl_number)},
            {"this_update", opt(info.this_update)},
            {"next_update", opt(info.next_update)},
            {"expired", info.expired},
            {"revoked_count", info.revoked_count},
            {"updated_at", opt(info.updated_at)}};
}

// Compares two non-negative decimal numbers without leading zeros.
int compare_decimal(const std::string& a, const std::string& b) {
    if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
    return a.compare(b) < 0 ? -1 : (a == b ? 0 : 1);
}

struct DeviceTarget {
    OrgScope scope;
    db::ProductRow product;
    std::optional<db::DeviceRow> device;
};

// The org, product and (when registered) device of a device route. A device that does not
// exist yet is fine when `ca` provisions it into this product just in time.
DeviceTarget device_target(db::Tx& tx, const http::Request& req, Role role) {
    auto scope = require_org(tx, authenticate(tx, req), req.param("org"), role);
    auto product = require_product(tx, scope, req.param("product"));
    auto device = db::devices::find(tx, scope.org.id, req.param("identifier"));
    if (device && device->product_id != product.id) {
        throw ApiError(ErrorCode::kNotFound, "device not found");
    }
    return DeviceTarget{std::move(scope), std::move(product), std::move(device)};
}

db::ManagedCaRow signing_ca(db::Tx& tx, const DeviceTarget& target,
                            const std::optional<std::string>& ca_serial) {
    std::optional<db::ManagedCaRow> ca =
        ca_serial ? db::managed_ca::find_by_serial(tx, target.scope.org.id, *ca_serial)
                  : db::managed_ca::latest(tx, target.scope.org.id);
    if (!ca) {
        throw unprocessable("ca_serial", ca_serial ? "is not a hub-managed CA of the org"
                                                   : "needed: the org has no active hub-managed "
                                                     "CA (POST .../ca_certificates/managed)");
    }
    if (!ca->active) throw unprocessable("ca_serial", "is an inactive CA");
    if (!target.device) {
        auto row = db::ca_certificates::find_by_id(tx, ca->id);
        if (!row || !row->jitp || row->jitp->product_id != target.product.id) {
            throw ApiError(ErrorCode::kNotFound,
                           "device not found (and the CA does not provision this product just "
                           "in time)");
        }
    }
    return *ca;
}

// Stores the certificate for a registered device; unregistered devices get it at their first
// connection (JITP).
void store_for_device(db::Tx& tx, const DeviceTarget& target, const pki::CertificateFacts& facts) {
    if (!target.device) return;
    for (const auto& other : db::devices::certificates_by_public_key(
             tx, target.scope.org.id, facts.public_key_fingerprint)) {
        if (other.device_id != target.device->id) {
            throw unprocessable("csr", "has the public key of another device");
        }
    }
    if (!db::devices::insert_certificate(
            tx, device::certificate_row(facts, target.scope.org.id, target.device->id))) {
        throw ApiError(ErrorCode::kConflict, "certificate already stored");
    }
}

nlohmann::json issued_json(db::Tx& tx, const pki::Certificate& certificate,
                           const db::ManagedCaRow& ca_row, bool registered) {
    const auto& facts = certificate.facts();
    return {{"serial", facts.serial},
            {"common_name", facts.common_name},
            {"fingerprint", facts.fingerprint},
            {"not_before", iso8601(facts.not_before)},
            {"not_after", iso8601(facts.not_after)},
            {"certificate", certificate.pem()},
            {"ca_serial", ca_row.serial},
            {"ca_chain", device::managed_ca_chain(tx, ca_row.org_id, certificate)},
            {"device_registered", registered}};
}

std::optional<std::chrono::seconds> validity_of(const nlohmann::json& body) {
    auto days = optional_int(body, "validity_days", 1, 36500);
    if (!days) return std::nullopt;
    return std::chrono::days{*days};
}

void register_managed_ca_routes(http::Router& router, ApiContext& ctx) {
    router.add("POST", "/api/orgs/:org/ca_certificates/managed", [&ctx](http::Request& req) {
        authorize_first(ctx, req, Role::kManage);
        require_secret(ctx);
        const auto body = unwrap(req.json_body(), "ca_certificate");
        auto description = optional_string(body, "description").value_or("");
        if (description.size() > 1000) {
            throw unprocessable("description", "must be at most 1000 characters");
        }
        auto common_name = optional_string(body, "common_name");
        if (common_name && (common_name->empty() || common_name->size() > 64)) {
            throw unprocessable("common_name", "must be 1 to 64 characters");
        }
        const auto days = optional_int(body, "validity_days", 1, 36500);
        const auto parent_serial = optional_string(body, "parent_serial");
        return ctx.db.transact([&](db::Tx& tx) {
            const auto principal = authenticate(tx, req);
            auto scope = require_org(tx, principal, req.param("org"), Role::kManage);
            auto jitp = parse_jitp(tx, scope.org.id, body.value("jitp", nlohmann::json()));
            // An intermediate under one of the org's managed CAs (its root), or a root.
            std::optional<pki::CertifiedKey> parent;
            std::optional<db::ManagedCaRow> parent_row;
            if (parent_serial) {
                parent_row = db::managed_ca::find_by_serial(tx, scope.org.id, *parent_serial);
                if (!parent_row) {
                    throw unprocessable("parent_serial", "is not a hub-managed CA of the org");
                }
                if (!parent_row->active) throw unprocessable("parent_serial", "is an inactive CA");
                parent = device::unlock_managed_ca(*parent_row, ctx.config.secret_key);
            }
            const auto cn = common_name.value_or(
                (scope.org.name.size() > 40 ? scope.org.name.substr(0, 40) : scope.org.name) +
                (parent ? " device intermediate CA" : " device CA"));
            const auto generated =
                pki::generate_ca(cn, std::chrono::days{days.value_or(kDefaultCaValidityDays)},
                                 Clock::now(), parent ? &*parent : nullptr);
            const auto& facts = generated.certificate.facts();
            db::NewCaCertificate row;
            row.org_id = scope.org.id;
            row.serial = facts.serial;
            row.ski = facts.ski;
            row.aki = facts.aki;
            row.subject = facts.subject;
            row.fingerprint = facts.fingerprint;
            row.not_before = facts.not_before;
            row.not_after = facts.not_after;
            row.der = facts.der;
            row.description = description;
            row.jitp = jitp;
            auto created = db::ca_certificates::create(tx, row);
            db::managed_ca::store_key(
                tx, created.id,
                pki::encrypt_private_key(generated.private_key_pem, ctx.config.secret_key));
            events::publish(tx, events::kTrustChanged, {{"ca_id", created.id}});
            audit(tx, req, principal, scope.org.id, "ca_certificate.managed_created",
                  "ca_certificate", created.serial,
                  {{"ski", created.ski},
                   {"subject", created.subject},
                   {"parent_serial",
                    parent_row ? nlohmann::json(parent_row->serial) : nlohmann::json(nullptr)},
                   {"jitp_product",
                    jitp ? nlohmann::json(jitp->product_name) : nlohmann::json(nullptr)}});
            spdlog::info("org={} created managed CA serial={} ski={} parent={}", scope.org.name,
                         created.serial, created.ski, parent_serial.value_or("none"));
            auto out = managed_ca_json(ctx, created, generated.certificate.pem());
            out["parent_serial"] =
                parent_row ? nlohmann::json(parent_row->serial) : nlohmann::json(nullptr);
            out["ca_chain"] = device::managed_ca_chain(tx, scope.org.id, generated.certificate);
            return http::Response::json(201, out);
        });
    });

    router.add("GET", "/crl/:file", [&ctx](http::Request& req) {
        const auto& file = req.param("file");
        constexpr std::string_view kSuffix = ".crl";
        if (file.size() <= kSuffix.size() || file.size() > 80 || !file.ends_with(kSuffix)) {
            throw ApiError(ErrorCode::kNotFound, "CRL not found");
        }
        std::string fingerprint = file.substr(0, file.size() - kSuffix.size());
        for (auto& c : fingerprint) {
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        return ctx.db.transact([&](db::Tx& tx) {
            auto ca = db::managed_ca::find_by_fingerprint(tx, fingerprint);
            if (!ca) throw ApiError(ErrorCode::kNotFound, "CRL not found");
            const auto key = device::unlock_managed_ca(*ca, ctx.config.secret_key);
            std::vector<pki::RevokedCertificate> revoked;
            for (const auto& r : db::managed_ca::revoked_certificates(tx, ca->org_id, ca->ski)) {
                revoked.push_back(
                    {r.serial, Clock::time_point{std::chrono::seconds{r.revoked_at_epoch}}});
            }
            const auto now = Clock::now();
            const auto crl = pki::issue_crl(key, revoked, now, now + kIssuedCrlLifetime);
            http::Response response;
            response.status = 200;
            response.body.assign(crl.der.begin(), crl.der.end());
            response.set_header("content-type", "application/pkix-crl");
            response.set_header("cache-control", "max-age=300");
            return response;
        });
    });
}

void register_crl_routes(http::Router& router, ApiContext& ctx) {
    const std::string base = "/api/orgs/:org/ca_certificates/:serial";

    router.add("GET", base + "/crl", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            auto ca = db::ca_certificates::find(tx, scope.org.id, req.param("serial"));
            if (!ca) throw ApiError(ErrorCode::kNotFound, "CA certificate not found");
            return http::Response::json(200,
                                        crl_json(ctx, *ca, db::managed_ca::is_managed(tx, ca->id),
                                                 db::managed_ca::crl_info(tx, ca->id)));
        });
    });

    router.add("PUT", base + "/crl", [&ctx](http::Request& req) {
        authorize_first(ctx, req, Role::kManage);
        std::string input = req.body;
        const auto type = req.header("content-type").value_or("");
        if (type.starts_with("application/json")) {
            input = required_string(req.json_body(), "crl");
        }
        if (input.empty()) throw unprocessable("crl", "is required (PEM or DER body)");
        return ctx.db.transact([&](db::Tx& tx) {
            const auto principal = authenticate(tx, req);
            auto scope = require_org(tx, principal, req.param("org"), Role::kManage);
            auto ca = db::ca_certificates::find(tx, scope.org.id, req.param("serial"));
            if (!ca) throw ApiError(ErrorCode::kNotFound, "CA certificate not found");
            if (db::managed_ca::is_managed(tx, ca->id)) {
                throw unprocessable("crl",
                                    "cannot be imported for a hub-managed CA (the hub "
                                    "issues its CRL)");
            }
            auto der = db::managed_ca::ca_der(tx, ca->id);
            auto ca_cert = der ? pki::Certificate::from_der(*der) : std::nullopt;
            if (!ca_cert) throw ApiError(ErrorCode::kInternal, "stored CA certificate unreadable");
            const auto imported = pki::import_crl(input, *ca_cert, Clock::now());
            const auto this_update_s = std::chrono::duration_cast<std::chrono::seconds>(
                                           imported.this_update.time_since_epoch())
                                           .count();
            if (auto held = db::managed_ca::crl_order(tx, ca->id)) {
                const auto& [held_number, held_this_update] = *held;
                if (held_number && imported.number &&
                    compare_decimal(*imported.number, *held_number) < 0) {
                    throw unprocessable("crl", "is older than the stored CRL (cRLNumber " +
                                                   *imported.number + " < " + *held_number + ")");
                }
                if ((!held_number || !imported.number) && this_update_s < held_this_update) {
                    throw unprocessable("crl", "is older than the stored CRL (thisUpdate)");
                }
            }
            db::NewCrl crl;
            crl.der = imported.der;
            crl.crl_number = imported.number;
            crl.this_update = imported.this_update;
            crl.next_update = imported.next_update;
            std::vector<std::string> serials;
            for (const auto& entry : imported.revoked) {
                crl.revoked.emplace_back(entry.serial, entry.revoked_at);
                serials.push_back(entry.serial);
            }
            db::managed_ca::store_crl(tx, ca->id, crl);
            // Every node reloads its trust snapshot: the listed serials are then refused in the
            // TLS handshake itself (certificate_revoked); the check at the upgrade stays.
            events::publish(tx, events::kTrustChanged, {{"ca_id", ca->id}});
            std::size_t closing = 0;
            for (const auto& [device_id, fingerprint] :
                 db::managed_ca::certificates_with_serials(tx, scope.org.id, ca->ski, serials)) {
                events::publish(tx, events::kSessionClose,
                                {{"device_id", device_id},
                                 {"fingerprint", fingerprint},
                                 {"reason", "certificate revoked by the CA's CRL"}});
                ++closing;
            }
            audit(tx, req, principal, scope.org.id, "ca_certificate.crl_imported", "ca_certificate",
                  ca->serial,
                  {{"crl_number",
                    imported.number ? nlohmann::json(*imported.number) : nlohmann::json(nullptr)},
                   {"revoked_count", imported.revoked.size()},
                   {"known_certificates_revoked", closing}});
            spdlog::info("org={} CA serial={} CRL imported: {} revoked serial(s)", scope.org.name,
                         ca->serial, imported.revoked.size());
            return http::Response::json(
                200, crl_json(ctx, *ca, false, db::managed_ca::crl_info(tx, ca->id)));
        });
    });

    router.add("PUT", base + "/crl_policy", [&ctx](http::Request& req) {
        authorize_first(ctx, req, Role::kManage);
        const auto body = req.json_body();
        const auto policy = required_string(body, "missing_crl");
        if (policy != "accept" && policy != "refuse") {
            throw unprocessable("missing_crl", "must be accept or refuse");
        }
        return ctx.db.transact([&](db::Tx& tx) {
            const auto principal = authenticate(tx, req);
            auto scope = require_org(tx, principal, req.param("org"), Role::kManage);
            auto ca = db::ca_certificates::find(tx, scope.org.id, req.param("serial"));
            if (!ca) throw ApiError(ErrorCode::kNotFound, "CA certificate not found");
            db::managed_ca::set_missing_crl_policy(tx, ca->id, policy);
            audit(tx, req, principal, scope.org.id, "ca_certificate.crl_policy_changed",
                  "ca_certificate", ca->serial, {{"missing_crl", policy}});
            return http::Response::json(200,
                                        crl_json(ctx, *ca, db::managed_ca::is_managed(tx, ca->id),
                                                 db::managed_ca::crl_info(tx, ca->id)));
        });
    });
}

void register_device_certificate_routes(http::Router& router, ApiContext& ctx) {
    const std::string base = "/api/orgs/:org/products/:product/devices/:identifier/certificates";

    router.add("POST", base + "/sign", [&ctx](http::Request& req) {
        authorize_first(ctx, req, Role::kManage);
        require_secret(ctx);
        const auto body = unwrap(req.json_body(), "certificate");
        const auto csr = required_string(body, "csr");
        const auto ca_serial = optional_string(body, "ca_serial");
        const auto validity = validity_of(body);
        return ctx.db.transact([&](db::Tx& tx) {
            const auto principal = authenticate(tx, req);
            auto target = device_target(tx, req, Role::kManage);
            const auto ca_row = signing_ca(tx, target, ca_serial);
            const auto ca = device::unlock_managed_ca(ca_row, ctx.config.secret_key);
            const auto identifier = req.param("identifier");
            const auto cert = pki::sign_csr(ca, csr, identifier, validity, Clock::now());
            store_for_device(tx, target, cert.facts());
            audit(tx, req, principal, target.scope.org.id, "device.certificate.signed", "device",
                  identifier,
                  {{"serial", cert.facts().serial},
                   {"ca_serial", ca_row.serial},
                   {"not_after", iso8601(cert.facts().not_after)}});
            return http::Response::json(201,
                                        issued_json(tx, cert, ca_row, target.device.has_value()));
        });
    });

    router.add("POST", base + "/create", [&ctx](http::Request& req) {
        authorize_first(ctx, req, Role::kManage);
        require_secret(ctx);
        const auto body =
            req.body.empty() ? nlohmann::json::object() : unwrap(req.json_body(), "certificate");
        const auto ca_serial = optional_string(body, "ca_serial");
        const auto validity = validity_of(body);
        return ctx.db.transact([&](db::Tx& tx) {
            const auto principal = authenticate(tx, req);
            auto target = device_target(tx, req, Role::kManage);
            const auto ca_row = signing_ca(tx, target, ca_serial);
            const auto ca = device::unlock_managed_ca(ca_row, ctx.config.secret_key);
            const auto identifier = req.param("identifier");
            const auto created =
                pki::create_device_certificate(ca, identifier, validity, Clock::now());
            store_for_device(tx, target, created.certificate.facts());
            audit(tx, req, principal, target.scope.org.id, "device.certificate.created", "device",
                  identifier,
                  {{"serial", created.certificate.facts().serial},
                   {"ca_serial", ca_row.serial},
                   {"not_after", iso8601(created.certificate.facts().not_after)}});
            auto out = issued_json(tx, created.certificate, ca_row, target.device.has_value());
            out["private_key"] = created.private_key_pem;
            return http::Response::json(201, out);
        });
    });

    router.add("POST", base + "/rotate", [&ctx](http::Request& req) {
        authorize_first(ctx, req, Role::kManage);
        const auto body = req.body.empty() ? nlohmann::json::object() : req.json_body();
        auto reason = optional_string(body, "reason").value_or("operator");
        if (reason.size() > 200) throw unprocessable("reason", "must be at most 200 characters");
        return ctx.db.transact([&](db::Tx& tx) {
            const auto principal = authenticate(tx, req);
            auto target = device_target(tx, req, Role::kManage);
            if (!target.device) throw ApiError(ErrorCode::kNotFound, "device not found");
            const auto& device = *target.device;
            auto cert = db::managed_ca::current_certificate(tx, device.id);
            if (!cert) throw unprocessable("device", "has no current certificate");
            if (!db::managed_ca::find_by_ski(tx, device.org_id, cert->aki)) {
                throw unprocessable("device", "certificate serial " + cert->serial +
                                                  " was not issued by a hub-managed CA");
            }
            db::managed_ca::mark_renew_requested(tx, cert->id);
            events::publish(tx, events::kDevicePush,
                            {{"device_id", device.id},
                             {"event", std::string(device::kCertificateRenewEvent)},
                             {"payload", {{"reason", reason}, {"not_after", cert->not_after}}}});
            audit(tx, req, principal, device.org_id, "device.certificate.rotation_requested",
                  "device", device.identifier, {{"serial", cert->serial}, {"reason", reason}});
            return http::Response::json(202, {{"serial", cert->serial},
                                              {"not_after", cert->not_after},
                                              {"reason", reason},
                                              {"online", device.online}});
        });
    });
}

}  // namespace

void register_certificate_routes(http::Router& router, ApiContext& ctx) {
    register_managed_ca_routes(router, ctx);
    register_crl_routes(router, ctx);
    register_device_certificate_routes(router, ctx);
    register_audit_routes(router, ctx);
    register_report_routes(router, ctx);
}

}  // namespace otahub::api
