#include "server/domain/resolution.hpp"

#include <algorithm>
#include <array>
#include <ctime>
#include <utility>

namespace otahub::resolution {
namespace {

// The device side, prepared once per resolution: parsed version, sorted distinct tags.
struct DeviceView {
    const DeviceFacts& facts;
    std::optional<semver::Version> version;
    std::vector<std::string_view> tags;
};

DeviceView view_of(const DeviceFacts& device) {
    DeviceView view{device, semver::parse_version(device.version), {}};
    view.tags.assign(device.tags.begin(), device.tags.end());
    std::sort(view.tags.begin(), view.tags.end());
    view.tags.erase(std::unique(view.tags.begin(), view.tags.end()), view.tags.end());
    return view;
}

// How many of the deployment's (distinct) tags the device carries; both lists are sorted.
std::size_t common_tag_count(const std::vector<std::string>& deployment_tags,
                             const std::vector<std::string_view>& device_tags) {
    std::size_t count = 0;
    auto a = deployment_tags.begin();
    auto b = device_tags.begin();
    while (a != deployment_tags.end() && b != device_tags.end()) {
        std::string_view left = *a;
        if (left < *b) {
            ++a;
        } else if (*b < left) {
            ++b;
        } else {
            ++count;
            ++a;
            ++b;
        }
    }
    return count;
}

bool tags_match(const CompiledDeployment& deployment, std::size_t common) {
    if (deployment.tags().empty()) {
        return true;
    }
    if (deployment.facts().tag_operator == TagOperator::kOr) {
        return common > 0;
    }
    return common == deployment.tags().size();
}

bool version_matches(const DeviceView& device, const CompiledDeployment& deployment) {
    if (deployment.facts().version_requirement.empty()) {
        return true;  // NervesHub: "" means any version, even one that does not parse
    }
    if (!deployment.requirement() || !device.version) {
        return false;
    }
    return deployment.requirement()->matches(*device.version);
}

Exclusion exclusion_for(const DeviceView& device, const CompiledDeployment& deployment,
                        std::size_t common) {
    const DeploymentFacts& facts = deployment.facts();
    if (facts.product_id != device.facts.product_id) {
        return Exclusion::kOtherProduct;
    }
    if (!facts.is_active) {
        return Exclusion::kInactive;
    }
    if (facts.platform != device.facts.platform) {
        return Exclusion::kPlatform;
    }
    if (facts.architecture != device.facts.architecture) {
        return Exclusion::kArchitecture;
    }
    if (!tags_match(deployment, common)) {
        return Exclusion::kTags;
    }
    if (!version_matches(device, deployment)) {
        return Exclusion::kVersionRequirement;
    }
    return Exclusion::kNone;
}

// Which criterion made `a` rank above `b`, if it does.
enum class RankReason { kNotAbove, kFirmwareVersion, kMatchingTags, kOlder };

RankReason ranks_above(const CompiledDeployment& a, std::size_t a_common,
                       const CompiledDeployment& b, std::size_t b_common) {
    const auto& a_version = a.firmware_version();
    const auto& b_version = b.firmware_version();
    // A firmware version that does not parse ranks below every one that does.
    int by_version = 0;
    if (a_version && b_version) {
        by_version = semver::compare(*a_version, *b_version);
    } else if (a_version.has_value() != b_version.has_value()) {
        by_version = a_version ? 1 : -1;
    }
    if (by_version != 0) {
        return by_version > 0 ? RankReason::kFirmwareVersion : RankReason::kNotAbove;
    }
    if (a_common != b_common) {
        return a_common > b_common ? RankReason::kMatchingTags : RankReason::kNotAbove;
    }
    return a.facts().id < b.facts().id ? RankReason::kOlder : RankReason::kNotAbove;
}

// Untrusted text in a human sentence: printable ASCII kept, other bytes as \xNN, length capped.
std::string in_quotes(std::string_view text) {
    constexpr std::size_t kMaxShown = 64;
    constexpr std::string_view kHex = "0123456789abcdef";
    std::string out = "\"";
    for (std::size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 0xf];
        }
    }
    if (text.size() > kMaxShown) {
        out += "...";
    }
    out += '"';
    return out;
}

std::string join_tags(const std::vector<std::string>& tags) {
    std::string out;
    for (const auto& tag : tags) {
        if (!out.empty()) {
            out += ", ";
        }
        out += in_quotes(tag);
    }
    return out;
}

