#include "server/api/products.hpp"
#include "db/repositories/products_repository.hpp"
#include "server/api/context.hpp"
#include "server/common/api_error.hpp"

namespace otahub::api {
namespace {

nlohmann::json product_json(const db::ProductRow& product) {
    return {{"name", product.name},
            {"inserted_at", product.inserted_at},
            {"updated_at", product.updated_at}};
}

std::string valid_name(const nlohmann::json& body) {
    auto name = required_string(body, "name");
    if (!valid_product_name(name)) {
        throw ApiError(ErrorCode::kUnprocessable,
                       "name must be 1-100 printable characters without '/', '\\', '?' or '#'",
                       {{"name", {"has invalid format"}}});
    }
    return name;
}

}  // namespace

db::ProductRow require_product(db::Tx& tx, const OrgScope& scope, const std::string& name) {
    auto product = db::products::find(tx, scope.org.id, name);
    if (!product) throw ApiError(ErrorCode::kNotFound, "product not found");
    return *product;
}

void register_product_routes(http::Router& router, ApiContext& ctx) {
    router.add("GET", "/api/orgs/:org/products", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            nlohmann::json list = nlohmann::json::array();
            for (const auto& product : db::products::list(tx, scope.org.id)) {
                list.push_back(product_json(product));
            }
            return http::Response::json(200, list);
        });
    });

    router.add("POST", "/api/orgs/:org/products", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kManage);
            auto name = valid_name(unwrap(req.json_body(), "product"));
            if (db::products::find(tx, scope.org.id, name)) {
                throw ApiError(ErrorCode::kConflict, "a product with that name already exists",
                               {{"name", {"has already been taken"}}});
            }
            return http::Response::json(201,
                                        product_json(db::products::create(tx, scope.org.id, name)));
        });
    });

    router.add("GET", "/api/orgs/:org/products/:product", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            return http::Response::json(
                200, product_json(require_product(tx, scope, req.param("product"))));
        });
    });

    auto update = [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kManage);
            auto name = valid_name(unwrap(req.json_body(), "product"));
            auto product = require_product(tx, scope, req.param("product"));
            if (name != product.name && db::products::find(tx, scope.org.id, name)) {
                throw ApiError(ErrorCode::kConflict, "a product with that name already exists",
                               {{"name", {"has already been taken"}}});
            }
            return http::Response::json(200,
                                        product_json(db::products::rename(tx, product.id, name)));
        });
    };
    router.add("PUT", "/api/orgs/:org/products/:product", update);
    router.add("PATCH", "/api/orgs/:org/products/:product", update);

    router.add("DELETE", "/api/orgs/:org/products/:product", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kManage);
            auto product = require_product(tx, scope, req.param("product"));
            db::products::remove(tx, product.id);
            return http::Response::no_content();
        });
    });
}

}  // namespace otahub::api
