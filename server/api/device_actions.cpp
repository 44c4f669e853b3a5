// Operator actions on one device that reach it over its live session (upgrade, reboot,
// identify), its penalty box, and its update history.
#include "db/repositories/audit_repository.hpp"
#include "db/repositories/devices_repository.hpp"
#include "db/repositories/firmwares_repository.hpp"
#include "db/repositories/rollouts_repository.hpp"
#include "server/api/context.hpp"
#include "server/api/products.hpp"
#include "server/common/api_error.hpp"
#include "server/events/event_bus.hpp"
#include "server/rollout/rollout_engine.hpp"

namespace otahub::api {
namespace {

constexpr int kManualExpirationMinutes = 60;
constexpr int kHistoryLimit = 100;

struct Target {
    Principal principal;
    OrgScope scope;
    db::ProductRow product;
    db::DeviceRow device;
};

Target require_target(db::Tx& tx, const http::Request& req, Role minimum) {
    auto principal = authenticate(tx, req);
    auto scope = require_org(tx, principal, req.param("org"), minimum);
    auto product = require_product(tx, scope, req.param("product"));
    auto device = db::devices::find(tx, scope.org.id, req.param("identifier"));
    if (!device || device->product_id != product.id) {
        throw ApiError(ErrorCode::kNotFound, "device not found");
    }
    return Target{std::move(principal), std::move(scope), std::move(product), std::move(*device)};
}

void audit(db::Tx& tx, const Target& t, const std::string& action, nlohmann::json details,
           const http::Request& req) {
    db::AuditEntry entry;
    entry.org_id = t.scope.org.id;
    entry.actor_type = "user";
    entry.actor = t.principal.user.email;
    entry.action = action;
    entry.resource_type = "device";
    entry.resource = t.device.identifier;
    entry.details = std::move(details);
    if (!req.request_id.empty()) entry.request_id = req.request_id;
    db::audit::record(tx, entry);
}

nlohmann::json update_json(const db::DeviceUpdateRow& u) {
    auto opt = [](const auto& value) {
        return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
    };
    return {{"id", u.id},
            {"deployment", opt(u.deployment_name)},
            {"deployment_id", opt(u.deployment_id)},
            {"firmware_uuid", u.firmware_uuid},
            {"firmware_version", u.firmware_version},
            {"source", u.source},
            {"status", u.status},
            {"reason", opt(u.reason)},
            {"progress", opt(u.progress)},
            {"started_at", u.started_at},
            {"expires_at", u.expires_at},
            {"finished_at", opt(u.finished_at)}};
}

/// Pushes `event` (no payload) to the device through whichever node holds its session.
http::Response push_simple(ApiContext& ctx, http::Request& req, const char* event) {
    return ctx.db.transact([&](db::Tx& tx) {
        auto t = require_target(tx, req, Role::kManage);
        if (!t.device.online) {
            throw ApiError(ErrorCode::kConflict, "the device is not connected");
        }
        events::publish(
            tx, events::kDevicePush,
            {{"device_id", t.device.id}, {"event", event}, {"payload", nlohmann::json::object()}});
        audit(tx, t, std::string("device.") + event, nlohmann::json::object(), req);
        return http::Response::json(200, {{"identifier", t.device.identifier}, {"sent", event}});
    });
}

}  // namespace

void register_device_action_routes(http::Router& router, ApiContext& ctx) {
    const std::string base = "/api/orgs/:org/products/:product/devices/:identifier";

    // Manual push of one firmware (NervesHub's "push update"): turns automatic updates off
    // for the device. An offline device gets it on its next join.
    router.add("POST", base + "/upgrade", [&ctx](http::Request& req) {
        authorize_first(ctx, req, Role::kManage);
        const auto body = unwrap(req.json_body(), "upgrade");
        std::string uuid;
        if (auto it = body.find("uuid"); it != body.end() && it->is_string()) {
            uuid = it->get<std::string>();
        } else {
            uuid = required_string(body, "firmware");
        }
        return ctx.db.transact([&](db::Tx& tx) {
            auto t = require_target(tx, req, Role::kManage);
            auto firmware = db::firmwares::find(tx, t.product.id, uuid);
            if (!firmware) {
                throw ApiError(ErrorCode::kUnprocessable,
                               "uuid is not a firmware of product " + t.product.name,
                               {{"uuid", {"does not exist"}}});
            }
            auto cancelled = db::rollouts::start_manual(
                tx, t.scope.org.id, t.device.id, firmware->id, firmware->uuid, firmware->version,
                kManualExpirationMinutes);
            if (cancelled && cancelled->deployment_id) rollout::publish_wake(tx, t.product.id);
            events::publish(tx, rollout::kRolloutPush, {{"device_id", t.device.id}});
            audit(tx, t, "device.upgrade", {{"firmware_uuid", firmware->uuid}}, req);
            auto current = db::rollouts::in_flight(tx, t.device.id);
            return http::Response::json(
                202, {{"identifier", t.device.identifier},
                      {"online", t.device.online},
                      {"updates_enabled", false},
                      {"update", current ? update_json(*current) : nlohmann::json(nullptr)}});
        });
    });

    router.add("POST", base + "/reboot",
               [&ctx](http::Request& req) { return push_simple(ctx, req, "reboot"); });
    router.add("POST", base + "/identify",
               [&ctx](http::Request& req) { return push_simple(ctx, req, "identify"); });

    router.add("DELETE", base + "/penalty", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto t = require_target(tx, req, Role::kManage);
            db::rollouts::clear_penalty(tx, t.device.id);
            events::publish(tx, events::kDeviceChanged,
                            {{"device_id", t.device.id},
                             {"org_id", t.device.org_id},
                             {"product_id", t.device.product_id},
                             {"action", "penalty_cleared"}});
            audit(tx, t, "device.penalty_cleared", nlohmann::json::object(), req);
            return http::Response::no_content();
        });
    });

    router.add("GET", base + "/updates", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto t = require_target(tx, req, Role::kView);
            nlohmann::json list = nlohmann::json::array();
            for (const auto& u : db::rollouts::history(tx, t.device.id, kHistoryLimit)) {
                list.push_back(update_json(u));
            }
            return http::Response::json(200, list);
        });
    });
}

}  // namespace otahub::api
