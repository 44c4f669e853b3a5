#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace otahub::http {

/// An HTTP request as handlers see it (no Beast types): built by the connection, read by handlers.
struct Request {
    std::string method;   // "GET", "POST", ...
    std::string target;   // raw target as received
    std::string path;     // percent-decoded path without the query
    std::multimap<std::string, std::string> query;            // decoded query parameters
    std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
    std::string body;       // in-memory body (small requests)
    std::string body_file;  // path of a spooled body (streaming routes), else empty
    std::uint64_t body_size = 0;
    std::map<std::string, std::string> params;  // route parameters (":org" → "acme")
    std::string request_id;
    std::string remote_address;

    /// First header of that (lower-case) name.
    std::optional<std::string> header(const std::string& name) const;
    /// First query parameter of that name.
    std::optional<std::string> query_param(const std::string& name) const;
    /// A route parameter (throws if the route does not define it: a programming error).
    const std::string& param(const std::string& name) const;
    /// The body parsed as a JSON object; throws ApiError 400 on malformed JSON or a non-object.
    nlohmann::json json_body() const;
};

/// An HTTP response built by handlers.
struct Response {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    /// When set, the body is this file's byte range instead of `body`.
    std::string file_path;
    std::uint64_t file_offset = 0;
    std::uint64_t file_length = 0;
    bool head_only = false;

    /// `{"data": data}` (or the JSON as given when `wrap` is false) with application/json.
    static Response json(int status, const nlohmann::json& data, bool wrap = true);
    /// An empty 204.
    static Response no_content();
    void set_header(std::string name, std::string value);
};

/// Percent-decodes a path or query component ('+' as space only when `plus_is_space`).
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space);
/// Percent-encodes a path segment.
std::string percent_encode(std::string_view text);

}  // namespace otahub::http
