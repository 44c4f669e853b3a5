#pragma once

#include "db/repositories/products_repository.hpp"
#include "server/api/context.hpp"

namespace otahub::api {

/// The product named in a URL within the org scope, or 404.
db::ProductRow require_product(db::Tx& tx, const OrgScope& scope, const std::string& name);

}  // namespace otahub::api
