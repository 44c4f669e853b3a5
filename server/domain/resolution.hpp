#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "server/domain/semver.hpp"

namespace otahub::resolution {

/// The clock deployment rules are evaluated against; callers pass `now` explicitly.
using Clock = std::chrono::system_clock;

/// How a deployment's tags are compared with a device's tags.
enum class TagOperator {
    kAnd,  // every deployment tag is on the device
    kOr,   // at least one deployment tag is on the device
};

/// What the rules need to know about a device (its reported firmware and update state).
struct DeviceFacts {
    std::int64_t product_id = 0;
    std::string platform;
    std::string architecture;
    /// The reported `nerves_fw_version`; may be anything, it is untrusted.
    std::string version;
    /// The running `nerves_fw_uuid`.
    std::string firmware_uuid;
    std::vector<std::string> tags;
    bool updates_enabled = true;
    /// Penalty box: no automatic update while this is later than now.
    std::optional<Clock::time_point> updates_blocked_until;
    bool update_in_flight = false;
};

/// What the rules need to know about a deployment and the firmware of its current release.
struct DeploymentFacts {
    std::int64_t id = 0;
    std::string name;
    std::int64_t product_id = 0;
    bool is_active = false;
    std::string firmware_uuid;
    std::string firmware_version;
    /// Platform and architecture of the release firmware.
    std::string platform;
    std::string architecture;
    /// Elixir requirement text; "" means any version.
    std::string version_requirement;
    std::vector<std::string> tags;
    TagOperator tag_operator = TagOperator::kAnd;
};

/// A deployment with its requirement, firmware version and tags parsed once, to match many devices.
class CompiledDeployment {
  public:
    explicit CompiledDeployment(DeploymentFacts facts);

    const DeploymentFacts& facts() const { return facts_; }
    /// The parsed requirement; empty when the text is "" (any version) or invalid.
    const std::optional<semver::Requirement>& requirement() const { return requirement_; }
    /// False when the requirement text is neither "" nor a valid requirement (it then matches no
    /// device).
    bool requirement_valid() const { return requirement_valid_; }
    /// The parsed firmware version; empty when it is not valid SemVer (it then ranks lowest).
    const std::optional<semver::Version>& firmware_version() const { return firmware_version_; }
    /// The deployment's tags, sorted and without duplicates.
    const std::vector<std::string>& tags() const { return tags_; }

  private:
    DeploymentFacts facts_;
    std::optional<semver::Requirement> requirement_;
    bool requirement_valid_ = true;
    std::optional<semver::Version> firmware_version_;
    std::vector<std::string> tags_;
};

/// Compiles every deployment of a list, keeping its order.
std::vector<CompiledDeployment> compile(const std::vector<DeploymentFacts>& deployments);

/// The first matching rule that keeps a deployment from a device, checked in declaration order.
enum class Exclusion {
    kNone,
    kOtherProduct,
    kInactive,
    kPlatform,
    kArchitecture,
    kTags,
    kVersionRequirement,
};

/// Why a device may not be sent the chosen deployment's firmware right now.
enum class Blocker {
    kNone,
    kAlreadyOnTarget,
    kUpdatesDisabled,
    kPenaltyBox,
    kUpdateInFlight,
};

/// The part a deployment played in a resolution.
enum class Verdict {
    kChosen,
    kOutranked,
    kExcluded,
};

/// Whether a device may be updated to a deployment's firmware, and if not, the first reason why.
struct Eligibility {
    bool eligible = false;
    Blocker blocker = Blocker::kNone;
    std::string reason;
};

/// One deployment's fate for one device, for the "explain" API.
struct Explanation {
    std::int64_t deployment_id = 0;
    std::string deployment_name;
    Verdict verdict = Verdict::kExcluded;
    /// Set when the verdict is kExcluded.
    Exclusion exclusion = Exclusion::kNone;
    /// Set when the verdict is kChosen and the device is not eligible.
    Blocker blocker = Blocker::kNone;
    /// A human sentence, e.g. "outranked by prod-v2".
    std::string reason;
};

/// The result of resolving a device against its product's deployments.
struct Resolution {
    /// Index of the chosen deployment in the input list; empty when none matches.
    std::optional<std::size_t> chosen;
    /// Id of the chosen deployment; empty when none matches.
    std::optional<std::int64_t> deployment_id;
    /// Eligibility for the chosen deployment's firmware; not eligible when nothing was chosen.
    Eligibility eligibility;
    /// One entry per deployment of the device's product, in input order.
    std::vector<Explanation> explanations;
};

/// Whether a deployment's version condition is acceptable: "" (any) or a valid Elixir requirement.
bool is_valid_requirement(std::string_view requirement);

/// The first rule excluding `deployment` for `device`, or kNone when it matches.
Exclusion first_exclusion(const DeviceFacts& device, const CompiledDeployment& deployment);

/// Whether the device matches the deployment (product, active, platform, architecture, tags,
/// version).
bool matches(const DeviceFacts& device, const CompiledDeployment& deployment);
/// As above, parsing the deployment on the fly; prefer CompiledDeployment for many devices.
bool matches(const DeviceFacts& device, const DeploymentFacts& deployment);

/// The deployment a device belongs to: matching ones ranked by highest firmware version, then most
/// matching tags, then smallest id. Returns its index, without building explanations.
std::optional<std::size_t> choose(const DeviceFacts& device,
                                  std::span<const CompiledDeployment> deployments);

/// Whether the device may be sent `deployment`'s firmware at `now`.
Eligibility check_eligibility(const DeviceFacts& device, const DeploymentFacts& deployment,
                              Clock::time_point now);

/// Chooses a deployment, checks eligibility and explains every deployment of the device's product.
Resolution resolve(const DeviceFacts& device, std::span<const CompiledDeployment> deployments,
                   Clock::time_point now);
/// As above, compiling the deployments first.
Resolution resolve(const DeviceFacts& device, const std::vector<DeploymentFacts>& deployments,
                   Clock::time_point now);

/// Stable snake_case codes for the API ("version_requirement", "penalty_box", "outranked", ...).
std::string_view to_string(Exclusion exclusion);
/// Stable snake_case code of a blocker.
std::string_view to_string(Blocker blocker);
/// Stable snake_case code of a verdict.
std::string_view to_string(Verdict verdict);
/// "and" or "or", as NervesHub stores it.
std::string_view to_string(TagOperator tag_operator);
/// Reads "and" / "or"; anything else is empty.
std::optional<TagOperator> parse_tag_operator(std::string_view text);

}  // namespace otahub::resolution
