#include "server/http/router.hpp"

#include <spdlog/spdlog.h>

#include "server/app/logging.hpp"
#include "server/common/api_error.hpp"

namespace otahub::http {
namespace {

std::vector<std::string> split_raw(std::string_view path) {
    std::vector<std::string> out;
    std::size_t start = 0;
    if (!path.empty() && path.front() == '/') start = 1;
    while (start <= path.size()) {
        auto end = path.find('/', start);
        if (end == std::string_view::npos) end = path.size();
        out.emplace_back(path.substr(start, end - start));
        start = end + 1;
    }
    // "/api/orgs/" and "/api/orgs" are the same route.
    if (out.size() > 1 && out.back().empty()) out.pop_back();
    return out;
}

}  // namespace

Response error_response(int status, const std::string& detail) {
    return Response::json(status, ApiError(ErrorCode::kInternal, detail).to_json(), false);
}

void Router::add(std::string method, std::string pattern, Handler handler, BodyMode body_mode) {
    Route route{std::move(method), pattern, split_raw(pattern), std::move(handler), body_mode};
    routes_.push_back(std::move(route));
}

RouteMatch Router::match(const std::string& method, const std::string& raw_path) const {
    RouteMatch result;
    auto raw_segments = split_raw(raw_path);
    std::vector<std::string> segments;
    for (const auto& raw : raw_segments) {
        auto decoded = percent_decode(raw, false);
        if (!decoded) {
            result.bad_path = true;
            return result;
        }
        segments.push_back(std::move(*decoded));
    }
    int best_score = -1;
    for (const auto& route : routes_) {
        if (route.segments.size() != segments.size()) continue;
        int score = 0;
        bool ok = true;
        std::map<std::string, std::string> params;
        for (std::size_t i = 0; i < segments.size() && ok; ++i) {
            const auto& want = route.segments[i];
            if (!want.empty() && want.front() == ':') {
                if (segments[i].empty()) ok = false;
                params[want.substr(1)] = segments[i];
            } else if (want == segments[i]) {
                ++score;
            } else {
                ok = false;
            }
        }
        if (!ok) continue;
        if (route.method != method) {
            if (score >= best_score) result.allowed_methods.push_back(route.method);
            continue;
        }
        if (score > best_score) {
            best_score = score;
            result.route = &route;
            result.params = std::move(params);
        }
    }
    return result;
}

Response Router::dispatch(Request& request, const RouteMatch& match) const {
    // Every line logged while this request is handled (handlers, repositories) names it.
    const log::Scope scope{"request_id", request.request_id};
    if (match.bad_path) return error_response(400, "malformed percent-encoding in path");
    if (match.route == nullptr) {
        if (!match.allowed_methods.empty()) {
            auto response = error_response(405, "method not allowed");
            std::string allow;
            for (const auto& m : match.allowed_methods) {
                if (allow.find(m) != std::string::npos) continue;
                allow += allow.empty() ? m : ", " + m;
            }
            response.set_header("allow", allow);
            return response;
        }
        return error_response(404, "not found");
    }
    request.params = match.params;
    try {
        auto response = match.route->handler(request);
        if (observer_) {
            try {
                observer_(request, *match.route, response);
            } catch (const std::exception& e) {
                spdlog::error("{} {} observer failed: {}", request.method, request.path, e.what());
            }
        }
        return response;
    } catch (const ApiError& e) {
        if (e.code() == ErrorCode::kInternal || e.code() == ErrorCode::kUnavailable) {
            spdlog::warn("{} {} failed: {}", request.method, request.path, e.what());
        }
        return Response::json(http_status(e.code()), e.to_json(), false);
    } catch (const std::exception& e) {
        spdlog::error("{} {} internal error: {}", request.method, request.path, e.what());
        return error_response(500, "internal error (request id " + request.request_id + ")");
    }
}

}  // namespace otahub::http
