#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "db/database.hpp"
#include "db/repositories/deployments_repository.hpp"

namespace otahub::db {

/// A device that could be sent an update now: not deleted, updates enabled, not in the penalty
/// box, no update in flight (the rollout engine still resolves its deployment).
struct RolloutCandidate {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::string identifier;
    std::string platform;
    std::string architecture;
    std::string version;
    std::string firmware_uuid;
    std::vector<std::string> tags;
};

/// One update sent to a device (`device_updates` row).
struct DeviceUpdateRow {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::int64_t device_id = 0;
    std::int64_t product_id = 0;
    std::optional<std::int64_t> deployment_id;
    std::optional<std::string> deployment_name;
    std::optional<std::int64_t> firmware_id;
    std::string firmware_uuid;
    std::string firmware_version;
    /// "deployment" or "manual".
    std::string source;
    /// in_flight, succeeded, failed, expired, rescheduled, cancelled.
    std::string status;
    std::optional<std::string> reason;
    std::optional<int> progress;
    std::string started_at;
    std::string expires_at;
    std::optional<std::string> finished_at;
};

/// Update counts of a deployment.
struct DeploymentCounts {
    std::int64_t in_flight = 0;
    std::int64_t succeeded = 0;
    std::int64_t failed = 0;
};

/// What a failed update led to.
struct FailureOutcome {
    /// The device entered the penalty box (until this ISO 8601 time).
    std::optional<std::string> penalty_until;
    /// The deployment was paused now, for this reason.
    std::optional<std::string> paused_reason;
};

/// In-flight updates of one deployment (metrics).
struct InFlightCount {
    std::int64_t deployment_id = 0;
    std::string deployment;
    std::string product;
    std::string org;
    std::int64_t count = 0;
};

/// Update bookkeeping of deployments: in-flight slots, history, penalty box, fleet pause.
namespace rollouts {

/// Active deployments of a product, oldest first.
std::vector<DeploymentRow> active_deployments(Tx& tx, std::int64_t product_id);
/// Which of `device_ids` (devices of `product_id`) can be sent an update now, longest
/// connected first.
std::vector<RolloutCandidate> candidates(Tx& tx, std::int64_t product_id,
                                         const std::vector<std::int64_t>& device_ids);
/// Locks the deployment row (every node's slot taking serialises on it) and returns how many
/// more updates it may start: a large number when unlimited, nullopt when it is no longer
/// active or no longer points at `firmware_id`.
std::optional<std::int64_t> lock_slots(Tx& tx, std::int64_t deployment_id,
                                       std::int64_t firmware_id);
/// Starts in-flight updates of `deployment` for `device_ids`; a device that already has one is
/// skipped. Returns the devices that got one.
std::vector<std::int64_t> start(Tx& tx, const DeploymentRow& deployment,
                                const std::vector<std::int64_t>& device_ids);
/// Starts a manual in-flight update (cancelling any other in flight) and turns automatic
/// updates off for the device, as NervesHub does. Returns the cancelled update, if any.
std::optional<DeviceUpdateRow> start_manual(Tx& tx, std::int64_t org_id, std::int64_t device_id,
                                            std::int64_t firmware_id,
                                            const std::string& firmware_uuid,
                                            const std::string& firmware_version,
                                            int expiration_minutes);
/// The device's update in flight, if any.
std::optional<DeviceUpdateRow> in_flight(Tx& tx, std::int64_t device_id);
/// Whether in_flight would find an update, as a boolean SQL expression over the placeholder or
/// column holding the device id (for statements that read it alongside other work); an index
/// lookup per row, never a hashed scan of the table.
std::string in_flight_exists_sql(std::string_view device_id);
/// Ends the device's in-flight update with `status`; returns it (nullopt when none).
std::optional<DeviceUpdateRow> finish(Tx& tx, std::int64_t device_id, const std::string& status,
                                      const std::optional<std::string>& reason);
/// Ends every in-flight update whose expiration passed (rows locked elsewhere are skipped).
std::vector<DeviceUpdateRow> expire(Tx& tx, int limit = 1000);
/// After a failed or expired update of a deployment: puts the device in the penalty box when
/// its failures since the last penalty reach the deployment's threshold or rate, and counts the
/// fleet failure (`failed` only), pausing the deployment at its failure threshold.
FailureOutcome record_failure(Tx& tx, const DeviceUpdateRow& update, bool fleet_failure);
/// Update history of a device, newest first.
std::vector<DeviceUpdateRow> history(Tx& tx, std::int64_t device_id, int limit);
/// In flight / succeeded / failed (failed + expired) updates of a deployment.
DeploymentCounts counts(Tx& tx, std::int64_t deployment_id);
/// Takes the device out of the penalty box (and resets its failure count).
void clear_penalty(Tx& tx, std::int64_t device_id);
/// When the device's penalty box or reschedule delay ends (seconds since the epoch), if later
/// than now.
std::optional<std::int64_t> blocked_until(Tx& tx, std::int64_t device_id);
/// In-flight updates per active deployment (zero counts included), cluster-wide.
std::vector<InFlightCount> in_flight_counts(Tx& tx);
/// Turns automatic updates on or off for a device.
void set_updates_enabled(Tx& tx, std::int64_t device_id, bool enabled);

}  // namespace rollouts
}  // namespace otahub::db
