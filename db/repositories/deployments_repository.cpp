#include "db/repositories/deployments_repository.hpp"

#include "db/repositories/firmwares_repository.hpp"
#include "db/tx.hpp"

namespace otahub::db::deployments {
namespace {

constexpr const char* kSelect =
    "SELECT d.id, d.org_id, d.product_id, d.name, d.firmware_id, f.uuid, f.version, f.platform, "
    "f.architecture, d.conditions_version, d.conditions_tags, d.tag_operator, d.is_active, "
    "d.concurrent_updates, d.inflight_update_expiration_minutes, d.device_failure_threshold, "
    "d.device_failure_rate_amount, d.device_failure_rate_seconds, d.penalty_timeout_minutes, "
    "d.failure_threshold, d.failed_updates, d.paused_reason, d.notes, iso8601(d.inserted_at), "
    "iso8601(d.updated_at) FROM deployments d JOIN firmwares f ON f.id = d.firmware_id ";

DeploymentRow from(const pqxx::row& r) {
    DeploymentRow d;
    d.id = r[0].as<std::int64_t>();
    d.org_id = r[1].as<std::int64_t>();
    d.product_id = r[2].as<std::int64_t>();
    d.name = r[3].as<std::string>();
    d.firmware_id = r[4].as<std::int64_t>();
    d.firmware_uuid = r[5].as<std::string>();
    d.firmware_version = r[6].as<std::string>();
    d.platform = r[7].as<std::string>();
    d.architecture = r[8].as<std::string>();
    d.conditions_version = r[9].as<std::string>();
    d.conditions_tags = text_array(r[10]);
    d.tag_operator = r[11].as<std::string>();
    d.is_active = r[12].as<bool>();
    d.concurrent_updates = r[13].as<int>();
    d.inflight_update_expiration_minutes = r[14].as<int>();
    d.device_failure_threshold = r[15].as<int>();
    d.device_failure_rate_amount = r[16].as<int>();
    d.device_failure_rate_seconds = r[17].as<int>();
    d.penalty_timeout_minutes = r[18].as<int>();
    d.failure_threshold = r[19].as<int>();
    d.failed_updates = r[20].as<int>();
    d.paused_reason = opt_string(r[21]);
    d.notes = r[22].as<std::string>();
    d.inserted_at = r[23].as<std::string>();
    d.updated_at = r[24].as<std::string>();
    return d;
}

DeploymentRow by_id(Tx& tx, std::int64_t id) {
    return from(tx->exec_params1(std::string(kSelect) + "WHERE d.id = $1", id));
}

bool firmware_still_referenced(Tx& tx, std::int64_t firmware_id) {
    return tx
        ->exec_params1("SELECT EXISTS (SELECT 1 FROM deployments WHERE firmware_id = $1)",
                       firmware_id)[0]
        .as<bool>();
}

DeviceResolutionRow device_from(const pqxx::row& r) {
    DeviceResolutionRow d;
    d.id = r[0].as<std::int64_t>();
    d.identifier = r[1].as<std::string>();
    d.product_id = r[2].as<std::int64_t>();
    d.platform = r[3].is_null() ? "" : r[3].as<std::string>();
    d.architecture = r[4].is_null() ? "" : r[4].as<std::string>();
    d.version = r[5].is_null() ? "" : r[5].as<std::string>();
    d.firmware_uuid = r[6].is_null() ? "" : r[6].as<std::string>();
    d.tags = text_array(r[7]);
    d.updates_enabled = r[8].as<bool>();
    if (!r[9].is_null()) d.updates_blocked_until = r[9].as<std::int64_t>();
    d.update_in_flight = r[10].as<bool>();
    return d;
}

constexpr const char* kDeviceSelect =
    "SELECT id, identifier, product_id, platform, architecture, version, firmware_uuid, tags, "
    "updates_enabled, extract(epoch FROM updates_blocked_until)::bigint, "
    "EXISTS (SELECT 1 FROM device_updates u WHERE u.device_id = devices.id "
    "AND u.status = 'in_flight') FROM devices WHERE deleted_at IS NULL AND product_id = $1 ";

}  // namespace

DeploymentRow create(Tx& tx, std::int64_t org_id, std::int64_t product_id,
                     const DeploymentFields& f) {
    auto id =
        tx->exec_params1(
              "INSERT INTO deployments (org_id, product_id, name, firmware_id, "
              "conditions_version, conditions_tags, tag_operator, is_active, "
              "concurrent_updates, inflight_update_expiration_minutes, "
              "device_failure_threshold, device_failure_rate_amount, "
              "device_failure_rate_seconds, penalty_timeout_minutes, failure_threshold, "
              "notes) VALUES ($1, $2, $3, $4, $5, $6::text[], $7, $8, $9, $10, $11, $12, "
              "$13, $14, $15, $16) RETURNING id",
              org_id, product_id, f.name, f.firmware_id, f.conditions_version,
              array_literal(f.conditions_tags), f.tag_operator, f.is_active, f.concurrent_updates,
              f.inflight_update_expiration_minutes, f.device_failure_threshold,
              f.device_failure_rate_amount, f.device_failure_rate_seconds,
              f.penalty_timeout_minutes, f.failure_threshold, f.notes)[0]
            .as<std::int64_t>();
    firmwares::referenced(tx, f.firmware_id);
    return by_id(tx, id);
}

DeploymentRow update(Tx& tx, std::int64_t id, const DeploymentFields& f) {
    auto previous_firmware =
        tx->exec_params1("SELECT firmware_id FROM deployments WHERE id = $1 FOR UPDATE", id)[0]
            .as<std::int64_t>();
    tx->exec_params0(
        "UPDATE deployments SET name = $2, firmware_id = $3, conditions_version = $4, "
        "conditions_tags = $5::text[], tag_operator = $6, is_active = $7, "
        "concurrent_updates = $8, inflight_update_expiration_minutes = $9, "
        "device_failure_threshold = $10, device_failure_rate_amount = $11, "
        "device_failure_rate_seconds = $12, penalty_timeout_minutes = $13, "
        "failure_threshold = $14, notes = $15, "
        "paused_reason = CASE WHEN $7 THEN NULL ELSE paused_reason END, "
        "failed_updates = CASE WHEN $7 AND NOT is_active THEN 0 ELSE failed_updates END, "
        "updated_at = now() WHERE id = $1",
        id, f.name, f.firmware_id, f.conditions_version, array_literal(f.conditions_tags),
        f.tag_operator, f.is_active, f.concurrent_updates, f.inflight_update_expiration_minutes,
        f.device_failure_threshold, f.device_failure_rate_amount, f.device_failure_rate_seconds,
        f.penalty_timeout_minutes, f.failure_threshold, f.notes);
    if (previous_firmware != f.firmware_id) {
        firmwares::referenced(tx, f.firmware_id);
        if (!firmware_still_referenced(tx, previous_firmware)) {
            firmwares::unreferenced(tx, previous_firmware);
        }
    }
    return by_id(tx, id);
}

void remove(Tx& tx, std::int64_t id) {
    auto r = tx->exec_params("DELETE FROM deployments WHERE id = $1 RETURNING firmware_id", id);
    if (r.empty()) return;
    auto firmware_id = r[0][0].as<std::int64_t>();
    if (!firmware_still_referenced(tx, firmware_id)) firmwares::unreferenced(tx, firmware_id);
}

std::vector<DeploymentRow> list(Tx& tx, std::int64_t product_id) {
    std::vector<DeploymentRow> out;
    for (const auto& row : tx->exec_params(
             std::string(kSelect) + "WHERE d.product_id = $1 ORDER BY d.id", product_id)) {
        out.push_back(from(row));
    }
    return out;
}

std::optional<DeploymentRow> find(Tx& tx, std::int64_t product_id, const std::string& name) {
    auto r = tx->exec_params(std::string(kSelect) + "WHERE d.product_id = $1 AND d.name = $2",
                             product_id, name);
    if (r.empty()) return std::nullopt;
    return from(r[0]);
}

std::vector<DeviceResolutionRow> devices_of_product(Tx& tx, std::int64_t product_id) {
    std::vector<DeviceResolutionRow> out;
    for (const auto& row :
         tx->exec_params(std::string(kDeviceSelect) + "ORDER BY identifier", product_id)) {
        out.push_back(device_from(row));
    }
    return out;
}

std::optional<DeviceResolutionRow> device(Tx& tx, std::int64_t product_id,
                                          const std::string& identifier) {
    auto r =
        tx->exec_params(std::string(kDeviceSelect) + "AND identifier = $2", product_id, identifier);
    if (r.empty()) return std::nullopt;
    return device_from(r[0]);
}

}  // namespace otahub::db::deployments
