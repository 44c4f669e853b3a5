#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {

/// A deployment with the firmware fields resolution needs (joined).
struct DeploymentRow {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::int64_t product_id = 0;
    std::string name;
    std::int64_t firmware_id = 0;
    std::string firmware_uuid;
    std::string firmware_version;
    std::string platform;
    std::string architecture;
    std::string conditions_version;
    std::vector<std::string> conditions_tags;
    std::string tag_operator = "and";
    bool is_active = false;
    int concurrent_updates = 10;
    int inflight_update_expiration_minutes = 60;
    int device_failure_threshold = 3;
    int device_failure_rate_amount = 5;
    int device_failure_rate_seconds = 180;
    int penalty_timeout_minutes = 1440;
    int failure_threshold = 50;
    int failed_updates = 0;
    std::optional<std::string> paused_reason;
    std::string notes;
    std::string inserted_at;
    std::string updated_at;
};

/// The settable fields of a deployment (create and update).
struct DeploymentFields {
    std::string name;
    std::int64_t firmware_id = 0;
    std::string conditions_version;
    std::vector<std::string> conditions_tags;
    std::string tag_operator = "and";
    bool is_active = false;
    int concurrent_updates = 10;
    int inflight_update_expiration_minutes = 60;
    int device_failure_threshold = 3;
    int device_failure_rate_amount = 5;
    int device_failure_rate_seconds = 180;
    int penalty_timeout_minutes = 1440;
    int failure_threshold = 50;
    std::string notes;
};

/// What resolution needs of a device.
struct DeviceResolutionRow {
    std::int64_t id = 0;
    std::string identifier;
    std::int64_t product_id = 0;
    std::string platform;
    std::string architecture;
    std::string version;
    std::string firmware_uuid;
    std::vector<std::string> tags;
    bool updates_enabled = true;
    /// Seconds since the epoch, when set.
    std::optional<std::int64_t> updates_blocked_until;
    bool update_in_flight = false;
};

/// Deployments of a product. Keeps the firmware TTL clock in step (firmwares::referenced /
/// unreferenced) whenever a deployment starts or stops pointing at a firmware.
namespace deployments {

DeploymentRow create(Tx& tx, std::int64_t org_id, std::int64_t product_id,
                     const DeploymentFields& fields);
/// Replaces the settable fields; clears a pause reason when the deployment is re-activated.
DeploymentRow update(Tx& tx, std::int64_t id, const DeploymentFields& fields);
void remove(Tx& tx, std::int64_t id);
std::vector<DeploymentRow> list(Tx& tx, std::int64_t product_id);
std::optional<DeploymentRow> find(Tx& tx, std::int64_t product_id, const std::string& name);

/// Devices of a product with the facts resolution reads (not deleted).
std::vector<DeviceResolutionRow> devices_of_product(Tx& tx, std::int64_t product_id);
std::optional<DeviceResolutionRow> device(Tx& tx, std::int64_t product_id,
                                          const std::string& identifier);

}  // namespace deployments
}  // namespace otahub::db
