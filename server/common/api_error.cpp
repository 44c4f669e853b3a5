#include "server/common/api_error.hpp"

namespace otahub {

int http_status(ErrorCode code) {
    switch (code) {
        case ErrorCode::kBadRequest: return 400;
        case ErrorCode::kUnauthorized: return 401;
        case ErrorCode::kForbidden: return 403;
        case ErrorCode::kNotFound: return 404;
        case ErrorCode::kMethodNotAllowed: return 405;
        case ErrorCode::kConflict: return 409;
        case ErrorCode::kPayloadTooLarge: return 413;
        case ErrorCode::kRangeNotSatisfiable: return 416;
        case ErrorCode::kUnprocessable: return 422;
        case ErrorCode::kTooManyRequests: return 429;
        case ErrorCode::kInsufficientStorage: return 507;
        case ErrorCode::kUnavailable: return 503;
        case ErrorCode::kInternal: return 500;
    }
    return 500;
}

nlohmann::json ApiError::to_json() const {
    nlohmann::json errors = {{"detail", what()}};
    if (fields_.is_object()) {
        for (const auto& [key, value] : fields_.items()) {
            errors[key] = value;
        }
    }
    return {{"errors", errors}};
}

}  // namespace otahub
