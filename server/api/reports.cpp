// Certificate reports (expiring device certificates and CAs, devices refused with revoked,
// unknown or expired certificates) and the hourly counts of refused device handshakes.
#include "server/api/reports.hpp"

#include <chrono>
#include <ctime>

#include "db/repositories/handshake_refusals_repository.hpp"
#include "db/repositories/reports_repository.hpp"
#include "server/api/audit.hpp"
#include "server/common/api_error.hpp"

namespace otahub::api {
namespace {

constexpr int kDefaultDays = 30;
constexpr int kMaxDays = 3650;
constexpr int kDefaultRecentDays = 7;
constexpr int kMaxRecentDays = 90;
constexpr int kDefaultRefusalLimit = 100;
constexpr int kMaxRefusalLimit = 1000;

nlohmann::json opt(const std::optional<std::string>& value) {
    return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

std::string now_iso8601() {
    const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buffer[32];
    std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buffer;
}

}  // namespace

void register_report_routes(http::Router& router, ApiContext& ctx) {
    router.add("GET", "/api/orgs/:org/reports/certificates", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            const int days =
                static_cast<int>(int_query(req, "days", 0, kMaxDays).value_or(kDefaultDays));
            const int recent = static_cast<int>(
                int_query(req, "recent_days", 1, kMaxRecentDays).value_or(kDefaultRecentDays));
            nlohmann::json certificates = nlohmann::json::array();
            for (const auto& c : db::reports::expiring_certificates(tx, scope.org.id, days)) {
                certificates.push_back({{"identifier", c.identifier},
                                        {"product", c.product},
                                        {"serial", c.serial},
                                        {"not_after", c.not_after},
                                        {"expired", c.expired},
                                        {"ca_serial", opt(c.ca_serial)},
                                        {"renew_requested_at", opt(c.renew_requested_at)},
                                        {"replaced", c.replaced}});
            }
            nlohmann::json cas = nlohmann::json::array();
            for (const auto& c : db::reports::expiring_cas(tx, scope.org.id, days)) {
                cas.push_back({{"serial", c.serial},
                               {"subject", c.subject},
                               {"not_after", c.not_after},
                               {"expired", c.expired},
                               {"active", c.active},
                               {"managed", c.managed}});
            }
            nlohmann::json refused = nlohmann::json::array();
            for (const auto& r : db::reports::refused_devices(tx, scope.org.id, recent)) {
                refused.push_back({{"identifier", r.identifier},
                                   {"product", opt(r.product)},
                                   {"registered", r.registered},
                                   {"category", r.category},
                                   {"reason", r.reason},
                                   {"stage", r.stage},
                                   {"ca_serial", opt(r.ca_serial)},
                                   {"refusals", r.refusals},
                                   {"last_at", r.last_at}});
            }
            return http::Response::json(200, {{"days", days},
                                              {"recent_days", recent},
                                              {"generated_at", now_iso8601()},
                                              {"expiring_certificates", certificates},
                                              {"expiring_cas", cas},
                                              {"refused_devices", refused}});
        });
    });

    router.add("GET", "/api/orgs/:org/handshake_refusals", [&ctx](http::Request& req) {
        return ctx.db.transact([&](db::Tx& tx) {
            auto scope = require_org(tx, authenticate(tx, req), req.param("org"), Role::kView);
            db::RefusalFilter filter;
            filter.since = time_query(req, "since");
            filter.until = time_query(req, "until");
            filter.reason = text_query(req, "reason");
            filter.ca_serial = text_query(req, "ca_serial");
            filter.limit = static_cast<int>(
                int_query(req, "limit", 1, kMaxRefusalLimit).value_or(kDefaultRefusalLimit));
            nlohmann::json list = nlohmann::json::array();
            for (const auto& r : db::handshake_refusals::list(tx, scope.org.id, filter)) {
                list.push_back({{"hour", r.hour},
                                {"ca_serial", opt(r.ca_serial)},
                                {"reason", r.reason},
                                {"stage", r.stage},
                                {"count", r.count},
                                {"common_names", r.common_names},
                                {"serials", r.serials},
                                {"first_at", r.first_at},
                                {"last_at", r.last_at}});
            }
            return http::Response::json(200, list);
        });
    });
}

}  // namespace otahub::api
