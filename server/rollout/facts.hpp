#pragma once

#include <chrono>

#include "db/repositories/deployments_repository.hpp"
#include "db/repositories/rollouts_repository.hpp"
#include "server/domain/resolution.hpp"

/// Conversions from database rows to the facts the resolution rules read.
namespace otahub::rollout {

/// The resolution facts of a stored deployment.
inline resolution::DeploymentFacts facts_of(const db::DeploymentRow& d) {
    resolution::DeploymentFacts facts;
    facts.id = d.id;
    facts.name = d.name;
    facts.product_id = d.product_id;
    facts.is_active = d.is_active;
    facts.firmware_uuid = d.firmware_uuid;
    facts.firmware_version = d.firmware_version;
    facts.platform = d.platform;
    facts.architecture = d.architecture;
    facts.version_requirement = d.conditions_version;
    facts.tags = d.conditions_tags;
    facts.tag_operator =
        resolution::parse_tag_operator(d.tag_operator).value_or(resolution::TagOperator::kAnd);
    return facts;
}

/// The resolution facts of a device row read for explanations and previews.
inline resolution::DeviceFacts facts_of(const db::DeviceResolutionRow& d) {
    resolution::DeviceFacts facts;
    facts.product_id = d.product_id;
    facts.platform = d.platform;
    facts.architecture = d.architecture;
    facts.version = d.version;
    facts.firmware_uuid = d.firmware_uuid;
    facts.tags = d.tags;
    facts.updates_enabled = d.updates_enabled;
    if (d.updates_blocked_until) {
        facts.updates_blocked_until =
            resolution::Clock::time_point{std::chrono::seconds{*d.updates_blocked_until}};
    }
    facts.update_in_flight = d.update_in_flight;
    return facts;
}

/// The resolution facts of a rollout candidate (already free to update: enabled, not blocked,
/// nothing in flight).
inline resolution::DeviceFacts facts_of(const db::RolloutCandidate& c, std::int64_t product_id) {
    resolution::DeviceFacts facts;
    facts.product_id = product_id;
    facts.platform = c.platform;
    facts.architecture = c.architecture;
    facts.version = c.version;
    facts.firmware_uuid = c.firmware_uuid;
    facts.tags = c.tags;
    return facts;
}

}  // namespace otahub::rollout
