#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace otahub {

/// The error classes a request can end in; each maps to one HTTP status.
enum class ErrorCode {
    kBadRequest,         // 400 malformed input (bad JSON, bad query)
    kUnauthorized,       // 401 no or bad credentials
    kForbidden,          // 403 authenticated but not allowed
    kNotFound,           // 404
    kMethodNotAllowed,   // 405
    kConflict,           // 409 duplicate or still referenced
    kPayloadTooLarge,    // 413
    kRangeNotSatisfiable,// 416
    kUnprocessable,      // 422 invalid fields
    kTooManyRequests,    // 429
    kInsufficientStorage,// 507 disk full
    kUnavailable,        // 503 database unreachable
    kInternal,           // 500
};

/// HTTP status for an error code.
int http_status(ErrorCode code);

/// An error meant for the client: the router turns it into `{"errors": {...}}` with the status.
class ApiError : public std::runtime_error {
public:
    ApiError(ErrorCode code, std::string detail, nlohmann::json fields = nullptr)
        : std::runtime_error(detail), code_(code), fields_(std::move(fields)) {}

    ErrorCode code() const { return code_; }
    /// Per-field messages (`{"name": ["has already been taken"]}`), or null.
    const nlohmann::json& fields() const { return fields_; }
    /// The error envelope body.
    nlohmann::json to_json() const;

private:
    ErrorCode code_;
    nlohmann::json fields_;
};

}  // namespace otahub
