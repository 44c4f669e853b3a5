#include <gtest/gtest.h>

#include <chrono>

#include "server/domain/storage/byte_range.hpp"
#include "server/domain/storage/signed_url.hpp"

namespace otahub::storage {
namespace {

using Kind = RangeDecision::Kind;
constexpr std::string_view kEtag = "\"ABC\"";

RangeDecision decide(std::optional<std::string_view> range, std::uint64_t size = 1000,
                     std::optional<std::string_view> if_range = std::nullopt) {
    return decide_range(range, if_range, kEtag, size);
}

void expect_partial(const RangeDecision& d, std::uint64_t first, std::uint64_t length) {
    EXPECT_EQ(d.kind, Kind::kPartial);
    EXPECT_EQ(d.first, first);
    EXPECT_EQ(d.length, length);
}

TEST(ByteRange, ServesSingleRanges) {
    expect_partial(decide("bytes=0-99"), 0, 100);
    expect_partial(decide("bytes=100-"), 100, 900);
    expect_partial(decide("bytes=-100"), 900, 100);
    expect_partial(decide("bytes=999-999"), 999, 1);
    expect_partial(decide("bytes=990-5000"), 990, 10);  // clamped to the end
    expect_partial(decide("bytes=-5000"), 0, 1000);     // suffix longer than the file
    expect_partial(decide("BYTES = 5-9 "), 5, 5);       // unit is case-insensitive
    expect_partial(decide("bytes=0-99999999999999999999999"), 0, 1000);  // saturates
    EXPECT_EQ(decide("bytes=0-0").content_range(1000), "bytes 0-0/1000");
    EXPECT_EQ(decide("bytes=10-19").content_range(1000), "bytes 10-19/1000");
}

TEST(ByteRange, RefusesUnsatisfiableRanges) {
    EXPECT_EQ(decide("bytes=1000-").kind, Kind::kUnsatisfiable);
    EXPECT_EQ(decide("bytes=1000-2000").kind, Kind::kUnsatisfiable);
    EXPECT_EQ(decide("bytes=-0").kind, Kind::kUnsatisfiable);
    EXPECT_EQ(decide("bytes=5000-6000, 7000-").kind, Kind::kUnsatisfiable);
    EXPECT_EQ(decide("bytes=0-", 0).kind, Kind::kUnsatisfiable);
    EXPECT_EQ(decide("bytes=1000-").content_range(1000), "bytes */1000");
}

TEST(ByteRange, IgnoresInvalidOrForeignRanges) {
    for (const char* header : {"bytes=abc", "bytes=5-1", "bytes=", "bytes=1", "items=0-5", "0-5",
                               "bytes=--5", "bytes=1-2-3", "bytes=+1-2", "bytes=0x10-"}) {
        EXPECT_EQ(decide(header).kind, Kind::kFull) << header;
    }
    EXPECT_EQ(decide(std::nullopt).kind, Kind::kFull);
    std::string many = "bytes=";
    for (int i = 0; i < 100; ++i) many += std::to_string(i) + "-" + std::to_string(i) + ",";
    EXPECT_EQ(decide(many).kind, Kind::kFull);
}

TEST(ByteRange, MergesContiguousRangesAndIgnoresDisjointOnes) {
    expect_partial(decide("bytes=0-9,10-19"), 0, 20);
    expect_partial(decide("bytes=10-19, 0-14"), 0, 20);
    expect_partial(decide("bytes=0-9,5000-"), 0, 10);  // unsatisfiable parts are dropped
    EXPECT_EQ(decide("bytes=0-9,20-29").kind, Kind::kFull);
}

TEST(ByteRange, HonoursIfRangeOnlyForTheExactStrongEtag) {
    expect_partial(decide("bytes=0-9", 1000, "\"ABC\""), 0, 10);
    EXPECT_EQ(decide("bytes=0-9", 1000, "\"OLD\"").kind, Kind::kFull);
    EXPECT_EQ(decide("bytes=0-9", 1000, "W/\"ABC\"").kind, Kind::kFull);
    EXPECT_EQ(decide("bytes=0-9", 1000, "Tue, 01 Dec 2026 10:00:00 GMT").kind, Kind::kFull);
    // A stale If-Range never turns into a 416.
    EXPECT_EQ(decide("bytes=5000-", 1000, "\"OLD\"").kind, Kind::kFull);
}

TEST(SignedUrl, ValidatesUntilItsExpiry) {
    using std::chrono::seconds;
    const std::chrono::system_clock::time_point t0{seconds(1800000000)};
    auto path = firmware_download_path(7, "b880ed2c-f90d-5c40-79b0-4fef802439b4");
    EXPECT_EQ(path, "/firmware/7/b880ed2c-f90d-5c40-79b0-4fef802439b4.fw");
    auto signature = sign_download("secret", path, 1800000100);
    EXPECT_EQ(signature.size(), 43U);  // base64url of 32 bytes
    EXPECT_EQ(signed_download_target("secret", path, 1800000100),
              path + "?expires=1800000100&signature=" + signature);
    EXPECT_EQ(check_download("secret", path, "1800000100", signature, t0), SignatureCheck::kValid);
    EXPECT_EQ(check_download("secret", path, "1800000100", signature, t0 + seconds(100)),
              SignatureCheck::kValid);
    EXPECT_EQ(check_download("secret", path, "1800000100", signature, t0 + seconds(101)),
              SignatureCheck::kExpired);
}

TEST(SignedUrl, RefusesTampering) {
    const std::chrono::system_clock::time_point t0{std::chrono::seconds(1800000000)};
    auto path = firmware_download_path(7, "b880ed2c-f90d-5c40-79b0-4fef802439b4");
    auto signature = sign_download("secret", path, 1800000100);
    auto other_path = firmware_download_path(8, "b880ed2c-f90d-5c40-79b0-4fef802439b4");
    EXPECT_EQ(check_download("secret", other_path, "1800000100", signature, t0),
              SignatureCheck::kBadSignature);
    EXPECT_EQ(check_download("secret", path, "1800000101", signature, t0),
              SignatureCheck::kBadSignature);
    EXPECT_EQ(check_download("other", path, "1800000100", signature, t0),
              SignatureCheck::kBadSignature);
    auto flipped = signature;
    flipped[0] = flipped[0] == 'A' ? 'B' : 'A';
    EXPECT_EQ(check_download("secret", path, "1800000100", flipped, t0),
              SignatureCheck::kBadSignature);
    for (const char* expires :
         {"", "abc", "-5", "+1800000100", "01800000100", "1e9", "99999999999999999999"}) {
        EXPECT_EQ(check_download("secret", path, expires, signature, t0),
                  SignatureCheck::kMalformed)
            << expires;
    }
    EXPECT_EQ(check_download("secret", path, "1800000100", "", t0), SignatureCheck::kMalformed);
}

}  // namespace
}  // namespace otahub::storage
