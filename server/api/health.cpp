#include "server/api/context.hpp"

namespace otahub::api {

void register_health_routes(http::Router& router, ApiContext& ctx) {
    router.add("GET", "/healthz", [](http::Request&) {
        return http::Response::json(200, {{"status", "ok"}}, false);
    });
    router.add("GET", "/readyz", [&ctx](http::Request&) {
        std::optional<std::string> reason;
        if (!ctx.db.ping()) {
            reason = "database unreachable";
        } else if (ctx.not_ready_reason) {
            reason = ctx.not_ready_reason();
        }
        if (reason) return http::Response::json(503, {{"status", "unavailable"}, {"reason", *reason}}, false);
        return http::Response::json(200, {{"status", "ok"}}, false);
    });
}

}  // namespace otahub::api
