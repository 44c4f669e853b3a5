#include "server/domain/resolution.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

namespace otahub::resolution {
namespace {

using namespace std::chrono_literals;

const Clock::time_point kNow = Clock::time_point{} + 1'000'000'000s;  // 2001-09-09T01:46:40Z

DeviceFacts make_device() {
    DeviceFacts device;
    device.product_id = 1;
    device.platform = "rpi4";
    device.architecture = "aarch64";
    device.version = "1.2.0";
    device.firmware_uuid = "uuid-running";
    device.tags = {"beta", "eu"};
    return device;
}

DeploymentFacts make_deployment(std::int64_t id, std::string name, std::string firmware_version) {
    DeploymentFacts deployment;
    deployment.id = id;
    deployment.name = std::move(name);
    deployment.product_id = 1;
    deployment.is_active = true;
    deployment.firmware_uuid = "uuid-" + firmware_version;
    deployment.firmware_version = std::move(firmware_version);
    deployment.platform = "rpi4";
    deployment.architecture = "aarch64";
    return deployment;
}

struct MatchCase {
    const char* name;
    std::function<void(DeviceFacts&, DeploymentFacts&)> setup;
    Exclusion expected;
};

TEST(ResolutionMatch, EveryRuleInTable) {
    const std::vector<MatchCase> cases = {
        {"baseline matches", [](DeviceFacts&, DeploymentFacts&) {}, Exclusion::kNone},
        {"other product", [](DeviceFacts&, DeploymentFacts& d) { d.product_id = 2; },
         Exclusion::kOtherProduct},
        {"inactive", [](DeviceFacts&, DeploymentFacts& d) { d.is_active = false; },
         Exclusion::kInactive},
        {"platform differs", [](DeviceFacts&, DeploymentFacts& d) { d.platform = "rpi3"; },
         Exclusion::kPlatform},
        {"architecture differs", [](DeviceFacts&, DeploymentFacts& d) { d.architecture = "armv7"; },
         Exclusion::kArchitecture},
        {"platform compared exactly", [](DeviceFacts&, DeploymentFacts& d) { d.platform = "RPI4"; },
         Exclusion::kPlatform},
        {"and: deployment tags are a subset",
         [](DeviceFacts&, DeploymentFacts& d) { d.tags = {"beta"}; }, Exclusion::kNone},
        {"and: all tags equal",
         [](DeviceFacts&, DeploymentFacts& d) {
             d.tags = {"eu", "beta"};
         },
         Exclusion::kNone},
        {"and: one tag missing",
         [](DeviceFacts&, DeploymentFacts& d) {
             d.tags = {"beta", "us"};
         },
         Exclusion::kTags},
        {"and: duplicate deployment tags",
         [](DeviceFacts&, DeploymentFacts& d) {
             d.tags = {"beta", "beta"};
         },
         Exclusion::kNone},
        {"and: device without tags",
         [](DeviceFacts& dev, DeploymentFacts& d) {
             dev.tags.clear();
             d.tags = {"beta"};
         },
         Exclusion::kTags},
        {"tags are case sensitive", [](DeviceFacts&, DeploymentFacts& d) { d.tags = {"Beta"}; },
         Exclusion::kTags},
        {"or: any overlap",
         [](DeviceFacts&, DeploymentFacts& d) {
             d.tags = {"us", "beta"};
             d.tag_operator = TagOperator::kOr;
         },
         Exclusion::kNone},
        {"or: no overlap",
         [](DeviceFacts&, DeploymentFacts& d) {
             d.tags = {"us", "asia"};
             d.tag_operator = TagOperator::kOr;
         },
         Exclusion::kTags},
        {"empty deployment tags match a device without tags",
         [](DeviceFacts& dev, DeploymentFacts&) { dev.tags.clear(); }, Exclusion::kNone},
        {"empty deployment tags with or match too",
         [](DeviceFacts&, DeploymentFacts& d) { d.tag_operator = TagOperator::kOr; },
         Exclusion::kNone},
        {"empty requirement matches any version",
         [](DeviceFacts&, DeploymentFacts& d) { d.version_requirement = ""; }, Exclusion::kNone},
        {"empty requirement matches an unparsable version",
         [](DeviceFacts& dev, DeploymentFacts&) { dev.version = "not-a-version"; },
         Exclusion::kNone},
        {"requirement satisfied",
         [](DeviceFacts&, DeploymentFacts& d) { d.version_requirement = "~> 1.0"; },
         Exclusion::kNone},
        {"requirement not satisfied",
         [](DeviceFacts&, DeploymentFacts& d) { d.version_requirement = "~> 2.0"; },
         Exclusion::kVersionRequirement},
        {"compound requirement",
         [](DeviceFacts&, DeploymentFacts& d) {
             d.version_requirement = ">= 1.0.0 and < 1.1.0 or >= 1.2.0 and < 1.3.0";
         },
         Exclusion::kNone},
        {"unparsable device version never satisfies a requirement",
         [](DeviceFacts& dev, DeploymentFacts& d) {
             dev.version = "v1.2.0";
             d.version_requirement = ">= 0.0.0";
         },
         Exclusion::kVersionRequirement},
        {"empty device version never satisfies a requirement",
         [](DeviceFacts& dev, DeploymentFacts& d) {
             dev.version = "";
             d.version_requirement = ">= 0.0.0";
         },
         Exclusion::kVersionRequirement},
        {"pre-release device version matches (allow_pre default)",
         [](DeviceFacts& dev, DeploymentFacts& d) {
             dev.version = "2.0.0-rc.1";
             d.version_requirement = ">= 1.0.0";
         },
         Exclusion::kNone},
        {"pre-release is below its release",
         [](DeviceFacts& dev, DeploymentFacts& d) {
             dev.version = "2.0.0-rc.1";
             d.version_requirement = ">= 2.0.0";
         },
         Exclusion::kVersionRequirement},
        {"build metadata ignored",
         [](DeviceFacts& dev, DeploymentFacts& d) {
             dev.version = "1.2.0+abc";
             d.version_requirement = "== 1.2.0";
         },
         Exclusion::kNone},
        {"stored requirement that does not parse matches nothing",
         [](DeviceFacts&, DeploymentFacts& d) { d.version_requirement = "=> 1.0.0"; },
         Exclusion::kVersionRequirement},
        {"whitespace-only requirement is invalid, not 'any'",
         [](DeviceFacts&, DeploymentFacts& d) { d.version_requirement = " "; },
         Exclusion::kVersionRequirement},
        {"order: inactive before platform",
         [](DeviceFacts&, DeploymentFacts& d) {
             d.is_active = false;
             d.platform = "x";
         },
         Exclusion::kInactive},
        {"order: platform before architecture",
         [](DeviceFacts&, DeploymentFacts& d) {
             d.platform = "x";
             d.architecture = "y";
         },
         Exclusion::kPlatform},
        {"order: architecture before tags",
         [](DeviceFacts&, DeploymentFacts& d) {
             d.architecture = "y";
             d.tags = {"nope"};
         },
         Exclusion::kArchitecture},
        {"order: tags before version",
         [](DeviceFacts&, DeploymentFacts& d) {
             d.tags = {"nope"};
             d.version_requirement = "~> 9.0";
         },
         Exclusion::kTags},
    };
    for (const auto& c : cases) {
        DeviceFacts device = make_device();
        DeploymentFacts deployment = make_deployment(1, "d", "2.0.0");
        c.setup(device, deployment);
        CompiledDeployment compiled(deployment);
        EXPECT_EQ(first_exclusion(device, compiled), c.expected)
            << c.name << ": got " << to_string(first_exclusion(device, compiled));
        EXPECT_EQ(matches(device, compiled), c.expected == Exclusion::kNone) << c.name;
        EXPECT_EQ(matches(device, deployment), c.expected == Exclusion::kNone) << c.name;
    }
}

std::optional<std::int64_t> chosen_id(const DeviceFacts& device,
                                      const std::vector<DeploymentFacts>& deployments) {
    auto compiled = compile(deployments);
    auto index = choose(device, compiled);
    auto resolution = resolve(device, compiled, kNow);
    EXPECT_EQ(index, resolution.chosen);
    if (!index) {
        EXPECT_FALSE(resolution.deployment_id);
        return std::nullopt;
    }
    EXPECT_EQ(resolution.deployment_id, deployments[*index].id);
    return deployments[*index].id;
}

TEST(ResolutionOrder, HighestFirmwareVersionWins) {
    DeviceFacts device = make_device();
    auto low = make_deployment(1, "low", "2.0.0");
    auto high = make_deployment(2, "high", "3.0.0");
    EXPECT_EQ(chosen_id(device, {low, high}), 2);
    EXPECT_EQ(chosen_id(device, {high, low}), 2);
}

TEST(ResolutionOrder, VersionUsesSemverPrecedenceNotText) {
    DeviceFacts device = make_device();
    EXPECT_EQ(chosen_id(device,
                        {make_deployment(1, "nine", "9.0.0"), make_deployment(2, "ten", "10.0.0")}),
              2);
    EXPECT_EQ(chosen_id(device, {make_deployment(1, "release", "2.0.0"),
                                 make_deployment(2, "candidate", "2.0.0-rc.1")}),
              1);
    EXPECT_EQ(chosen_id(device, {make_deployment(1, "rc2", "2.0.0-rc.2"),
                                 make_deployment(2, "rc10", "2.0.0-rc.10")}),
              2);
}

TEST(ResolutionOrder, HigherVersionBeatsMoreTags) {
    DeviceFacts device = make_device();
    auto tagged = make_deployment(1, "tagged", "2.0.0");
    tagged.tags = {"beta", "eu"};
    auto newer = make_deployment(2, "newer", "2.0.1");
    EXPECT_EQ(chosen_id(device, {tagged, newer}), 2);
}

TEST(ResolutionOrder, SameVersionMoreMatchingTagsWins) {
    DeviceFacts device = make_device();
    auto untagged = make_deployment(1, "untagged", "2.0.0");
    auto one = make_deployment(2, "one", "2.0.0");
    one.tags = {"beta"};
    auto two = make_deployment(3, "two", "2.0.0");
    two.tags = {"beta", "eu"};
    EXPECT_EQ(chosen_id(device, {untagged, one}), 2);
    EXPECT_EQ(chosen_id(device, {untagged, one, two}), 3);
    // With `or`, only the overlapping tags count.
    auto either = make_deployment(4, "either", "2.0.0");
    either.tags = {"beta", "us", "asia"};
    either.tag_operator = TagOperator::kOr;
    EXPECT_EQ(chosen_id(device, {either, two}), 3);
    EXPECT_EQ(chosen_id(device, {either, untagged}), 4);
}

TEST(ResolutionOrder, FullTieGoesToOldestDeployment) {
    DeviceFacts device = make_device();
    auto newer = make_deployment(7, "newer", "2.0.0");
    auto older = make_deployment(3, "older", "2.0.0+other-build");  // build metadata is ignored
    EXPECT_EQ(chosen_id(device, {newer, older}), 3);
    EXPECT_EQ(chosen_id(device, {older, newer}), 3);
}

TEST(ResolutionOrder, UnparsableFirmwareVersionRanksLowest) {
    DeviceFacts device = make_device();
    auto odd = make_deployment(1, "odd", "v9.9.9");
    auto plain = make_deployment(2, "plain", "0.0.1");
    EXPECT_EQ(chosen_id(device, {odd, plain}), 2);
    EXPECT_EQ(chosen_id(device, {odd}), 1);
}

TEST(ResolutionOrder, OnlyMatchingDeploymentsCompete) {
    DeviceFacts device = make_device();
    auto best_but_inactive = make_deployment(1, "inactive", "9.0.0");
    best_but_inactive.is_active = false;
    auto other_product = make_deployment(2, "other", "8.0.0");
    other_product.product_id = 2;
    auto ok = make_deployment(3, "ok", "2.0.0");
    EXPECT_EQ(chosen_id(device, {best_but_inactive, other_product, ok}), 3);
    EXPECT_EQ(chosen_id(device, {best_but_inactive, other_product}), std::nullopt);
    EXPECT_EQ(chosen_id(device, {}), std::nullopt);
}

TEST(ResolutionOrder, DeterministicForEveryInputOrder) {
    DeviceFacts device = make_device();
    std::vector<DeploymentFacts> deployments = {
        make_deployment(5, "a", "2.0.0"), make_deployment(4, "b", "2.0.0"),
        make_deployment(9, "c", "1.9.0"), make_deployment(2, "d", "2.0.0-rc.1"),
        make_deployment(8, "e", "2.0.0")};
    deployments[4].tags = {"eu"};
    deployments[1].tags = {"eu"};
    std::vector<std::size_t> order = {0, 1, 2, 3, 4};
    int permutations = 0;
    do {
        std::vector<DeploymentFacts> shuffled;
        for (auto i : order) {
            shuffled.push_back(deployments[i]);
        }
        EXPECT_EQ(chosen_id(device, shuffled), 4);
        ++permutations;
    } while (std::next_permutation(order.begin(), order.end()));
    EXPECT_EQ(permutations, 120);
}

TEST(ResolutionUpgradePath, DeviceWalksFromOneDeploymentToTheNext) {
    auto to_two = make_deployment(1, "1.x to 2.0", "2.0.0");
    to_two.version_requirement = "~> 1.0";
    auto to_three = make_deployment(2, "2.x to 3.0", "3.0.0");
    to_three.version_requirement = ">= 2.0.0";
    const std::vector<DeploymentFacts> deployments = {to_two, to_three};

    DeviceFacts device = make_device();
    device.version = "1.4.0";
    auto step1 = resolve(device, deployments, kNow);
    EXPECT_EQ(step1.deployment_id, 1);
    EXPECT_TRUE(step1.eligibility.eligible) << step1.eligibility.reason;

    device.version = "2.0.0";
    device.firmware_uuid = to_two.firmware_uuid;
    auto step2 = resolve(device, deployments, kNow);
    EXPECT_EQ(step2.deployment_id, 2);
    EXPECT_TRUE(step2.eligibility.eligible) << step2.eligibility.reason;

    device.version = "3.0.0";
    device.firmware_uuid = to_three.firmware_uuid;
    auto step3 = resolve(device, deployments, kNow);
    EXPECT_EQ(step3.deployment_id, 2);
    EXPECT_FALSE(step3.eligibility.eligible);
    EXPECT_EQ(step3.eligibility.blocker, Blocker::kAlreadyOnTarget);
}

struct EligibilityCase {
    const char* name;
    std::function<void(DeviceFacts&)> setup;
    Blocker expected;
};

TEST(ResolutionEligibility, EveryBlockerInTable) {
    const auto target = make_deployment(1, "d", "2.0.0");
    const std::vector<EligibilityCase> cases = {
        {"eligible", [](DeviceFacts&) {}, Blocker::kNone},
        {"already on target", [&](DeviceFacts& d) { d.firmware_uuid = target.firmware_uuid; },
         Blocker::kAlreadyOnTarget},
        {"updates disabled", [](DeviceFacts& d) { d.updates_enabled = false; },
         Blocker::kUpdatesDisabled},
        {"penalty box", [](DeviceFacts& d) { d.updates_blocked_until = kNow + 1s; },
         Blocker::kPenaltyBox},
        {"penalty box ends exactly now", [](DeviceFacts& d) { d.updates_blocked_until = kNow; },
         Blocker::kNone},
        {"penalty box in the past", [](DeviceFacts& d) { d.updates_blocked_until = kNow - 1h; },
         Blocker::kNone},
        {"update in flight", [](DeviceFacts& d) { d.update_in_flight = true; },
         Blocker::kUpdateInFlight},
        {"already on target comes first",
         [&](DeviceFacts& d) {
             d.firmware_uuid = target.firmware_uuid;
             d.updates_enabled = false;
             d.updates_blocked_until = kNow + 1h;
             d.update_in_flight = true;
         },
         Blocker::kAlreadyOnTarget},
        {"updates disabled before penalty box",
         [](DeviceFacts& d) {
             d.updates_enabled = false;
             d.updates_blocked_until = kNow + 1h;
             d.update_in_flight = true;
         },
         Blocker::kUpdatesDisabled},
        {"penalty box before in flight",
         [](DeviceFacts& d) {
             d.updates_blocked_until = kNow + 1h;
             d.update_in_flight = true;
         },
         Blocker::kPenaltyBox},
    };
    for (const auto& c : cases) {
        DeviceFacts device = make_device();
        c.setup(device);
        auto eligibility = check_eligibility(device, target, kNow);
        EXPECT_EQ(eligibility.blocker, c.expected) << c.name << ": " << eligibility.reason;
        EXPECT_EQ(eligibility.eligible, c.expected == Blocker::kNone) << c.name;
        EXPECT_FALSE(eligibility.reason.empty()) << c.name;

        auto resolution = resolve(device, std::vector<DeploymentFacts>{target}, kNow);
        ASSERT_EQ(resolution.explanations.size(), 1u);
        EXPECT_EQ(resolution.explanations[0].verdict, Verdict::kChosen);
        EXPECT_EQ(resolution.explanations[0].blocker, c.expected) << c.name;
    }
}

TEST(ResolutionEligibility, PenaltyBoxReasonNamesTheEnd) {
    DeviceFacts device = make_device();
    device.updates_blocked_until = kNow + 90min;
    auto eligibility = check_eligibility(device, make_deployment(1, "d", "2.0.0"), kNow);
    EXPECT_EQ(eligibility.reason, "device is in the penalty box until 2001-09-09T03:16:40Z");
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

TEST(ResolutionExplain, EveryDeploymentOfTheProductIsExplained) {
    DeviceFacts device = make_device();
    auto inactive = make_deployment(1, "inactive", "5.0.0");
    inactive.is_active = false;
    auto platform = make_deployment(2, "platform", "5.0.0");
    platform.platform = "bbb";
    auto architecture = make_deployment(3, "architecture", "5.0.0");
    architecture.architecture = "x86_64";
    auto tags_and = make_deployment(4, "tags-and", "5.0.0");
    tags_and.tags = {"beta", "us", "canary"};
    auto tags_or = make_deployment(5, "tags-or", "5.0.0");
    tags_or.tags = {"us"};
    tags_or.tag_operator = TagOperator::kOr;
    auto version = make_deployment(6, "version", "5.0.0");
    version.version_requirement = "~> 3.0";
    auto chosen = make_deployment(7, "chosen", "2.1.0");
    auto outranked = make_deployment(8, "outranked", "2.0.0");
    auto other_product = make_deployment(9, "other-product", "9.0.0");
    other_product.product_id = 42;
    auto tied = make_deployment(10, "tied", "2.1.0");

    auto resolution = resolve(device,
                              {inactive, platform, architecture, tags_and, tags_or, version, chosen,
                               outranked, other_product, tied},
                              kNow);
    ASSERT_EQ(resolution.chosen, 6u);
    EXPECT_EQ(resolution.deployment_id, 7);
    EXPECT_TRUE(resolution.eligibility.eligible);
    ASSERT_EQ(resolution.explanations.size(), 9u);  // the other product's deployment is omitted

    struct Expected {
        std::int64_t id;
        Verdict verdict;
        Exclusion exclusion;
        std::string reason_part;
    };
    const std::vector<Expected> expected = {
        {1, Verdict::kExcluded, Exclusion::kInactive, "not active"},
        {2, Verdict::kExcluded, Exclusion::kPlatform, "platform \"bbb\" differs"},
        {3, Verdict::kExcluded, Exclusion::kArchitecture, "\"x86_64\" differs"},
        {4, Verdict::kExcluded, Exclusion::kTags, "lacks the tags \"canary\", \"us\""},
        {5, Verdict::kExcluded, Exclusion::kTags, "none of the tags \"us\""},
        {6, Verdict::kExcluded, Exclusion::kVersionRequirement,
         "\"1.2.0\" does not satisfy \"~> 3.0\""},
        {7, Verdict::kChosen, Exclusion::kNone, "eligible for firmware \"2.1.0\""},
        {8, Verdict::kOutranked, Exclusion::kNone,
         "outranked by \"chosen\" (higher firmware version"},
        {10, Verdict::kOutranked, Exclusion::kNone, "outranked by \"chosen\" (same firmware"},
    };
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const auto& got = resolution.explanations[i];
        EXPECT_EQ(got.deployment_id, expected[i].id);
        EXPECT_EQ(got.verdict, expected[i].verdict) << got.deployment_name;
        EXPECT_EQ(got.exclusion, expected[i].exclusion) << got.deployment_name;
        EXPECT_EQ(got.blocker, Blocker::kNone) << got.deployment_name;
        EXPECT_TRUE(contains(got.reason, expected[i].reason_part))
            << got.deployment_name << ": " << got.reason;
    }
}

TEST(ResolutionExplain, NothingMatches) {
    DeviceFacts device = make_device();
    device.version = "garbage";
    auto version = make_deployment(1, "needs-version", "2.0.0");
    version.version_requirement = ">= 1.0.0";
    auto resolution = resolve(device, std::vector<DeploymentFacts>{version}, kNow);
    EXPECT_FALSE(resolution.chosen);
    EXPECT_FALSE(resolution.deployment_id);
    EXPECT_FALSE(resolution.eligibility.eligible);
    EXPECT_EQ(resolution.eligibility.blocker, Blocker::kNone);
    ASSERT_EQ(resolution.explanations.size(), 1u);
    EXPECT_TRUE(contains(resolution.explanations[0].reason, "is not valid SemVer"))
        << resolution.explanations[0].reason;
}

TEST(ResolutionExplain, InvalidStoredRequirementIsExplained) {
    auto broken = make_deployment(1, "broken", "2.0.0");
    broken.version_requirement = "~> 1";
    auto resolution = resolve(make_device(), std::vector<DeploymentFacts>{broken}, kNow);
    ASSERT_EQ(resolution.explanations.size(), 1u);
    EXPECT_EQ(resolution.explanations[0].reason, "version requirement \"~> 1\" is invalid");
}

TEST(ResolutionExplain, HostileDeviceTextIsBoundedAndAscii) {
    DeviceFacts device = make_device();
    device.version = std::string(10'000, 'x') + "\"\n\xff";
    auto version = make_deployment(1, "v", "2.0.0");
    version.version_requirement = ">= 1.0.0";
    auto resolution = resolve(device, std::vector<DeploymentFacts>{version}, kNow);
    ASSERT_EQ(resolution.explanations.size(), 1u);
    const std::string& reason = resolution.explanations[0].reason;
    EXPECT_LT(reason.size(), 200u);
    EXPECT_TRUE(
        std::all_of(reason.begin(), reason.end(), [](char c) { return c >= 0x20 && c < 0x7f; }));

    device.version = "1.0.0\"\n\xff";
    resolution = resolve(device, std::vector<DeploymentFacts>{version}, kNow);
    EXPECT_TRUE(contains(resolution.explanations[0].reason, "\"1.0.0\\x22\\x0a\\xff\""))
        << resolution.explanations[0].reason;
}

TEST(ResolutionApi, RequirementValidationAndCodes) {
    EXPECT_TRUE(is_valid_requirement(""));
    EXPECT_TRUE(is_valid_requirement("~> 1.2"));
    EXPECT_TRUE(is_valid_requirement(">= 1.0.0 and < 2.0.0 or == 3.0.0"));
    EXPECT_FALSE(is_valid_requirement("~> 1"));
    EXPECT_FALSE(is_valid_requirement(" "));
    EXPECT_FALSE(is_valid_requirement("latest"));

    EXPECT_EQ(parse_tag_operator("and"), TagOperator::kAnd);
    EXPECT_EQ(parse_tag_operator("or"), TagOperator::kOr);
    EXPECT_EQ(parse_tag_operator("AND"), std::nullopt);
    EXPECT_EQ(to_string(TagOperator::kOr), "or");
    EXPECT_EQ(to_string(Exclusion::kVersionRequirement), "version_requirement");
    EXPECT_EQ(to_string(Blocker::kPenaltyBox), "penalty_box");
    EXPECT_EQ(to_string(Verdict::kOutranked), "outranked");

    CompiledDeployment compiled(make_deployment(1, "d", "not-semver"));
    EXPECT_TRUE(compiled.requirement_valid());
    EXPECT_FALSE(compiled.requirement());
    EXPECT_FALSE(compiled.firmware_version());
}

}  // namespace
}  // namespace otahub::resolution
