#include "server/api/context.hpp"
#include "server/common/api_error.hpp"

namespace otahub::api {
namespace {

nlohmann::json user_json(const db::UserRow& user) {
    return {{"name", user.name}, {"email", user.email}};
}

}  // namespace

void register_user_routes(http::Router& router, ApiContext& ctx) {
    router.add("POST", "/api/users/auth", [&ctx](http::Request& req) {
        auto body = req.json_body();
        auto email = required_string(body, "email");
        auto password = required_string(body, "password");
        auto note = optional_string(body, "note").value_or("");
        if (note.size() > 200) note.resize(200);
        auto user = ctx.db.transact(
            [&](db::Tx& tx) { return db::accounts::find_user_by_email(tx, email); });
        // The hash runs either way so a wrong e-mail costs as much as a wrong password.
        static const std::string kDummyHash = hash_password("otahub-timing-equaliser");
        bool ok = verify_password(password, user ? user->password_hash : kDummyHash) && user;
        if (!ok) throw ApiError(ErrorCode::kUnauthorized, "invalid email or password");
        std::string token = generate_token();
        ctx.db.run([&](db::Tx& tx) {
            db::accounts::create_token(tx, user->id, token_digest(token), note);
        });
        auto data = user_json(*user);
        data["token"] = token;
        return http::Response::json(200, data);
    });
    // NervesHub's deprecated alias.
    router.add("POST", "/api/users/login", [&router](http::Request& req) {
        auto match = router.match("POST", "/api/users/auth");
        return router.dispatch(req, match);
    });

    router.add("GET", "/api/users/me", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto principal = authenticate(tx, req);
            return http::Response::json(200, user_json(principal.user));
        });
    });
}

}  // namespace otahub::api
