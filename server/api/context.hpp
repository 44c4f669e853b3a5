#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "db/database.hpp"
#include "db/repositories/accounts_repository.hpp"
#include "db/repositories/ca_certificates_repository.hpp"
#include "server/app/config.hpp"
#include "server/common/api_error.hpp"
#include "server/http/router.hpp"

namespace otahub::api {

/// What REST handlers need; owned by the App, outlives the router.
struct ApiContext {
    db::Database& db;
    const Config& config;
    /// Readiness probe beyond the database (listeners up, migrations current).
    std::function<std::optional<std::string>()> not_ready_reason;
};

/// The authenticated user of a request.
struct Principal {
    db::UserRow user;
};

/// The org a request is scoped to, and the caller's role there.
struct OrgScope {
    db::OrgRow org;
    Role role = Role::kView;
};

/// Reads the bearer token (`Authorization: Bearer t` or `token t`) and loads its user; 401 if
/// missing or unknown.
Principal authenticate(db::Tx& tx, const http::Request& request);

/// Loads the org named in the request for the principal: 404 when it does not exist or the
/// user is not a member (names do not leak), 403 when the role is below `minimum`.
OrgScope require_org(db::Tx& tx, const Principal& principal, const std::string& org_name,
                     Role minimum);

/// Authenticates and checks the org role in a short read transaction, for handlers that read
/// their body before their main transaction: who may call is answered (401/404/403) before
/// what they sent (400/422).
void authorize_first(ApiContext& ctx, const http::Request& request, Role minimum);

/// Body helpers: `{"key": {...}}` or the fields at the top level (NervesHub accepts both).
nlohmann::json unwrap(const nlohmann::json& body, const char* key);
/// A required non-empty string field, or a 422 naming it.
std::string required_string(const nlohmann::json& object, const char* field);
/// An optional string field (422 when present but not a string).
std::optional<std::string> optional_string(const nlohmann::json& object, const char* field);
/// A 422 for one field: "<field> <message>", with {"<field>": ["<message>"]} as field errors.
ApiError unprocessable(const std::string& field, const std::string& message);
/// The `jitp` object of a CA (null: none): product_name of a product of the org, tags,
/// description. 422 naming "jitp" when it is not valid.
std::optional<db::JitpProfile> parse_jitp(db::Tx& tx, std::int64_t org_id,
                                          const nlohmann::json& value);

/// Route registration, one function per resource file.
void register_health_routes(http::Router& router, ApiContext& ctx);
void register_user_routes(http::Router& router, ApiContext& ctx);
void register_org_routes(http::Router& router, ApiContext& ctx);
void register_product_routes(http::Router& router, ApiContext& ctx);
void register_key_routes(http::Router& router, ApiContext& ctx);
void register_firmware_routes(http::Router& router, ApiContext& ctx);
void register_ca_certificate_routes(http::Router& router, ApiContext& ctx);
void register_device_routes(http::Router& router, ApiContext& ctx);
void register_deployment_routes(http::Router& router, ApiContext& ctx);
void register_certificate_routes(http::Router& router, ApiContext& ctx);
void register_device_action_routes(http::Router& router, ApiContext& ctx);

}  // namespace otahub::api
