// Pure rules of certificate rotation over the device channel (server/device/rotation.hpp).
#include <gtest/gtest.h>

#include "server/device/rotation.hpp"

namespace otahub::device {
namespace {

constexpr std::int64_t kNow = 1'800'000'000;
constexpr std::chrono::seconds kWindow = std::chrono::days{30};

TEST(RenewalReason, FarFromExpiryNeedsNothing) {
    EXPECT_EQ(renewal_reason(kNow + 31 * 86400, kWindow, false, kNow), std::nullopt);
}

TEST(RenewalReason, InsideTheWindowIsExpiring) {
    EXPECT_EQ(renewal_reason(kNow + 30 * 86400, kWindow, false, kNow), "expiring");
    EXPECT_EQ(renewal_reason(kNow + 1, kWindow, false, kNow), "expiring");
}

TEST(RenewalReason, PastNotAfterIsExpiredWhateverTheWindow) {
    EXPECT_EQ(renewal_reason(kNow, std::chrono::seconds{0}, false, kNow), "expired");
    EXPECT_EQ(renewal_reason(kNow - 10, kWindow, false, kNow), "expired");
}

TEST(RenewalReason, AReplacedCertificateIsNeverRenewedAgain) {
    EXPECT_EQ(renewal_reason(kNow + 10, kWindow, true, kNow), std::nullopt);
    EXPECT_EQ(renewal_reason(kNow - 10, kWindow, true, kNow), std::nullopt);
}

TEST(RenewalReason, ZeroWindowOnlyRenewsExpired) {
    EXPECT_EQ(renewal_reason(kNow + 1, std::chrono::seconds{0}, false, kNow), std::nullopt);
}

TEST(CsrFromPayload, TakesTheCsrString) {
    EXPECT_EQ(csr_from_payload({{"csr", "-----BEGIN CERTIFICATE REQUEST-----"}}),
              "-----BEGIN CERTIFICATE REQUEST-----");
}

TEST(CsrFromPayload, RefusesMissingEmptyWrongTypeAndOversized) {
    EXPECT_EQ(csr_from_payload(nlohmann::json::object()), std::nullopt);
    EXPECT_EQ(csr_from_payload({{"csr", ""}}), std::nullopt);
    EXPECT_EQ(csr_from_payload({{"csr", 42}}), std::nullopt);
    EXPECT_EQ(csr_from_payload({{"csr", nullptr}}), std::nullopt);
    EXPECT_EQ(csr_from_payload(nlohmann::json::array({"csr"})), std::nullopt);
    EXPECT_EQ(csr_from_payload("csr"), std::nullopt);
    EXPECT_EQ(csr_from_payload({{"csr", std::string(kMaxChannelCsrBytes + 1, 'A')}}), std::nullopt);
    EXPECT_NE(csr_from_payload({{"csr", std::string(kMaxChannelCsrBytes, 'A')}}), std::nullopt);
}

TEST(SweepInterval, HalfTheGraceBetweenOneAndThirtySeconds) {
    using std::chrono::seconds;
    EXPECT_EQ(sweep_interval(seconds{0}), seconds{1});
    EXPECT_EQ(sweep_interval(seconds{2}), seconds{1});
    EXPECT_EQ(sweep_interval(seconds{20}), seconds{10});
    EXPECT_EQ(sweep_interval(seconds{86400}), seconds{30});
}

}  // namespace
}  // namespace otahub::device
