#pragma once

#include <optional>
#include <string>

#include "server/api/context.hpp"
#include "server/http/router.hpp"

namespace otahub::api {

/// What the generic audit row of a mutating route is: its resource type, its action name and the
/// route parameter naming its target (empty: the target comes from the response).
struct RouteAudit {
    std::string resource_type;
    std::string action;
    std::string target_param;
};

/// The audit description of a route, or nullopt when the route does not mutate anything (GET,
/// HEAD, read-only POSTs such as a deployment preview, routes outside /api/).
std::optional<RouteAudit> describe_route(const std::string& method, const std::string& pattern);

/// GET /api/orgs/:org/audit_logs, and the router observer that records one audit row for every
/// successful mutating request under /api/ whose handler did not record its own (same request
/// id): a new route cannot be forgotten.
void register_audit_routes(http::Router& router, ApiContext& ctx);

/// Bounded optional query parameter (400 when malformed).
std::optional<std::int64_t> int_query(const http::Request& req, const std::string& name,
                                      std::int64_t min, std::int64_t max);
/// An optional non-empty text query parameter.
std::optional<std::string> text_query(const http::Request& req, const std::string& name);
/// An optional ISO-8601 date or date-time query parameter (400 when malformed).
std::optional<std::string> time_query(const http::Request& req, const std::string& name);

}  // namespace otahub::api
