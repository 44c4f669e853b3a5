#include "db/repositories/keys_repository.hpp"
#include "server/api/context.hpp"
#include "server/common/api_error.hpp"
#include "server/domain/crypto.hpp"
#include "server/domain/firmware/fwup_archive.hpp"

namespace otahub::api {
namespace {

nlohmann::json key_json(const db::KeyRow& key) {
    return {{"name", key.name},
            {"key", key.key},
            {"scheme", "ed25519"},
            {"inserted_at", key.inserted_at},
            {"updated_at", key.updated_at}};
}

/// Key names appear in URLs: 1-255 printable characters without '/', '\\', '?' or '#'.
bool valid_key_name(std::string_view name) {
    if (name.empty() || name.size() > 255) return false;
    for (char c : name) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f || c == '/' || c == '\\' || c == '?' || c == '#') return false;
    }
    return true;
}

db::KeyRow require_key(db::Tx& tx, const OrgScope& scope, const std::string& name) {
    auto key = db::keys::find(tx, scope.org.id, name);
    if (!key) throw ApiError(ErrorCode::kNotFound, "signing key not found");
    return *key;
}

}  // namespace

void register_key_routes(http::Router& router, ApiContext& ctx) {
    router.add("GET", "/api/orgs/:org/keys", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            nlohmann::json list = nlohmann::json::array();
            for (const auto& key : db::keys::list(tx, scope.org.id)) list.push_back(key_json(key));
            return http::Response::json(200, list);
        });
    });

    router.add("POST", "/api/orgs/:org/keys", [&ctx](http::Request& req) {
        // Who may call comes before what they sent: 401/404/403 before 400/422.
        authorize_first(ctx, req, Role::kManage);
        auto body = unwrap(req.json_body(), "key");
        auto name = required_string(body, "name");
        if (!valid_key_name(name)) {
            throw ApiError(ErrorCode::kUnprocessable,
                           "name must be 1-255 printable characters without '/', '\\', '?' or '#'",
                           {{"name", {"has invalid format"}}});
        }
        auto text = required_string(body, "key");
        auto parsed = firmware::parse_public_key(text);
        if (!parsed) {
            throw ApiError(ErrorCode::kUnprocessable,
                           "key must be a base64 32-byte Ed25519 public key (fwup -g's .pub file)",
                           {{"key", {"is not a valid Ed25519 public key"}}});
        }
        auto scheme = optional_string(body, "scheme");
        if (scheme && *scheme != "ed25519") {
            throw ApiError(ErrorCode::kUnprocessable, "only the ed25519 scheme is supported",
                           {{"scheme", {"is invalid"}}});
        }
        // Stored canonically, so the same key written differently is still a duplicate.
        auto canonical = crypto::base64(
            std::string_view(reinterpret_cast<const char*>(parsed->data()), parsed->size()));
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kManage);
            for (const auto& existing : db::keys::list(tx, scope.org.id)) {
                if (existing.name == name) {
                    throw ApiError(ErrorCode::kConflict, "a key with that name already exists",
                                   {{"name", {"has already been taken"}}});
                }
                if (existing.key == canonical) {
                    throw ApiError(ErrorCode::kConflict,
                                   "this key is already registered as '" + existing.name + "'",
                                   {{"key", {"has already been taken"}}});
                }
            }
            return http::Response::json(
                201, key_json(db::keys::create(tx, scope.org.id, name, canonical)));
        });
    });

    router.add("GET", "/api/orgs/:org/keys/:name", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            return http::Response::json(200, key_json(require_key(tx, scope, req.param("name"))));
        });
    });

    router.add("DELETE", "/api/orgs/:org/keys/:name", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kManage);
            auto key = require_key(tx, scope, req.param("name"));
            auto used = db::keys::firmware_count(tx, key.id);
            if (used > 0) {
                throw ApiError(ErrorCode::kConflict,
                               "the key signed " + std::to_string(used) +
                                   " stored firmware(s); delete them first",
                               {{"key", {"is used by stored firmware"}}});
            }
            // The foreign key (RESTRICT) also turns a concurrent upload into a 409.
            db::keys::remove(tx, key.id);
            return http::Response::no_content();
        });
    });
}

}  // namespace otahub::api