std::string format_utc(Clock::time_point when) {
    std::time_t seconds = Clock::to_time_t(when);
    std::tm tm{};
    std::array<char, 64> buffer{};
    if (gmtime_r(&seconds, &tm) == nullptr ||
        std::strftime(buffer.data(), buffer.size(), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        return std::to_string(seconds) + " (unix time)";
    }
    return buffer.data();
}

std::string exclusion_reason(Exclusion exclusion, const DeviceView& device,
                             const CompiledDeployment& deployment) {
    const DeploymentFacts& facts = deployment.facts();
    switch (exclusion) {
        case Exclusion::kNone:
            return "matches";
        case Exclusion::kOtherProduct:
            return "deployment belongs to another product";
        case Exclusion::kInactive:
            return "deployment is not active";
        case Exclusion::kPlatform:
            return "firmware platform " + in_quotes(facts.platform) +
                   " differs from the device's " + in_quotes(device.facts.platform);
        case Exclusion::kArchitecture:
            return "firmware architecture " + in_quotes(facts.architecture) +
                   " differs from the device's " + in_quotes(device.facts.architecture);
        case Exclusion::kTags: {
            if (facts.tag_operator == TagOperator::kOr) {
                return "device has none of the tags " + join_tags(deployment.tags());
            }
            std::vector<std::string> missing;
            for (const auto& tag : deployment.tags()) {
                if (!std::binary_search(device.tags.begin(), device.tags.end(),
                                        std::string_view(tag))) {
                    missing.push_back(tag);
                }
            }
            return "device lacks the tags " + join_tags(missing);
        }
        case Exclusion::kVersionRequirement:
            if (!deployment.requirement_valid()) {
                return "version requirement " + in_quotes(facts.version_requirement) +
                       " is invalid";
            }
            if (!device.version) {
                return "device version " + in_quotes(device.facts.version) +
                       " is not valid SemVer, so it cannot satisfy " +
                       in_quotes(facts.version_requirement);
            }
            return "device version " + in_quotes(device.facts.version) + " does not satisfy " +
                   in_quotes(facts.version_requirement);
    }
    return "excluded";
}

std::string outranked_reason(const CompiledDeployment& winner, std::size_t winner_common,
                             const CompiledDeployment& loser, std::size_t loser_common) {
    std::string out = "outranked by " + in_quotes(winner.facts().name);
    switch (ranks_above(winner, winner_common, loser, loser_common)) {
        case RankReason::kFirmwareVersion:
            return out + " (higher firmware version " + in_quotes(winner.facts().firmware_version) +
                   " over " + in_quotes(loser.facts().firmware_version) + ")";
        case RankReason::kMatchingTags:
            return out +
                   " (same firmware version, more matching tags: " + std::to_string(winner_common) +
                   " over " + std::to_string(loser_common) + ")";
        case RankReason::kOlder:
            return out + " (same firmware version and matching tags, older deployment)";
        case RankReason::kNotAbove:
            break;
    }
    return out;
}

}  // namespace

CompiledDeployment::CompiledDeployment(DeploymentFacts facts)
    : facts_(std::move(facts)),
      firmware_version_(semver::parse_version(facts_.firmware_version)),
      tags_(facts_.tags) {
    if (!facts_.version_requirement.empty()) {
        requirement_ = semver::Requirement::parse(facts_.version_requirement);
        requirement_valid_ = requirement_.has_value();
    }
    std::sort(tags_.begin(), tags_.end());
    tags_.erase(std::unique(tags_.begin(), tags_.end()), tags_.end());
}

std::vector<CompiledDeployment> compile(const std::vector<DeploymentFacts>& deployments) {
    std::vector<CompiledDeployment> compiled;
    compiled.reserve(deployments.size());
    for (const auto& deployment : deployments) {
        compiled.emplace_back(deployment);
    }
    return compiled;
}

bool is_valid_requirement(std::string_view requirement) {
    return requirement.empty() || semver::Requirement::parse(requirement).has_value();
}

Exclusion first_exclusion(const DeviceFacts& device, const CompiledDeployment& deployment) {
    DeviceView view = view_of(device);
    return exclusion_for(view, deployment, common_tag_count(deployment.tags(), view.tags));
}

bool matches(const DeviceFacts& device, const CompiledDeployment& deployment) {
    return first_exclusion(device, deployment) == Exclusion::kNone;
}

bool matches(const DeviceFacts& device, const DeploymentFacts& deployment) {
    return matches(device, CompiledDeployment(deployment));
}

std::optional<std::size_t> choose(const DeviceFacts& device,
                                  std::span<const CompiledDeployment> deployments) {
    DeviceView view = view_of(device);
    std::optional<std::size_t> best;
    std::size_t best_common = 0;
    for (std::size_t i = 0; i < deployments.size(); ++i) {
        std::size_t common = common_tag_count(deployments[i].tags(), view.tags);
        if (exclusion_for(view, deployments[i], common) != Exclusion::kNone) {
            continue;
        }
        // Strictly above only: equal ranks (duplicate ids) keep the earlier entry,
        // deterministically.
        if (!best || ranks_above(deployments[i], common, deployments[*best], best_common) !=
                         RankReason::kNotAbove) {
            best = i;
            best_common = common;
        }
    }
    return best;
}

