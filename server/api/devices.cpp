// Devices and device certificates (NervesHub's /products/:product/devices API).
#include <spdlog/spdlog.h>

#include <charconv>

#include "db/repositories/devices_repository.hpp"
#include "server/api/context.hpp"
#include "server/api/products.hpp"
#include "server/common/api_error.hpp"
#include "server/device/rotation.hpp"
#include "server/domain/pki/certificate.hpp"
#include "server/events/event_bus.hpp"

namespace otahub::api {
namespace {

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 500;

nlohmann::json opt(const std::optional<std::string>& value) {
    return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

std::string connection_status(const db::DeviceRow& device) {
    if (device.online) return "connected";
    return device.connected_at ? "disconnected" : "not_seen";
}

nlohmann::json device_json(const db::DeviceRow& d) {
    nlohmann::json update_status = nullptr;
    if (d.update_status || d.update_progress) {
        update_status = {{"status", opt(d.update_status)},
                         {"reason", opt(d.update_status_reason)},
                         {"at", opt(d.update_status_at)},
                         {"progress", d.update_progress ? nlohmann::json(*d.update_progress)
                                                        : nlohmann::json(nullptr)},
                         {"stage", opt(d.update_stage)}};
    }
    return {{"identifier", d.identifier},
            {"description", d.description},
            {"tags", d.tags},
            {"online", d.online},
            {"node", opt(d.node)},
            {"connection_status", connection_status(d)},
            {"last_communication", opt(d.last_seen_at)},
            {"connected_at", opt(d.connected_at)},
            {"first_seen_at", opt(d.first_seen_at)},
            {"firmware_metadata", d.firmware_metadata},
            {"version", opt(d.version)},
            {"firmware_uuid", opt(d.firmware_uuid)},
            {"platform", opt(d.platform)},
            {"architecture", opt(d.architecture)},
            {"device_api_version", opt(d.device_api_version)},
            {"firmware_validation_status", d.firmware_validation_status},
            {"firmware_auto_revert_detected", d.firmware_auto_revert_detected},
            {"connection_types", d.connection_types},
            {"network_interface", opt(d.network_interface)},
            {"update_status", update_status},
            {"updates_enabled", d.updates_enabled},
            {"updates_blocked_until", opt(d.updates_blocked_until)},
            {"disabled", d.disabled},
            {"deleted", d.deleted},
            {"org_name", d.org_name},
            {"product_name", d.product_name},
            {"inserted_at", d.inserted_at},
            {"updated_at", d.updated_at}};
}

nlohmann::json certificate_json(const db::DeviceCertificateRow& c) {
    return {{"serial", c.serial},
            {"aki", opt(c.aki)},
            {"ski", opt(c.ski)},
            {"not_before", c.not_before},
            {"not_after", c.not_after},
            {"fingerprint", c.fingerprint},
            {"public_key_fingerprint", c.public_key_fingerprint},
            {"last_used", opt(c.last_used_at)},
            {"inserted_at", c.inserted_at}};
}

bool valid_identifier(std::string_view id) {
    if (id.empty() || id.size() > 255) return false;
    for (unsigned char c : id) {
        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\' || c == '?' || c == '#') return false;
    }
    return id.front() != ' ' && id.back() != ' ';
}

std::vector<std::string> body_tags(const nlohmann::json& body) {
    std::vector<std::string> tags;
    auto it = body.find("tags");
    if (it == body.end() || it->is_null()) return tags;
    if (it->is_string()) {
        // NervesHub's forms send "a,b"; accept it.
        std::string_view text = it->get_ref<const std::string&>();
        std::size_t start = 0;
        while (start <= text.size()) {
            auto end = text.find(',', start);
            if (end == std::string_view::npos) end = text.size();
            auto tag = text.substr(start, end - start);
            while (!tag.empty() && tag.front() == ' ') tag.remove_prefix(1);
            while (!tag.empty() && tag.back() == ' ') tag.remove_suffix(1);
            if (!tag.empty()) tags.emplace_back(tag);
            start = end + 1;
        }
        return tags;
    }
    if (!it->is_array()) throw unprocessable("tags", "must be a list of strings");
    for (const auto& tag : *it) {
        if (!tag.is_string() || tag.get<std::string>().empty() ||
            tag.get<std::string>().size() > 255) {
            throw unprocessable("tags", "must be a list of non-empty strings");
        }
        tags.push_back(tag.get<std::string>());
    }
    return tags;
}

std::optional<bool> optional_bool(const nlohmann::json& body, const char* field) {
    auto it = body.find(field);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean()) throw unprocessable(field, "must be true or false");
    return it->get<bool>();
}

std::string description_of(const nlohmann::json& body, const std::string& fallback) {
    auto description = optional_string(body, "description");
    if (description && description->size() > 1000) {
        throw unprocessable("description", "must be at most 1000 characters");
    }
    return description.value_or(fallback);
}

// A query parameter by plain name or NervesHub's nested form (`filters[tag]`,
// `pagination[page]`).
std::optional<std::string> query_value(const http::Request& req, const std::string& name,
                                       const std::string& nested) {
    if (auto v = req.query_param(name)) return v;
    return req.query_param(nested + "[" + name + "]");
}

int int_param(const http::Request& req, const std::string& name, int fallback, int min, int max) {
    auto text = query_value(req, name, "pagination");
    if (!text || text->empty()) return fallback;
    int value = 0;
    auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
    if (ec != std::errc{} || ptr != text->data() + text->size() || value < min || value > max) {
        throw ApiError(ErrorCode::kBadRequest, name + " must be a whole number from " +
                                                   std::to_string(min) + " to " +
                                                   std::to_string(max));
    }
    return value;
}

struct Scoped {
    OrgScope scope;
    db::ProductRow product;
};

Scoped scoped(db::Tx& tx, const http::Request& req, Role minimum) {
    auto scope = require_org(tx, authenticate(tx, req), req.param("org"), minimum);
    auto product = require_product(tx, scope, req.param("product"));
    return Scoped{std::move(scope), std::move(product)};
}

db::DeviceRow require_device(db::Tx& tx, const Scoped& s, const std::string& identifier) {
    auto device = db::devices::find(tx, s.scope.org.id, identifier);
    if (!device || device->product_id != s.product.id) {
        throw ApiError(ErrorCode::kNotFound, "device not found");
    }
    return *device;
}

db::DeviceCertificateRow require_certificate(db::Tx& tx, const db::DeviceRow& device,
                                             const std::string& serial) {
    auto cert = db::devices::find_certificate(tx, device.id, serial);
    if (!cert || cert->revoked) throw ApiError(ErrorCode::kNotFound, "certificate not found");
    return *cert;
}

void publish_changed(db::Tx& tx, const db::DeviceRow& device, const char* action) {
    events::publish(tx, events::kDeviceChanged,
                    {{"device_id", device.id},
                     {"org_id", device.org_id},
                     {"product_id", device.product_id},
                     {"action", action}});
}

}  // namespace

void register_device_routes(http::Router& router, ApiContext& ctx) {
    const std::string base = "/api/orgs/:org/products/:product/devices";

    router.add("GET", base, [&ctx](http::Request& req) {
        db::DeviceQuery query;
        query.page = int_param(req, "page", 1, 1, 1'000'000);
        query.page_size = int_param(req, "page_size", kDefaultPageSize, 1, kMaxPageSize);
        query.tag = query_value(req, "tag", "filters");
        query.version = query_value(req, "version", "filters");
        query.identifier_prefix = query_value(req, "identifier", "filters");
        query.node = query_value(req, "node", "filters");
        if (auto online = query_value(req, "online", "filters")) {
            if (*online == "true" || *online == "1") {
                query.online = true;
            } else if (*online == "false" || *online == "0") {
                query.online = false;
            } else {
                throw ApiError(ErrorCode::kBadRequest, "online must be true or false");
            }
        }
        if (auto connection = query_value(req, "connection", "filters")) {
            query.online = *connection == "connected";
        }
        return ctx.db.transact([&](db::Tx& tx) {
            auto s = scoped(tx, req, Role::kView);
            query.product_id = s.product.id;
            auto page = db::devices::list(tx, query);
            nlohmann::json list = nlohmann::json::array();
            for (const auto& device : page.devices) list.push_back(device_json(device));
            const auto total_pages = (page.total + query.page_size - 1) / query.page_size;
            return http::Response::json(200,
                                        {{"data", list},
                                         {"pagination",
                                          {{"page", query.page},
                                           {"page_size", query.page_size},
                                           {"total_entries", page.total},
                                           {"total_pages", total_pages}}}},
                                        false);
        });
    });

    // The hub nodes (cluster members) and how many of the org's devices each one holds; the
    // devices themselves: GET …/devices?node=<node_id>.
    router.add("GET", "/api/orgs/:org/nodes", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            nlohmann::json list = nlohmann::json::array();
            for (const auto& node : db::devices::nodes(tx, scope.org.id)) {
                list.push_back({{"node_id", node.node_id},
                                {"alive", node.alive},
                                {"started_at", node.started_at},
                                {"heartbeat_at", node.heartbeat_at},
                                {"connected_devices", node.connected_devices},
                                {"this_node", node.node_id == ctx.config.node_id}});
            }
            return http::Response::json(200, list);
        });
    });

    router.add("POST", base, [&ctx](http::Request& req) {
        // Who may call comes before what they sent: 401/404/403 before 400/422.
        authorize_first(ctx, req, Role::kManage);
        const auto body = unwrap(req.json_body(), "device");
        const auto identifier = required_string(body, "identifier");
        if (!valid_identifier(identifier)) {
            throw unprocessable("identifier",
                                "must be 1-255 printable characters without '/', '\\', '?' or '#'");
        }
        const auto description = description_of(body, "");
        const auto tags = body_tags(body);
        return ctx.db.transact([&](db::Tx& tx) {
            auto s = scoped(tx, req, Role::kManage);
            if (db::devices::find(tx, s.scope.org.id, identifier)) {
                throw ApiError(ErrorCode::kConflict, "a device with that identifier already exists",
                               {{"identifier", {"has already been taken"}}});
            }
            auto device = db::devices::create(tx, s.scope.org.id, s.product.id, identifier,
                                              description, tags);
            publish_changed(tx, device, "created");
            return http::Response::json(201, device_json(device));
        });
    });

    router.add("GET", base + "/:identifier", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto s = scoped(tx, req, Role::kView);
            return http::Response::json(
                200, device_json(require_device(tx, s, req.param("identifier"))));
        });
    });

    auto update = [&ctx](http::Request& req) {
        // Who may call comes before what they sent: 401/404/403 before 400/422.
        authorize_first(ctx, req, Role::kManage);
        const auto body = unwrap(req.json_body(), "device");
        return ctx.db.transact([&](db::Tx& tx) {
            auto s = scoped(tx, req, Role::kManage);
            auto device = require_device(tx, s, req.param("identifier"));
            const auto description = description_of(body, device.description);
            const auto tags = body.contains("tags") ? body_tags(body) : device.tags;
            const bool updates_enabled =
                optional_bool(body, "updates_enabled").value_or(device.updates_enabled);
            const bool disabled = optional_bool(body, "disabled").value_or(device.disabled);
            auto updated =
                db::devices::update(tx, device.id, description, tags, updates_enabled, disabled);
            publish_changed(tx, updated, "updated");
            if (disabled && !device.disabled) {
                events::publish(tx, events::kSessionClose,
                                {{"device_id", device.id}, {"reason", "device disabled"}});
            }
            return http::Response::json(200, device_json(updated));
        });
    };
    router.add("PUT", base + "/:identifier", update);
    router.add("PATCH", base + "/:identifier", update);

    router.add("DELETE", base + "/:identifier", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto s = scoped(tx, req, Role::kManage);
            auto device = require_device(tx, s, req.param("identifier"));
            db::devices::soft_delete(tx, device.id);
            publish_changed(tx, device, "deleted");
            events::publish(tx, events::kSessionClose,
                            {{"device_id", device.id}, {"reason", "device deleted"}});
            return http::Response::no_content();
        });
    });

    router.add("GET", base + "/:identifier/certificates", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto s = scoped(tx, req, Role::kView);
            auto device = require_device(tx, s, req.param("identifier"));
            nlohmann::json list = nlohmann::json::array();
            for (const auto& cert : db::devices::list_certificates(tx, device.id)) {
                list.push_back(certificate_json(cert));
            }
            return http::Response::json(200, list);
        });
    });

    router.add("POST", base + "/:identifier/certificates", [&ctx](http::Request& req) {
        // Who may call comes before what they sent: 401/404/403 before 400/422.
        authorize_first(ctx, req, Role::kManage);
        const auto body = unwrap(req.json_body(), "certificate");
        auto parsed = pki::Certificate::parse(required_string(body, "cert"));
        if (!parsed) throw unprocessable("cert", "is not a valid PEM certificate");
        if (parsed->facts().is_ca) throw unprocessable("cert", "is a CA certificate");
        const auto facts = parsed->facts();
        return ctx.db.transact([&](db::Tx& tx) {
            auto s = scoped(tx, req, Role::kManage);
            auto device = require_device(tx, s, req.param("identifier"));
            if (auto existing =
                    db::devices::find_certificate_by_fingerprint(tx, facts.fingerprint)) {
                throw unprocessable(
                    "cert", existing->revoked ? "has been revoked" : "is already registered");
            }
            for (const auto& other : db::devices::certificates_by_public_key(
                     tx, s.scope.org.id, facts.public_key_fingerprint)) {
                if (other.device_id != device.id) {
                    throw unprocessable("cert", "has the public key of another device");
                }
            }
            if (db::devices::find_certificate(tx, device.id, facts.serial)) {
                throw unprocessable("cert", "has the serial of another certificate of the device");
            }
            auto created = db::devices::insert_certificate(
                tx, device::certificate_row(facts, s.scope.org.id, device.id));
            if (!created) throw unprocessable("cert", "is already registered");
            return http::Response::json(201, certificate_json(*created));
        });
    });

    router.add("GET", base + "/:identifier/certificates/:serial", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto s = scoped(tx, req, Role::kView);
            auto device = require_device(tx, s, req.param("identifier"));
            return http::Response::json(
                200, certificate_json(require_certificate(tx, device, req.param("serial"))));
        });
    });

    router.add("DELETE", base + "/:identifier/certificates/:serial", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto s = scoped(tx, req, Role::kManage);
            auto device = require_device(tx, s, req.param("identifier"));
            auto cert = require_certificate(tx, device, req.param("serial"));
            db::devices::revoke_certificate(tx, cert.id);
            events::publish(tx, events::kTrustChanged, {{"device_id", device.id}});
            events::publish(tx, events::kSessionClose,
                            {{"device_id", device.id},
                             {"fingerprint", cert.fingerprint},
                             {"reason", "certificate revoked"}});
            spdlog::info("org={} device={} certificate serial={} revoked", s.scope.org.name,
                         device.identifier, cert.serial);
            return http::Response::no_content();
        });
    });
}

}  // namespace otahub::api
