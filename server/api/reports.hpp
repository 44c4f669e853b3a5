#pragma once

#include "server/api/context.hpp"
#include "server/http/router.hpp"

namespace otahub::api {

/// GET /api/orgs/:org/reports/certificates and GET /api/orgs/:org/handshake_refusals.
void register_report_routes(http::Router& router, ApiContext& ctx);

}  // namespace otahub::api
