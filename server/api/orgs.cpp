#include "db/repositories/accounts_repository.hpp"
#include "server/api/context.hpp"
#include "server/common/api_error.hpp"

namespace otahub::api {
namespace {

nlohmann::json org_json(const db::OrgRow& org) {
    return {{"name", org.name}, {"inserted_at", org.inserted_at}, {"updated_at", org.updated_at}};
}

nlohmann::json member_json(const db::MemberRow& member) {
    return {{"name", member.user.name},
            {"email", member.user.email},
            {"role", std::string(to_string(member.role))}};
}

Role required_role(const nlohmann::json& body) {
    auto text = required_string(body, "role");
    auto role = parse_role(text);
    if (!role) {
        throw ApiError(ErrorCode::kUnprocessable, "role must be admin, manage or view",
                       {{"role", {"is invalid"}}});
    }
    return *role;
}

void check_password(const std::string& password) {
    if (password.size() < 8 || password.size() > 1024) {
        throw ApiError(ErrorCode::kUnprocessable, "password must be 8 to 1024 characters",
                       {{"password", {"should be at least 8 character(s)"}}});
    }
}

}  // namespace

void register_org_routes(http::Router& router, ApiContext& ctx) {
    router.add("GET", "/api/orgs", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto principal = authenticate(tx, req);
            nlohmann::json list = nlohmann::json::array();
            for (const auto& [org, role] : db::accounts::orgs_of_user(tx, principal.user.id)) {
                auto item = org_json(org);
                item["role"] = std::string(to_string(role));
                list.push_back(std::move(item));
            }
            return http::Response::json(200, list);
        });
    });

    router.add("POST", "/api/orgs", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto principal = authenticate(tx, req);
            auto body = unwrap(req.json_body(), "org");
            auto name = required_string(body, "name");
            if (!valid_org_name(name)) {
                throw ApiError(ErrorCode::kUnprocessable,
                               "name must be 1-64 letters, digits, '_', '-' or '.'",
                               {{"name", {"has invalid format"}}});
            }
            if (db::accounts::find_org(tx, name)) {
                throw ApiError(ErrorCode::kConflict, "an org with that name already exists",
                               {{"name", {"has already been taken"}}});
            }
            auto org = db::accounts::create_org(tx, name);
            db::accounts::upsert_member(tx, org.id, principal.user.id, Role::kAdmin);
            auto data = org_json(org);
            data["role"] = std::string(to_string(Role::kAdmin));
            return http::Response::json(201, data);
        });
    });

    router.add("GET", "/api/orgs/:org", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto principal = authenticate(tx, req);
            auto scope = require_org(tx, principal, req.param("org"), Role::kView);
            auto data = org_json(scope.org);
            data["role"] = std::string(to_string(scope.role));
            return http::Response::json(200, data);
        });
    });

    router.add("GET", "/api/orgs/:org/users", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto principal = authenticate(tx, req);
            auto scope = require_org(tx, principal, req.param("org"), Role::kView);
            nlohmann::json list = nlohmann::json::array();
            for (const auto& member : db::accounts::members(tx, scope.org.id)) {
                list.push_back(member_json(member));
            }
            return http::Response::json(200, list);
        });
    });

    // Adds an existing user to the org; creates the user when a name and password are given.
    router.add("POST", "/api/orgs/:org/users", [&ctx](http::Request& req) {
        // Authorise before reading the body: hashing a password is expensive.
        ctx.db.run([&](db::Tx& tx) {
            require_org(tx, authenticate(tx, req), req.param("org"), Role::kAdmin);
        });
        auto body = unwrap(req.json_body(), "user");
        auto email = required_string(body, "email");
        auto role = required_role(body);
        auto name = optional_string(body, "name");
        auto password = optional_string(body, "password");
        std::string hash;
        if (password) {
            check_password(*password);
            hash = hash_password(*password);
        }
        return ctx.db.transact([&](db::Tx& tx) {
            auto principal = authenticate(tx, req);
            auto scope = require_org(tx, principal, req.param("org"), Role::kAdmin);
            auto user = db::accounts::find_user_by_email(tx, email);
            if (!user) {
                if (!password) {
                    throw ApiError(ErrorCode::kUnprocessable,
                                   "no user with that email; give name and password to create one",
                                   {{"email", {"does not exist"}}});
                }
                if (!valid_email(email)) {
                    throw ApiError(ErrorCode::kUnprocessable, "email is not a valid address",
                                   {{"email", {"has invalid format"}}});
                }
                user = db::accounts::create_user(tx, email, name.value_or(email), hash);
            }
            if (db::accounts::role_of(tx, scope.org.id, user->id)) {
                throw ApiError(ErrorCode::kConflict, "that user is already a member of the org",
                               {{"email", {"is already a member"}}});
            }
            db::accounts::upsert_member(tx, scope.org.id, user->id, role);
            return http::Response::json(201, member_json(db::MemberRow{*user, role}));
        });
    });

    router.add("PUT", "/api/orgs/:org/users/:email", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto principal = authenticate(tx, req);
            auto scope = require_org(tx, principal, req.param("org"), Role::kAdmin);
            auto role = required_role(unwrap(req.json_body(), "user"));
            auto member = db::accounts::member(tx, scope.org.id, req.param("email"));
            if (!member) throw ApiError(ErrorCode::kNotFound, "user not found in this org");
            if (member->role == Role::kAdmin && role != Role::kAdmin &&
                db::accounts::count_admins(tx, scope.org.id) <= 1) {
                throw ApiError(ErrorCode::kConflict, "an org must keep at least one admin");
            }
            db::accounts::upsert_member(tx, scope.org.id, member->user.id, role);
            member->role = role;
            return http::Response::json(200, member_json(*member));
        });
    });

    router.add("DELETE", "/api/orgs/:org/users/:email", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto principal = authenticate(tx, req);
            auto scope = require_org(tx, principal, req.param("org"), Role::kAdmin);
            auto member = db::accounts::member(tx, scope.org.id, req.param("email"));
            if (!member) throw ApiError(ErrorCode::kNotFound, "user not found in this org");
            if (member->role == Role::kAdmin && db::accounts::count_admins(tx, scope.org.id) <= 1) {
                throw ApiError(ErrorCode::kConflict, "an org must keep at least one admin");
            }
            db::accounts::remove_member(tx, scope.org.id, member->user.id);
            return http::Response::no_content();
        });
    });
}

}  // namespace otahub::api
