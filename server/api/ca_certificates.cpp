// Custom CA registration with proof of possession (NervesHub's /ca_certificates API).
#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <mutex>

#include "db/repositories/ca_certificates_repository.hpp"
#include "db/repositories/products_repository.hpp"
#include "server/api/context.hpp"
#include "server/common/api_error.hpp"
#include "server/domain/crypto.hpp"
#include "server/domain/pki/ca_registration.hpp"
#include "server/events/event_bus.hpp"

namespace otahub::api {
namespace {

using Clock = std::chrono::system_clock;

/// How long a verification token is accepted.
constexpr auto kTokenLifetime = std::chrono::hours(1);

enum class TokenCheck { kValid, kExpired, kInvalid };

// Without OTAHUB_SECRET_KEY tokens are signed with a per-process key: they then work only on
// the node that issued them, until it restarts.
const std::string& token_key(const Config& config) {
    static std::once_flag once;
    static std::string fallback;
    if (!config.secret_key.empty()) return config.secret_key;
    std::call_once(once, [] {
        fallback = crypto::random_bytes(32);
        spdlog::warn(
            "OTAHUB_SECRET_KEY is not set: CA verification tokens are valid only on "
            "this node until it restarts");
    });
    return fallback;
}

std::string token_mac(const Config& config, std::int64_t org_id, std::int64_t expires) {
    const std::string message =
        "otahub-ca-verification:" + std::to_string(org_id) + ":" + std::to_string(expires);
    return crypto::base64url(crypto::hmac_sha256(token_key(config), message).substr(0, 16));
}

// "<org id>.<expiry unix seconds>.<base64url 128-bit HMAC>": short enough for a subject CN.
std::string make_token(const Config& config, std::int64_t org_id) {
    const auto expires = std::chrono::duration_cast<std::chrono::seconds>(
                             (Clock::now() + kTokenLifetime).time_since_epoch())
                             .count();
    return std::to_string(org_id) + "." + std::to_string(expires) + "." +
           token_mac(config, org_id, expires);
}

bool parse_int64(std::string_view text, std::int64_t& out) {
    if (text.empty() || text.size() > 19) return false;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && ptr == text.data() + text.size();
}

TokenCheck check_token(const Config& config, std::int64_t org_id, std::string_view token) {
    const auto first = token.find('.');
    const auto second = first == std::string_view::npos ? first : token.find('.', first + 1);
    if (second == std::string_view::npos) return TokenCheck::kInvalid;
    std::int64_t token_org = 0;
    std::int64_t expires = 0;
    if (!parse_int64(token.substr(0, first), token_org) ||
        !parse_int64(token.substr(first + 1, second - first - 1), expires)) {
        return TokenCheck::kInvalid;
    }
    if (token_org != org_id ||
        !crypto::constant_time_equal(token.substr(second + 1),
                                     token_mac(config, token_org, expires))) {
        return TokenCheck::kInvalid;
    }
    const auto now =
        std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
    return now > expires ? TokenCheck::kExpired : TokenCheck::kValid;
}

// The tokens a verification certificate may carry (SAN URIs first, then the subject CN).
std::vector<std::string> candidate_tokens(std::string_view verification_cert) {
    std::vector<std::string> out;
    auto cert = pki::Certificate::parse(verification_cert);
    if (!cert) return out;
    for (const auto& uri : cert->facts().san_uris) {
        if (uri.starts_with(pki::kVerifyUriPrefix)) {
            out.push_back(uri.substr(pki::kVerifyUriPrefix.size()));
        }
    }
    if (!cert->facts().common_name.empty()) out.push_back(cert->facts().common_name);
    return out;
}

nlohmann::json jitp_json(const std::optional<db::JitpProfile>& jitp) {
    if (!jitp) return nullptr;
    return {{"product_name", jitp->product_name},
            {"tags", jitp->tags},
            {"description", jitp->description}};
}

nlohmann::json ca_json(const db::CaCertificateRow& ca) {
    return {{"serial", ca.serial},
            {"ski", ca.ski},
            {"aki", ca.aki ? nlohmann::json(*ca.aki) : nlohmann::json(nullptr)},
            {"subject", ca.subject},
            {"fingerprint", ca.fingerprint},
            {"not_before", ca.not_before},
            {"not_after", ca.not_after},
            {"description", ca.description},
            {"status", ca.active ? "active" : "inactive"},
            {"active", ca.active},
            {"check_expiration", ca.check_expiration},
            {"jitp", jitp_json(ca.jitp)},
            {"last_used_at",
             ca.last_used_at ? nlohmann::json(*ca.last_used_at) : nlohmann::json(nullptr)},
            {"inserted_at", ca.inserted_at},
            {"updated_at", ca.updated_at}};
}

db::CaCertificateRow require_ca(db::Tx& tx, const OrgScope& scope, const std::string& serial) {
    auto ca = db::ca_certificates::find(tx, scope.org.id, serial);
    if (!ca) throw ApiError(ErrorCode::kNotFound, "CA certificate not found");
    return *ca;
}

std::string optional_description(const nlohmann::json& body, const std::string& fallback) {
    auto description = optional_string(body, "description");
    if (description && description->size() > 1000) {
        throw unprocessable("description", "must be at most 1000 characters");
    }
    return description.value_or(fallback);
}

std::vector<std::string> tag_list(const nlohmann::json& value) {
    std::vector<std::string> tags;
    if (value.is_null()) return tags;
    if (!value.is_array()) throw unprocessable("jitp", "tags must be a list of strings");
    for (const auto& tag : value) {
        if (!tag.is_string() || tag.get<std::string>().empty() ||
            tag.get<std::string>().size() > 255) {
            throw unprocessable("jitp", "tags must be a list of non-empty strings");
        }
        tags.push_back(tag.get<std::string>());
    }
    return tags;
}

// The `jitp` member, as in POST /ca_certificates: {"product_name", "tags", "description"}.

}  // namespace

std::optional<db::JitpProfile> parse_jitp(db::Tx& tx, std::int64_t org_id,
                                          const nlohmann::json& value) {
    if (value.is_null()) return std::nullopt;
    if (!value.is_object()) throw unprocessable("jitp", "must be an object or null");
    auto name = value.find("product_name");
    if (name == value.end() || !name->is_string() || name->get<std::string>().empty()) {
        throw unprocessable("jitp", "needs product_name");
    }
    auto product = db::products::find(tx, org_id, name->get<std::string>());
    if (!product) {
        throw unprocessable("jitp", "product '" + name->get<std::string>() + "' does not exist");
    }
    db::JitpProfile jitp;
    jitp.product_id = product->id;
    jitp.product_name = product->name;
    jitp.tags = tag_list(value.value("tags", nlohmann::json::array()));
    if (auto d = value.find("description"); d != value.end() && !d->is_null()) {
        if (!d->is_string()) throw unprocessable("jitp", "description must be a string");
        jitp.description = d->get<std::string>();
    }
    return jitp;
}

void register_ca_certificate_routes(http::Router& router, ApiContext& ctx) {
    router.add("GET", "/api/orgs/:org/ca_certificates", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            nlohmann::json list = nlohmann::json::array();
            for (const auto& ca : db::ca_certificates::list(tx, scope.org.id)) {
                list.push_back(ca_json(ca));
            }
            return http::Response::json(200, list);
        });
    });

    router.add("GET", "/api/orgs/:org/ca_certificates/verification_token",
               [&ctx](http::Request& req) {
                   return ctx.db.transact([&](db::Tx& tx) {
                       auto scope =
                           require_org(tx, authenticate(tx, req), req.param("org"), Role::kManage);
                       return http::Response::json(
                           200, {{"verification_token", make_token(ctx.config, scope.org.id)}});
                   });
               });

    router.add("POST", "/api/orgs/:org/ca_certificates", [&ctx](http::Request& req) {
        // Who may call comes before what they sent: 401/404/403 before 400/422.
        authorize_first(ctx, req, Role::kManage);
        const auto body = unwrap(req.json_body(), "ca_certificate");
        const std::string cert = required_string(body, "cert");
        const std::string verification = required_string(body, "verification_cert");
        const std::string description = optional_description(body, "");
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kManage);
            // The token is whichever candidate in the verification certificate this hub
            // issued to this org and is still valid.
            std::string expected;
            bool expired = false;
            for (const auto& candidate : candidate_tokens(verification)) {
                const auto check = check_token(ctx.config, scope.org.id, candidate);
                if (check == TokenCheck::kValid) {
                    expected = candidate;
                    break;
                }
                expired = expired || check == TokenCheck::kExpired;
            }
            auto result = pki::validate_ca_registration(cert, verification, expected, Clock::now());
            if (!result.ok()) {
                if (expired && result.failure->reason == pki::CaRegistrationError::kTokenMismatch) {
                    throw unprocessable("verification_cert",
                                        "carries an expired verification token");
                }
                throw pki::to_api_error(*result.failure);
            }
            const auto& facts = result.ca->facts();
            if (auto existing = db::ca_certificates::find_by_fingerprint(tx, facts.fingerprint)) {
                throw unprocessable("cert", existing->org_id == scope.org.id
                                                ? "has already been registered"
                                                : "is already registered by another organization");
            }
            if (db::ca_certificates::find(tx, scope.org.id, facts.serial)) {
                throw unprocessable("cert", "has the serial of another registered CA");
            }
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
            row.jitp = parse_jitp(tx, scope.org.id, body.value("jitp", nlohmann::json()));
            auto created = db::ca_certificates::create(tx, row);
            events::publish(tx, events::kTrustChanged, {{"ca_id", created.id}});
            spdlog::info("org={} registered CA serial={} ski={} jitp={}", scope.org.name,
                         created.serial, created.ski, created.jitp ? "yes" : "no");
            return http::Response::json(201, ca_json(created));
        });
    });

    router.add("GET", "/api/orgs/:org/ca_certificates/:serial", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            return http::Response::json(200, ca_json(require_ca(tx, scope, req.param("serial"))));
        });
    });

    auto update = [&ctx](http::Request& req) {
        // Who may call comes before what they sent: 401/404/403 before 400/422.
        authorize_first(ctx, req, Role::kManage);
        const auto body = unwrap(req.json_body(), "ca_certificate");
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kManage);
            auto ca = require_ca(tx, scope, req.param("serial"));
            bool active = ca.active;
            if (auto it = body.find("active"); it != body.end() && !it->is_null()) {
                if (!it->is_boolean()) throw unprocessable("active", "must be true or false");
                active = it->get<bool>();
            }
            if (auto status = optional_string(body, "status")) {
                if (*status != "active" && *status != "inactive") {
                    throw unprocessable("status", "must be active or inactive");
                }
                active = *status == "active";
            }
            const std::string description = optional_description(body, ca.description);
            std::optional<db::JitpProfile> jitp = ca.jitp;
            if (body.contains("jitp")) jitp = parse_jitp(tx, scope.org.id, body["jitp"]);
            auto updated = db::ca_certificates::update(tx, ca.id, active, description, jitp);
            events::publish(tx, events::kTrustChanged, {{"ca_id", ca.id}});
            if (ca.active && !active) {
                events::publish(tx, events::kSessionClose,
                                {{"ca_id", ca.id}, {"reason", "CA deactivated"}});
            }
            return http::Response::json(200, ca_json(updated));
        });
    };
    router.add("PUT", "/api/orgs/:org/ca_certificates/:serial", update);
    router.add("PATCH", "/api/orgs/:org/ca_certificates/:serial", update);

    router.add("DELETE", "/api/orgs/:org/ca_certificates/:serial", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kManage);
            auto ca = require_ca(tx, scope, req.param("serial"));
            db::ca_certificates::remove(tx, ca.id);
            events::publish(tx, events::kTrustChanged, {{"ca_id", ca.id}});
            events::publish(tx, events::kSessionClose,
                            {{"ca_id", ca.id}, {"reason", "CA deleted"}});
            return http::Response::no_content();
        });
    });
}

}  // namespace otahub::api
