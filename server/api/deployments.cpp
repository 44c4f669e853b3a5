#include <chrono>
#include <limits>

#include "db/repositories/deployments_repository.hpp"
#include "db/repositories/firmwares_repository.hpp"
#include "db/repositories/rollouts_repository.hpp"
#include "server/api/context.hpp"
#include "server/api/products.hpp"
#include "server/common/api_error.hpp"
#include "server/domain/resolution.hpp"
#include "server/events/event_bus.hpp"
#include "server/rollout/facts.hpp"
#include "server/rollout/rollout_engine.hpp"

namespace otahub::api {
namespace {

using rollout::facts_of;

using resolution::Clock;

constexpr std::size_t kPreviewListLimit = 1000;

ApiError invalid(const std::string& field, const std::string& message) {
    return ApiError(ErrorCode::kUnprocessable, field + " " + message, {{field, {message}}});
}

nlohmann::json deployment_json(const db::DeploymentRow& d) {
    return {{"id", d.id},
            {"name", d.name},
            {"is_active", d.is_active},
            {"state", d.is_active ? "on" : "off"},
            {"firmware_uuid", d.firmware_uuid},
            {"firmware_version", d.firmware_version},
            {"platform", d.platform},
            {"architecture", d.architecture},
            {"conditions",
             {{"version", d.conditions_version},
              {"tags", d.conditions_tags},
              {"tag_operator", d.tag_operator}}},
            {"concurrent_updates", d.concurrent_updates},
            {"inflight_update_expiration_minutes", d.inflight_update_expiration_minutes},
            {"device_failure_threshold", d.device_failure_threshold},
            {"device_failure_rate_amount", d.device_failure_rate_amount},
            {"device_failure_rate_seconds", d.device_failure_rate_seconds},
            {"penalty_timeout_minutes", d.penalty_timeout_minutes},
            {"failure_threshold", d.failure_threshold},
            {"failed_updates", d.failed_updates},
            {"paused_reason", d.paused_reason ? nlohmann::json(*d.paused_reason) : nullptr},
            {"notes", d.notes},
            {"inserted_at", d.inserted_at},
            {"updated_at", d.updated_at}};
}

void read_int(const nlohmann::json& body, const char* field, int min, int max, int& out) {
    auto it = body.find(field);
    if (it == body.end() || it->is_null()) return;
    if (!it->is_number_integer()) throw invalid(field, "must be a whole number");
    auto value = it->get<std::int64_t>();
    if (value < min || value > max) {
        throw invalid(field, "must be from " + std::to_string(min) + " to " + std::to_string(max));
    }
    out = static_cast<int>(value);
}

/// Applies the fields present in `body` onto `fields` (defaults for create, the stored row for
/// update) and returns the firmware uuid asked for, if any.
std::optional<std::string> apply_body(const nlohmann::json& body, db::DeploymentFields& fields) {
    if (auto name = optional_string(body, "name")) {
        if (name->empty() || name->size() > 100 || name->find('/') != std::string::npos) {
            throw invalid("name", "must be 1-100 characters without '/'");
        }
        fields.name = *name;
    }
    std::optional<std::string> firmware;
    for (const char* key : {"firmware", "firmware_uuid"}) {
        if (auto value = optional_string(body, key)) firmware = *value;
    }
    if (auto it = body.find("conditions"); it != body.end() && !it->is_null()) {
        if (!it->is_object()) throw invalid("conditions", "must be an object");
        const auto& conditions = *it;
        if (auto version = optional_string(conditions, "version")) {
            if (!resolution::is_valid_requirement(*version)) {
                throw invalid("conditions", "has an invalid version requirement: " + *version);
            }
            fields.conditions_version = *version;
        }
        if (auto tags = conditions.find("tags"); tags != conditions.end() && !tags->is_null()) {
            if (!tags->is_array()) throw invalid("conditions", "tags must be a list of strings");
            std::vector<std::string> list;
            for (const auto& tag : *tags) {
                if (!tag.is_string() || tag.get<std::string>().empty() ||
                    tag.get<std::string>().size() > 100) {
                    throw invalid("conditions", "tags must be non-empty strings");
                }
                list.push_back(tag.get<std::string>());
            }
            fields.conditions_tags = std::move(list);
        }
        if (auto op = optional_string(conditions, "tag_operator")) {
            if (!resolution::parse_tag_operator(*op)) {
                throw invalid("conditions", "tag_operator must be \"and\" or \"or\"");
            }
            fields.tag_operator = *op;
        }
    }
    if (auto it = body.find("is_active"); it != body.end() && !it->is_null()) {
        if (!it->is_boolean()) throw invalid("is_active", "must be true or false");
        fields.is_active = it->get<bool>();
    }
    if (auto state = optional_string(body, "state")) {
        if (*state != "on" && *state != "off") throw invalid("state", "must be \"on\" or \"off\"");
        fields.is_active = *state == "on";
    }
    read_int(body, "concurrent_updates", 0, 1000000, fields.concurrent_updates);
    read_int(body, "inflight_update_expiration_minutes", 1, 525600,
             fields.inflight_update_expiration_minutes);
    read_int(body, "device_failure_threshold", 1, 1000000, fields.device_failure_threshold);
    read_int(body, "device_failure_rate_amount", 1, 1000000, fields.device_failure_rate_amount);
    read_int(body, "device_failure_rate_seconds", 1, 31536000, fields.device_failure_rate_seconds);
    read_int(body, "penalty_timeout_minutes", 1, 525600, fields.penalty_timeout_minutes);
    read_int(body, "failure_threshold", 1, 100000000, fields.failure_threshold);
    if (auto notes = optional_string(body, "notes")) {
        if (notes->size() > 10000) throw invalid("notes", "must be at most 10000 characters");
        fields.notes = *notes;
    }
    return firmware;
}

/// The product's firmware with that uuid, or a 422 naming the problem.
db::FirmwareRow resolve_firmware(db::Tx& tx, const OrgScope& scope, const db::ProductRow& product,
                                 const std::string& uuid) {
    if (auto firmware = db::firmwares::find(tx, product.id, uuid)) return *firmware;
    if (db::firmwares::find_in_org(tx, scope.org.id, uuid)) {
        throw invalid("firmware", "belongs to another product");
    }
    throw invalid("firmware", "does not exist: " + uuid);
}

/// Tells every node to re-evaluate the product's connected devices (inside `tx`).
void publish_changed(db::Tx& tx, const db::DeploymentRow& d) {
    events::publish(tx, rollout::kDeploymentChanged,
                    {{"product_id", d.product_id}, {"deployment_id", d.id}});
}

/// The deployment with its update counts.
nlohmann::json with_counts(db::Tx& tx, const db::DeploymentRow& d) {
    auto json = deployment_json(d);
    const auto counts = db::rollouts::counts(tx, d.id);
    json["counts"] = {{"in_flight", counts.in_flight},
                      {"succeeded", counts.succeeded},
                      {"failed", counts.failed}};
    return json;
}

/// Which devices of the product resolve to `target` (by id) among `deployments`, and which of
/// those are eligible now.
nlohmann::json preview(db::Tx& tx, std::int64_t product_id,
                       const std::vector<resolution::DeploymentFacts>& deployments,
                       std::int64_t target) {
    auto compiled = resolution::compile(deployments);
    auto now = Clock::now();
    std::size_t matching = 0;
    std::size_t eligible = 0;
    nlohmann::json devices = nlohmann::json::array();
    for (const auto& device : db::deployments::devices_of_product(tx, product_id)) {
        auto result = resolution::resolve(facts_of(device), compiled, now);
        if (!result.deployment_id || *result.deployment_id != target) continue;
        ++matching;
        if (result.eligibility.eligible) ++eligible;
        if (devices.size() < kPreviewListLimit) {
            devices.push_back({{"identifier", device.identifier},
                               {"eligible", result.eligibility.eligible},
                               {"reason", result.eligibility.reason}});
        }
    }
    return {{"matching_devices", matching},
            {"eligible_devices", eligible},
            {"devices", devices},
            {"devices_truncated", matching > devices.size()}};
}

}  // namespace

void register_deployment_routes(http::Router& router, ApiContext& ctx) {
    const std::string base = "/api/orgs/:org/products/:product/deployments";

    router.add("GET", base, [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            auto product = require_product(tx, scope, req.param("product"));
            nlohmann::json list = nlohmann::json::array();
            for (const auto& d : db::deployments::list(tx, product.id)) {
                list.push_back(with_counts(tx, d));
            }
            return http::Response::json(200, list);
        });
    });

    router.add("POST", base, [&ctx](http::Request& req) {
        // Who may call comes before what they sent: 401/404/403 before 400/422.
        authorize_first(ctx, req, Role::kManage);
        auto body = unwrap(req.json_body(), "deployment");
        db::DeploymentFields fields;
        auto firmware_uuid = apply_body(body, fields);
        if (fields.name.empty()) throw invalid("name", "can't be blank");
        if (!firmware_uuid) throw invalid("firmware", "can't be blank");
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kManage);
            auto product = require_product(tx, scope, req.param("product"));
            fields.firmware_id = resolve_firmware(tx, scope, product, *firmware_uuid).id;
            if (db::deployments::find(tx, product.id, fields.name)) {
                throw ApiError(ErrorCode::kConflict, "a deployment with that name already exists",
                               {{"name", {"has already been taken"}}});
            }
            auto created = db::deployments::create(tx, scope.org.id, product.id, fields);
            publish_changed(tx, created);
            return http::Response::json(201, with_counts(tx, created));
        });
    });

    // A draft posted before creation: which devices would match and be eligible.
    router.add("POST", base + "/preview", [&ctx](http::Request& req) {
        // Who may call comes before what they sent: 401/404/403 before 400/422.
        authorize_first(ctx, req, Role::kView);
        auto body = unwrap(req.json_body(), "deployment");
        db::DeploymentFields fields;
        fields.is_active = true;  // a draft is previewed as if it were switched on
        auto firmware_uuid = apply_body(body, fields);
        if (!firmware_uuid) throw invalid("firmware", "can't be blank");
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            auto product = require_product(tx, scope, req.param("product"));
            auto firmware = resolve_firmware(tx, scope, product, *firmware_uuid);
            std::vector<resolution::DeploymentFacts> all;
            for (const auto& d : db::deployments::list(tx, product.id)) {
                if (d.name != fields.name) all.push_back(facts_of(d));
            }
            // The draft has no id yet; the largest id cannot collide with a stored one, and as the
            // newest it loses ties to every existing deployment, as it will once created.
            resolution::DeploymentFacts draft;
            draft.id = std::numeric_limits<std::int64_t>::max();
            draft.name = fields.name.empty() ? "(draft)" : fields.name;
            draft.product_id = product.id;
            draft.is_active = fields.is_active;
            draft.firmware_uuid = firmware.uuid;
            draft.firmware_version = firmware.version;
            draft.platform = firmware.platform;
            draft.architecture = firmware.architecture;
            draft.version_requirement = fields.conditions_version;
            draft.tags = fields.conditions_tags;
            draft.tag_operator = resolution::parse_tag_operator(fields.tag_operator)
                                     .value_or(resolution::TagOperator::kAnd);
            all.push_back(draft);
            return http::Response::json(200, preview(tx, product.id, all, draft.id));
        });
    });

    router.add("GET", base + "/:name", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            auto product = require_product(tx, scope, req.param("product"));
            auto d = db::deployments::find(tx, product.id, req.param("name"));
            if (!d) throw ApiError(ErrorCode::kNotFound, "deployment not found");
            auto json = with_counts(tx, *d);
            // Matching devices: those the deployment wins today, whatever their state.
            std::vector<resolution::DeploymentFacts> all;
            for (const auto& other : db::deployments::list(tx, product.id)) {
                all.push_back(facts_of(other));
            }
            auto resolved = preview(tx, product.id, all, d->id);
            json["counts"]["matching_devices"] = resolved["matching_devices"];
            json["counts"]["eligible_devices"] = resolved["eligible_devices"];
            return http::Response::json(200, json);
        });
    });

    router.add("GET", base + "/:name/preview", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            auto product = require_product(tx, scope, req.param("product"));
            auto stored = db::deployments::list(tx, product.id);
            std::optional<std::int64_t> target;
            std::vector<resolution::DeploymentFacts> all;
            for (const auto& d : stored) {
                all.push_back(facts_of(d));
                if (d.name == req.param("name")) target = d.id;
            }
            if (!target) throw ApiError(ErrorCode::kNotFound, "deployment not found");
            return http::Response::json(200, preview(tx, product.id, all, *target));
        });
    });

    auto update = [&ctx](http::Request& req) {
        // Who may call comes before what they sent: 401/404/403 before 400/422.
        authorize_first(ctx, req, Role::kManage);
        auto body = unwrap(req.json_body(), "deployment");
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kManage);
            auto product = require_product(tx, scope, req.param("product"));
            auto d = db::deployments::find(tx, product.id, req.param("name"));
            if (!d) throw ApiError(ErrorCode::kNotFound, "deployment not found");
            db::DeploymentFields fields{d->name,
                                        d->firmware_id,
                                        d->conditions_version,
                                        d->conditions_tags,
                                        d->tag_operator,
                                        d->is_active,
                                        d->concurrent_updates,
                                        d->inflight_update_expiration_minutes,
                                        d->device_failure_threshold,
                                        d->device_failure_rate_amount,
                                        d->device_failure_rate_seconds,
                                        d->penalty_timeout_minutes,
                                        d->failure_threshold,
                                        d->notes};
            auto firmware_uuid = apply_body(body, fields);
            if (firmware_uuid)
                fields.firmware_id = resolve_firmware(tx, scope, product, *firmware_uuid).id;
            if (fields.name != d->name && db::deployments::find(tx, product.id, fields.name)) {
                throw ApiError(ErrorCode::kConflict, "a deployment with that name already exists",
                               {{"name", {"has already been taken"}}});
            }
            auto updated = db::deployments::update(tx, d->id, fields);
            publish_changed(tx, updated);
            return http::Response::json(200, with_counts(tx, updated));
        });
    };
    router.add("PUT", base + "/:name", update);
    router.add("PATCH", base + "/:name", update);

    router.add("DELETE", base + "/:name", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kManage);
            auto product = require_product(tx, scope, req.param("product"));
            auto d = db::deployments::find(tx, product.id, req.param("name"));
            if (!d) throw ApiError(ErrorCode::kNotFound, "deployment not found");
            db::deployments::remove(tx, d->id);
            // Updates in flight for it stay in the history; their slots no longer matter.
            publish_changed(tx, *d);
            return http::Response::no_content();
        });
    });

    // Explain: which deployment a device resolves to and why every other one does not apply.
    router.add(
        "GET", "/api/orgs/:org/products/:product/devices/:identifier/resolution",
        [&ctx](http::Request& req) {
            return ctx.db.transact([&](db::Tx& tx) {
                auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
                auto product = require_product(tx, scope, req.param("product"));
                auto device = db::deployments::device(tx, product.id, req.param("identifier"));
                if (!device) throw ApiError(ErrorCode::kNotFound, "device not found");
                auto stored = db::deployments::list(tx, product.id);
                std::vector<resolution::DeploymentFacts> all;
                for (const auto& d : stored) all.push_back(facts_of(d));
                auto result = resolution::resolve(facts_of(*device), all, Clock::now());
                nlohmann::json explanations = nlohmann::json::array();
                for (const auto& e : result.explanations) {
                    explanations.push_back(
                        {{"deployment", e.deployment_name},
                         {"verdict", std::string(resolution::to_string(e.verdict))},
                         {"exclusion",
                          e.exclusion == resolution::Exclusion::kNone
                              ? nlohmann::json(nullptr)
                              : nlohmann::json(std::string(resolution::to_string(e.exclusion)))},
                         {"blocker",
                          e.blocker == resolution::Blocker::kNone
                              ? nlohmann::json(nullptr)
                              : nlohmann::json(std::string(resolution::to_string(e.blocker)))},
                         {"reason", e.reason}});
                }
                nlohmann::json chosen = nullptr;
                if (result.chosen) {
                    const auto& d = stored[*result.chosen];
                    chosen = {{"name", d.name},
                              {"firmware_uuid", d.firmware_uuid},
                              {"firmware_version", d.firmware_version}};
                }
                return http::Response::json(200, {{"identifier", device->identifier},
                                                  {"deployment", chosen},
                                                  {"eligible", result.eligibility.eligible},
                                                  {"reason", result.eligibility.reason},
                                                  {"deployments", explanations}});
            });
        });
}

}  // namespace otahub::api
