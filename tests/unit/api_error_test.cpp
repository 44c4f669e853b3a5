#include "server/common/api_error.hpp"

#include <gtest/gtest.h>

namespace otahub {
namespace {

TEST(ApiError, MapsCodesToStatuses) {
    EXPECT_EQ(http_status(ErrorCode::kBadRequest), 400);
    EXPECT_EQ(http_status(ErrorCode::kUnauthorized), 401);
    EXPECT_EQ(http_status(ErrorCode::kNotFound), 404);
    EXPECT_EQ(http_status(ErrorCode::kConflict), 409);
    EXPECT_EQ(http_status(ErrorCode::kPayloadTooLarge), 413);
    EXPECT_EQ(http_status(ErrorCode::kUnprocessable), 422);
    EXPECT_EQ(http_status(ErrorCode::kUnavailable), 503);
}

TEST(ApiError, EnvelopeCarriesDetailAndFieldErrors) {
    ApiError error{ErrorCode::kUnprocessable, "invalid fields", {{"name", {"can't be blank"}}}};
    auto body = error.to_json();
    EXPECT_EQ(body["errors"]["detail"], "invalid fields");
    EXPECT_EQ(body["errors"]["name"][0], "can't be blank");
}

}  // namespace
}  // namespace otahub
