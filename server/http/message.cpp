#include "server/http/message.hpp"

#include "server/common/api_error.hpp"

namespace otahub::http {

std::optional<std::string> Request::header(const std::string& name) const {
    for (const auto& [key, value] : headers) {
        if (key == name) return value;
    }
    return std::nullopt;
}

std::optional<std::string> Request::query_param(const std::string& name) const {
    auto it = query.find(name);
    if (it == query.end()) return std::nullopt;
    return it->second;
}

const std::string& Request::param(const std::string& name) const {
    auto it = params.find(name);
    if (it == params.end()) throw std::logic_error("route has no parameter " + name);
    return it->second;
}

nlohmann::json Request::json_body() const {
    if (body.empty()) return nlohmann::json::object();
    nlohmann::json parsed;
    try {
        parsed = nlohmann::json::parse(body);
    } catch (const nlohmann::json::exception&) {
        throw ApiError(ErrorCode::kBadRequest, "malformed JSON body");
    }
    if (!parsed.is_object()) throw ApiError(ErrorCode::kBadRequest, "the JSON body must be an object");
    // PostgreSQL text cannot hold U+0000 (libpq would silently cut the string there): refuse it
    // in any key or string of the body, iteratively (no recursion on deep documents).
    std::vector<const nlohmann::json*> pending{&parsed};
    while (!pending.empty()) {
        const nlohmann::json* value = pending.back();
        pending.pop_back();
        if (value->is_string()) {
            if (value->get_ref<const std::string&>().find('\0') != std::string::npos) {
                throw ApiError(ErrorCode::kUnprocessable, "strings may not contain U+0000",
                               {{"body", {"contains a NUL character"}}});
            }
        } else if (value->is_object()) {
            for (const auto& [key, item] : value->items()) {
                if (key.find('\0') != std::string::npos) {
                    throw ApiError(ErrorCode::kUnprocessable, "keys may not contain U+0000",
                                   {{"body", {"contains a NUL character"}}});
                }
                pending.push_back(&item);
            }
        } else if (value->is_array()) {
            for (const auto& item : *value) pending.push_back(&item);
        }
    }
    return parsed;
}

Response Response::json(int status, const nlohmann::json& data, bool wrap) {
    Response response;
    response.status = status;
    response.headers.emplace_back("content-type", "application/json");
    response.body = wrap ? nlohmann::json{{"data", data}}.dump(-1, ' ', false,
                                                               nlohmann::json::error_handler_t::replace)
                         : data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return response;
}

Response Response::no_content() {
    Response response;
    response.status = 204;
    return response;
}

void Response::set_header(std::string name, std::string value) {
    for (auto& [key, existing] : headers) {
        if (key == name) {
            existing = std::move(value);
            return;
        }
    }
    headers.emplace_back(std::move(name), std::move(value));
}

std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space) {
    std::string out;
    out.reserve(text.size());
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '%') {
            if (i + 2 >= text.size()) return std::nullopt;
            int hi = hex(text[i + 1]);
            int lo = hex(text[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    return out;
}

std::string percent_encode(std::string_view text) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : text) {
        bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                          c == '-' || c == '_' || c == '.' || c == '~';
        if (unreserved) {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        }
    }
    return out;
}

}  // namespace otahub::http
