#include "server/api/context.hpp"
#include "server/common/api_error.hpp"

namespace otahub::api {

Principal authenticate(db::Tx& tx, const http::Request& request) {
    auto header = request.header("authorization");
    if (!header) throw ApiError(ErrorCode::kUnauthorized, "missing Authorization header");
    std::string_view value = *header;
    std::string_view token;
    for (std::string_view scheme : {"Bearer ", "bearer ", "token ", "Token "}) {
        if (value.substr(0, scheme.size()) == scheme) token = value.substr(scheme.size());
    }
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    if (token.empty() || token.size() > 512) {
        throw ApiError(ErrorCode::kUnauthorized, "expected 'Authorization: Bearer <token>'");
    }
    auto user = db::accounts::user_for_token(tx, token_digest(token));
    if (!user) throw ApiError(ErrorCode::kUnauthorized, "invalid or revoked token");
    return Principal{std::move(*user)};
}

OrgScope require_org(db::Tx& tx, const Principal& principal, const std::string& org_name,
                     Role minimum) {
    auto org = db::accounts::find_org(tx, org_name);
    std::optional<Role> role;
    if (org) role = db::accounts::role_of(tx, org->id, principal.user.id);
    if (!org || !role) throw ApiError(ErrorCode::kNotFound, "org not found");
    if (static_cast<int>(*role) < static_cast<int>(minimum)) {
        throw ApiError(ErrorCode::kForbidden,
                       "this requires the " + std::string(to_string(minimum)) + " role in " +
                           org->name + "; you have " + std::string(to_string(*role)));
    }
    return OrgScope{std::move(*org), *role};
}

void authorize_first(ApiContext& ctx, const http::Request& request, Role minimum) {
    ctx.db.transact([&](db::Tx& tx) {
        require_org(tx, authenticate(tx, request), request.param("org"), minimum);
        return 0;
    });
}

nlohmann::json unwrap(const nlohmann::json& body, const char* key) {
    auto it = body.find(key);
    if (it != body.end() && it->is_object()) return *it;
    return body;
}

std::string required_string(const nlohmann::json& object, const char* field) {
    auto it = object.find(field);
    if (it == object.end() || it->is_null()) {
        throw ApiError(ErrorCode::kUnprocessable, std::string(field) + " is required",
                       {{field, {"can't be blank"}}});
    }
    if (!it->is_string()) {
        throw ApiError(ErrorCode::kUnprocessable, std::string(field) + " must be a string",
                       {{field, {"must be a string"}}});
    }
    auto value = it->get<std::string>();
    if (value.empty()) {
        throw ApiError(ErrorCode::kUnprocessable, std::string(field) + " is required",
                       {{field, {"can't be blank"}}});
    }
    return value;
}

std::optional<std::string> optional_string(const nlohmann::json& object, const char* field) {
    auto it = object.find(field);
    if (it == object.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) {
        throw ApiError(ErrorCode::kUnprocessable, std::string(field) + " must be a string",
                       {{field, {"must be a string"}}});
    }
    return it->get<std::string>();
}

ApiError unprocessable(const std::string& field, const std::string& message) {
    return ApiError{ErrorCode::kUnprocessable, field + " " + message,
                    nlohmann::json{{field, nlohmann::json::array({message})}}};
}

}  // namespace otahub::api