Eligibility check_eligibility(const DeviceFacts& device, const DeploymentFacts& deployment,
                              Clock::time_point now) {
    if (deployment.firmware_uuid == device.firmware_uuid) {
        return {
            false, Blocker::kAlreadyOnTarget,
            "device already runs the deployment's firmware " + in_quotes(deployment.firmware_uuid)};
    }
    if (!device.updates_enabled) {
        return {false, Blocker::kUpdatesDisabled, "updates are disabled for the device"};
    }
    if (device.updates_blocked_until && *device.updates_blocked_until > now) {
        return {false, Blocker::kPenaltyBox,
                "device is in the penalty box until " + format_utc(*device.updates_blocked_until)};
    }
    if (device.update_in_flight) {
        return {false, Blocker::kUpdateInFlight, "an update is already in flight for the device"};
    }
    return {true, Blocker::kNone,
            "eligible for firmware " + in_quotes(deployment.firmware_version) + " (" +
                in_quotes(deployment.firmware_uuid) + ")"};
}

Resolution resolve(const DeviceFacts& device, std::span<const CompiledDeployment> deployments,
                   Clock::time_point now) {
    DeviceView view = view_of(device);
    std::vector<std::size_t> commons(deployments.size());
    std::vector<Exclusion> exclusions(deployments.size());
    Resolution resolution;
    std::size_t best_common = 0;
    for (std::size_t i = 0; i < deployments.size(); ++i) {
        commons[i] = common_tag_count(deployments[i].tags(), view.tags);
        exclusions[i] = exclusion_for(view, deployments[i], commons[i]);
        if (exclusions[i] != Exclusion::kNone) {
            continue;
        }
        if (!resolution.chosen ||
            ranks_above(deployments[i], commons[i], deployments[*resolution.chosen], best_common) !=
                RankReason::kNotAbove) {
            resolution.chosen = i;
            best_common = commons[i];
        }
    }

    if (resolution.chosen) {
        const DeploymentFacts& chosen = deployments[*resolution.chosen].facts();
        resolution.deployment_id = chosen.id;
        resolution.eligibility = check_eligibility(device, chosen, now);
    } else {
        resolution.eligibility = {false, Blocker::kNone, "no deployment matches the device"};
    }

    for (std::size_t i = 0; i < deployments.size(); ++i) {
        if (exclusions[i] == Exclusion::kOtherProduct) {
            continue;
        }
        const DeploymentFacts& facts = deployments[i].facts();
        Explanation explanation;
        explanation.deployment_id = facts.id;
        explanation.deployment_name = facts.name;
        if (exclusions[i] != Exclusion::kNone) {
            explanation.verdict = Verdict::kExcluded;
            explanation.exclusion = exclusions[i];
            explanation.reason = exclusion_reason(exclusions[i], view, deployments[i]);
        } else if (i == resolution.chosen) {
            explanation.verdict = Verdict::kChosen;
            explanation.blocker = resolution.eligibility.blocker;
            explanation.reason = resolution.eligibility.eligible
                                     ? "chosen; " + resolution.eligibility.reason
                                     : "chosen, not eligible: " + resolution.eligibility.reason;
        } else {
            explanation.verdict = Verdict::kOutranked;
            explanation.reason = outranked_reason(deployments[*resolution.chosen], best_common,
                                                  deployments[i], commons[i]);
        }
        resolution.explanations.push_back(std::move(explanation));
    }
    return resolution;
}

Resolution resolve(const DeviceFacts& device, const std::vector<DeploymentFacts>& deployments,
                   Clock::time_point now) {
    std::vector<CompiledDeployment> compiled = compile(deployments);
    return resolve(device, std::span<const CompiledDeployment>(compiled), now);
}

std::string_view to_string(Exclusion exclusion) {
    switch (exclusion) {
        case Exclusion::kNone:
            return "none";
        case Exclusion::kOtherProduct:
            return "other_product";
        case Exclusion::kInactive:
            return "inactive";
        case Exclusion::kPlatform:
            return "platform";
        case Exclusion::kArchitecture:
            return "architecture";
        case Exclusion::kTags:
            return "tags";
        case Exclusion::kVersionRequirement:
            return "version_requirement";
    }
    return "unknown";
}

std::string_view to_string(Blocker blocker) {
    switch (blocker) {
        case Blocker::kNone:
            return "none";
        case Blocker::kAlreadyOnTarget:
            return "already_on_target";
        case Blocker::kUpdatesDisabled:
            return "updates_disabled";
        case Blocker::kPenaltyBox:
            return "penalty_box";
        case Blocker::kUpdateInFlight:
            return "update_in_flight";
    }
    return "unknown";
}

std::string_view to_string(Verdict verdict) {
    switch (verdict) {
        case Verdict::kChosen:
            return "chosen";
        case Verdict::kOutranked:
            return "outranked";
        case Verdict::kExcluded:
            return "excluded";
    }
    return "unknown";
}

std::string_view to_string(TagOperator tag_operator) {
    return tag_operator == TagOperator::kOr ? "or" : "and";
}

std::optional<TagOperator> parse_tag_operator(std::string_view text) {
    if (text == "and") {
        return TagOperator::kAnd;
    }
    if (text == "or") {
        return TagOperator::kOr;
    }
    return std::nullopt;
}

}  // namespace otahub::resolution
