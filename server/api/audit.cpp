// The audit log: the generic row recorded for every successful mutating API request (router
// observer) and GET /api/orgs/:org/audit_logs.
#include "server/api/audit.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <chrono>
#include <string_view>
#include <vector>

#include "db/repositories/accounts_repository.hpp"
#include "db/repositories/audit_repository.hpp"
#include "server/common/api_error.hpp"

namespace otahub::api {
namespace {

/// Default and largest page of the audit log.
constexpr int kDefaultAuditLimit = 100;
constexpr int kMaxAuditLimit = 500;
/// Largest response body parsed to find a created resource's name.
constexpr std::size_t kMaxParsedResponse = 256 * 1024;

/// Last path segments that are actions (POST …/reboot), not collections (POST …/devices).
constexpr std::array<std::string_view, 9> kVerbs = {
    "sign", "create", "rotate", "reboot", "identify", "upgrade", "managed", "auth", "login"};
/// POST routes that change nothing.
constexpr std::array<std::string_view, 1> kReadOnlyPosts = {
    "/api/orgs/:org/products/:product/deployments/preview"};

bool is_param(std::string_view segment) { return !segment.empty() && segment.front() == ':'; }

std::vector<std::string> split(std::string_view pattern) {
    std::vector<std::string> out;
    std::size_t start = pattern.starts_with('/') ? 1 : 0;
    while (start < pattern.size()) {
        auto end = pattern.find('/', start);
        if (end == std::string_view::npos) end = pattern.size();
        if (end > start) out.emplace_back(pattern.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

std::string singular(std::string_view collection, bool org_scoped) {
    if (org_scoped && collection == "users") return "member";
    if (collection.ends_with('s')) collection.remove_suffix(1);
    return std::string(collection);
}

nlohmann::json response_data(const http::Response& response) {
    if (response.body.empty() || response.body.size() > kMaxParsedResponse) return nullptr;
    auto parsed = nlohmann::json::parse(response.body, nullptr, false);
    if (!parsed.is_object()) return nullptr;
    auto data = parsed.find("data");
    return data != parsed.end() && data->is_object() ? *data : nlohmann::json(nullptr);
}

std::string created_name(const nlohmann::json& data) {
    if (!data.is_object()) return "";
    for (const char* key : {"name", "identifier", "serial", "uuid", "email"}) {
        auto it = data.find(key);
        if (it != data.end() && it->is_string()) return it->get<std::string>();
    }
    return "";
}

void record(ApiContext& ctx, const http::Request& req, const http::Route& route,
            const http::Response& response) {
    auto description = describe_route(route.method, route.pattern);
    if (!description || response.status < 200 || response.status >= 300) return;
    const auto data = response_data(response);
    std::string target;
    if (!description->target_param.empty()) {
        if (auto it = req.params.find(description->target_param); it != req.params.end()) {
            target = it->second;
        }
    } else {
        target = created_name(data);
    }
    nlohmann::json details = {{"method", req.method},
                              {"route", route.pattern},
                              {"path", req.path},
                              {"status", response.status}};
    nlohmann::json params = nlohmann::json::object();
    for (const auto& [name, value] : req.params) params[name] = value;
    details["params"] = params;

    ctx.db.run([&](db::Tx& tx) {
        db::AuditEntry entry;
        entry.actor_type = "user";
        try {
            entry.actor = authenticate(tx, req).user.email;
        } catch (const ApiError&) {
            // Logging in: the token is in the response, the caller is who it was issued to.
            entry.actor = data.is_object() && data.contains("email") && data["email"].is_string()
                              ? data["email"].get<std::string>()
                              : "anonymous";
        }
        std::optional<std::string> org_name;
        if (auto it = req.params.find("org"); it != req.params.end()) {
            org_name = it->second;
        } else if (route.pattern == "/api/orgs") {
            org_name = target;
        }
        if (org_name) {
            if (auto org = db::accounts::find_org(tx, *org_name)) entry.org_id = org->id;
        }
        entry.action = description->action;
        entry.resource_type = description->resource_type;
        entry.resource = target;
        entry.details = details;
        if (!req.request_id.empty()) entry.request_id = req.request_id;
        db::audit::record_unless_recorded(tx, entry);
    });
}

bool digits(std::string_view text, std::size_t from, std::size_t count) {
    if (from + count > text.size()) return false;
    for (std::size_t i = from; i < from + count; ++i) {
        if (!std::isdigit(static_cast<unsigned char>(text[i]))) return false;
    }
    return true;
}

int number(std::string_view text, std::size_t from, std::size_t count) {
    int value = 0;
    for (std::size_t i = from; i < from + count; ++i) value = value * 10 + (text[i] - '0');
    return value;
}

// YYYY-MM-DD, optionally followed by THH:MM[:SS[.f…]] and Z or ±HH:MM, naming a real instant
// (PostgreSQL would refuse 2026-02-31 with an error, not an empty answer).
bool iso8601_like(std::string_view t) {
    if (t.size() > 40 || !digits(t, 0, 4) || t.size() < 10 || t[4] != '-' || !digits(t, 5, 2) ||
        t[7] != '-' || !digits(t, 8, 2)) {
        return false;
    }
    const std::chrono::year_month_day date{
        std::chrono::year{number(t, 0, 4)},
        std::chrono::month{static_cast<unsigned>(number(t, 5, 2))},
        std::chrono::day{static_cast<unsigned>(number(t, 8, 2))}};
    if (!date.ok() || number(t, 0, 4) < 1) return false;
    if (t.size() == 10) return true;
    if ((t[10] != 'T' && t[10] != ' ') || !digits(t, 11, 2) || t.size() < 16 || t[13] != ':' ||
        !digits(t, 14, 2) || number(t, 11, 2) > 23 || number(t, 14, 2) > 59) {
        return false;
    }
    std::size_t i = 16;
    if (i < t.size() && t[i] == ':') {
        if (!digits(t, i + 1, 2) || number(t, i + 1, 2) > 59) return false;
        i += 3;
        if (i < t.size() && t[i] == '.') {
            ++i;
            const auto start = i;
            while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i;
            if (i == start) return false;
        }
    }
    if (i == t.size()) return true;
    if (t[i] == 'Z') return i + 1 == t.size();
    if (t[i] != '+' && t[i] != '-') return false;
    return t.size() == i + 6 && digits(t, i + 1, 2) && t[i + 3] == ':' && digits(t, i + 4, 2) &&
           number(t, i + 1, 2) < 16 && number(t, i + 4, 2) < 60;
}

nlohmann::json audit_json(const db::AuditEntry& e) {
    return {{"id", e.id},
            {"actor_type", e.actor_type},
            {"actor", e.actor},
            {"action", e.action},
            {"resource_type", e.resource_type},
            {"resource", e.resource},
            {"details", e.details},
            {"request_id", e.request_id ? nlohmann::json(*e.request_id) : nlohmann::json(nullptr)},
            {"inserted_at", e.inserted_at}};
}

}  // namespace

std::optional<std::int64_t> int_query(const http::Request& req, const std::string& name,
                                      std::int64_t min, std::int64_t max) {
    auto text = req.query_param(name);
    if (!text) return std::nullopt;
    std::int64_t value = 0;
    auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
    if (ec != std::errc{} || ptr != text->data() + text->size() || value < min || value > max) {
        throw ApiError(ErrorCode::kBadRequest, name + " must be a whole number from " +
                                                   std::to_string(min) + " to " +
                                                   std::to_string(max));
    }
    return value;
}

std::optional<std::string> text_query(const http::Request& req, const std::string& name) {
    auto value = req.query_param(name);
    if (value && value->empty()) return std::nullopt;
    return value;
}

std::optional<std::string> time_query(const http::Request& req, const std::string& name) {
    auto value = text_query(req, name);
    if (value && !iso8601_like(*value)) {
        throw ApiError(ErrorCode::kBadRequest,
                       name + " must be an ISO-8601 date or date-time (2026-11-24T09:00:00Z)");
    }
    return value;
}

std::optional<RouteAudit> describe_route(const std::string& method, const std::string& pattern) {
    if (method == "GET" || method == "HEAD" || method == "OPTIONS") return std::nullopt;
    if (!pattern.starts_with("/api/")) return std::nullopt;
    for (const auto read_only : kReadOnlyPosts) {
        if (method == "POST" && pattern == read_only) return std::nullopt;
    }
    auto segments = split(pattern);
    segments.erase(segments.begin());  // "api"
    bool org_scoped = false;
    // The org and product a route lives under are its scope, not its resource.
    if (segments.size() > 2 && segments[0] == "orgs" && segments[1] == ":org") {
        segments.erase(segments.begin(), segments.begin() + 2);
        org_scoped = true;
    }
    if (org_scoped && segments.size() > 2 && segments[0] == "products" &&
        segments[1] == ":product") {
        segments.erase(segments.begin(), segments.begin() + 2);
    }
    if (segments.empty() || is_param(segments.front())) return std::nullopt;

    RouteAudit out;
    std::vector<std::string> names;
    for (std::size_t i = 0; i < segments.size(); ++i) {
        if (is_param(segments[i])) {
            if (out.target_param.empty()) out.target_param = segments[i].substr(1);
            continue;
        }
        const bool verb = i + 1 == segments.size() && method == "POST" &&
                          std::find(kVerbs.begin(), kVerbs.end(), segments[i]) != kVerbs.end();
        names.push_back(verb ? segments[i] : singular(segments[i], org_scoped));
    }
    out.resource_type = names.front();
    std::string action;
    for (const auto& name : names) action += (action.empty() ? "" : ".") + name;
    const auto& last = segments.back();
    const bool last_is_verb = method == "POST" && !is_param(last) &&
                              std::find(kVerbs.begin(), kVerbs.end(), last) != kVerbs.end();
    if (!last_is_verb) {
        if (method == "POST") {
            action += ".created";
        } else if (method == "PUT" || method == "PATCH") {
            action += ".updated";
        } else if (method == "DELETE") {
            action += ".deleted";
        } else {
            action += "." + method;
        }
    }
    if (pattern == "/api/users/auth" || pattern == "/api/users/login") {
        action = "user.token_created";
    }
    out.action = std::move(action);
    return out;
}

void register_audit_routes(http::Router& router, ApiContext& ctx) {
    router.set_observer(
        [&ctx](const http::Request& req, const http::Route& route, const http::Response& response) {
            record(ctx, req, route, response);
        });

    router.add("GET", "/api/orgs/:org/audit_logs", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            db::AuditFilter filter;
            filter.action = text_query(req, "action");
            filter.actor = text_query(req, "actor");
            filter.resource_type = text_query(req, "resource_type");
            filter.resource = text_query(req, "resource");
            if (auto target = text_query(req, "target")) filter.resource = target;
            filter.since = time_query(req, "since");
            filter.until = time_query(req, "until");
            filter.before_id = int_query(req, "before", 1, INT64_MAX);
            filter.limit = static_cast<int>(
                int_query(req, "limit", 1, kMaxAuditLimit).value_or(kDefaultAuditLimit));
            nlohmann::json list = nlohmann::json::array();
            const auto entries = db::audit::list(tx, scope.org.id, filter);
            for (const auto& entry : entries) list.push_back(audit_json(entry));
            auto response = http::Response::json(200, list);
            // A full page may have more behind it: the next page starts below its last id.
            if (static_cast<int>(entries.size()) == filter.limit && !entries.empty()) {
                response.set_header("x-next-before", std::to_string(entries.back().id));
            }
            return response;
        });
    });
}

}  // namespace otahub::api
