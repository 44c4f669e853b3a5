#include "db/repositories/rollouts_repository.hpp"

#include <limits>

#include "db/tx.hpp"

namespace otahub::db::rollouts {
namespace {

constexpr const char* kUpdateColumns =
    "u.id, u.org_id, u.device_id, dv.product_id, u.deployment_id, dp.name, u.firmware_id, "
    "u.firmware_uuid, u.firmware_version, u.source, u.status, u.reason, "
    "CASE WHEN u.status = 'in_flight' THEN dv.update_progress ELSE u.progress END, "
    "iso8601(u.started_at), iso8601(u.expires_at), iso8601(u.finished_at)";
constexpr const char* kUpdateFrom =
    " FROM device_updates u JOIN devices dv ON dv.id = u.device_id "
    "LEFT JOIN deployments dp ON dp.id = u.deployment_id ";

DeviceUpdateRow update_from(const pqxx::row& r) {
    DeviceUpdateRow u;
    u.id = r[0].as<std::int64_t>();
    u.org_id = r[1].as<std::int64_t>();
    u.device_id = r[2].as<std::int64_t>();
    u.product_id = r[3].as<std::int64_t>();
    if (!r[4].is_null()) u.deployment_id = r[4].as<std::int64_t>();
    u.deployment_name = opt_string(r[5]);
    if (!r[6].is_null()) u.firmware_id = r[6].as<std::int64_t>();
    u.firmware_uuid = r[7].as<std::string>();
    u.firmware_version = r[8].as<std::string>();
    u.source = r[9].as<std::string>();
    u.status = r[10].as<std::string>();
    u.reason = opt_string(r[11]);
    if (!r[12].is_null()) u.progress = r[12].as<int>();
    u.started_at = r[13].as<std::string>();
    u.expires_at = r[14].as<std::string>();
    u.finished_at = opt_string(r[15]);
    return u;
}

/// Re-reads rows by id with the joined columns (after an UPDATE ... RETURNING id).
std::vector<DeviceUpdateRow> updates_by_ids(Tx& tx, const std::vector<std::int64_t>& ids) {
    std::vector<DeviceUpdateRow> out;
    if (ids.empty()) return out;
    // By primary key whatever the plan (id_rows_sql): finish() runs this for every update that
    // ends, and device_updates keeps every update ever sent.
    static const std::string sql = "WITH input AS (" + id_rows_sql(1) + ") SELECT " +
                                   kUpdateColumns +
                                   " FROM input JOIN device_updates u ON u.id = input.id "
                                   "JOIN devices dv ON dv.id = u.device_id "
                                   "LEFT JOIN deployments dp ON dp.id = u.deployment_id "
                                   "ORDER BY u.id";
    for (const auto& row : tx->exec_params(sql, id_array_literal(ids))) {
        out.push_back(update_from(row));
    }
    return out;
}

std::vector<std::int64_t> ids_of(const pqxx::result& result) {
    std::vector<std::int64_t> ids;
    ids.reserve(result.size());
    for (const auto& row : result) ids.push_back(row[0].as<std::int64_t>());
    return ids;
}

}  // namespace

std::vector<DeploymentRow> active_deployments(Tx& tx, std::int64_t product_id) {
    std::vector<DeploymentRow> out;
    for (auto& d : deployments::list(tx, product_id)) {
        if (d.is_active) out.push_back(std::move(d));
    }
    return out;
}

std::vector<RolloutCandidate> candidates(Tx& tx, std::int64_t product_id,
                                         const std::vector<std::int64_t>& device_ids) {
    std::vector<RolloutCandidate> out;
    if (device_ids.empty()) return out;
    // Every join asks this for a device or a few: by primary key whatever the plan
    // (id_rows_sql; the OFFSET 0 keeps a plan made while the product had few devices from
    // reading all of them through the product's index per id), and the in-flight test a lookup
    // per device (its OFFSET 0 keeps it from becoming an anti-join over every in-flight update).
    static const std::string sql =
        "WITH input AS (" + id_rows_sql(2) +
        ") SELECT d.id, d.org_id, d.identifier, coalesce(d.platform, ''), "
        "coalesce(d.architecture, ''), coalesce(d.version, ''), coalesce(d.firmware_uuid, ''), "
        "array_to_json(d.tags)::text FROM input "
        "JOIN LATERAL (SELECT * FROM devices WHERE id = input.id OFFSET 0) d ON true "
        "WHERE d.product_id = $1 AND d.deleted_at IS NULL "
        "AND NOT d.disabled AND d.updates_enabled AND d.firmware_uuid IS NOT NULL "
        "AND (d.updates_blocked_until IS NULL OR d.updates_blocked_until <= now()) "
        "AND NOT " +
        in_flight_exists_sql("d.id") + " ORDER BY d.connected_at NULLS LAST, d.id";
    const auto rows = tx->exec_params(sql, product_id, id_array_literal(device_ids));
    out.reserve(rows.size());
    for (const auto& r : rows) {
        RolloutCandidate c;
        c.id = r[0].as<std::int64_t>();
        c.org_id = r[1].as<std::int64_t>();
        c.identifier = r[2].as<std::string>();
        c.platform = r[3].as<std::string>();
        c.architecture = r[4].as<std::string>();
        c.version = r[5].as<std::string>();
        c.firmware_uuid = r[6].as<std::string>();
        c.tags = string_array(r[7]);
        out.push_back(std::move(c));
    }
    return out;
}

std::optional<std::int64_t> lock_slots(Tx& tx, std::int64_t deployment_id,
                                       std::int64_t firmware_id) {
    const auto row = tx->exec_params(
        "SELECT is_active, firmware_id, concurrent_updates FROM deployments WHERE id = $1 "
        "FOR UPDATE",
        deployment_id);
    if (row.empty() || !row[0][0].as<bool>() || row[0][1].as<std::int64_t>() != firmware_id) {
        return std::nullopt;
    }
    const auto limit = row[0][2].as<std::int64_t>();
    if (limit == 0) return std::numeric_limits<std::int64_t>::max();
    const auto used = tx->exec_params1(
                            "SELECT count(*) FROM device_updates WHERE deployment_id = $1 AND "
                            "status = 'in_flight'",
                            deployment_id)[0]
                          .as<std::int64_t>();
    return used >= limit ? 0 : limit - used;
}

std::vector<std::int64_t> start(Tx& tx, const DeploymentRow& deployment,
                                const std::vector<std::int64_t>& device_ids) {
    if (device_ids.empty()) return {};
    return ids_of(tx->exec_params(
        "INSERT INTO device_updates (org_id, device_id, deployment_id, firmware_id, "
        "firmware_uuid, firmware_version, source, expires_at) "
        "SELECT $1, id, $2, $3, $4, $5, 'deployment', now() + make_interval(mins => $6) "
        "FROM unnest($7::bigint[]) AS id "
        "ON CONFLICT (device_id) WHERE status = 'in_flight' DO NOTHING RETURNING device_id",
        deployment.org_id, deployment.id, deployment.firmware_id, deployment.firmware_uuid,
        deployment.firmware_version, deployment.inflight_update_expiration_minutes,
        id_array_literal(device_ids)));
}

std::optional<DeviceUpdateRow> start_manual(Tx& tx, std::int64_t org_id, std::int64_t device_id,
                                            std::int64_t firmware_id,
                                            const std::string& firmware_uuid,
                                            const std::string& firmware_version,
                                            int expiration_minutes) {
    auto cancelled = finish(tx, device_id, "cancelled", std::string("replaced by a manual update"));
    tx->exec_params0(
        "INSERT INTO device_updates (org_id, device_id, firmware_id, firmware_uuid, "
        "firmware_version, source, expires_at) VALUES ($1, $2, $3, $4, $5, 'manual', "
        "now() + make_interval(mins => $6))",
        org_id, device_id, firmware_id, firmware_uuid, firmware_version, expiration_minutes);
    set_updates_enabled(tx, device_id, false);
    return cancelled;
}

std::string in_flight_exists_sql(std::string_view device_id) {
    return "EXISTS (SELECT 1 FROM device_updates WHERE device_id = " + std::string(device_id) +
           " AND status = 'in_flight' OFFSET 0)";
}

std::optional<DeviceUpdateRow> in_flight(Tx& tx, std::int64_t device_id) {
    const auto rows = tx->exec_params(std::string("SELECT ") + kUpdateColumns + kUpdateFrom +
                                          "WHERE u.device_id = $1 AND u.status = 'in_flight'",
                                      device_id);
    if (rows.empty()) return std::nullopt;
    return update_from(rows[0]);
}

std::optional<DeviceUpdateRow> finish(Tx& tx, std::int64_t device_id, const std::string& status,
                                      const std::optional<std::string>& reason) {
    const auto ids = ids_of(tx->exec_params(
        "UPDATE device_updates u SET status = $2, reason = $3, finished_at = now(), "
        "progress = (SELECT update_progress FROM devices WHERE id = u.device_id) "
        "WHERE u.device_id = $1 AND u.status = 'in_flight' RETURNING u.id",
        device_id, status, nullable(reason)));
    auto rows = updates_by_ids(tx, ids);
    if (rows.empty()) return std::nullopt;
    return rows.front();
}

std::vector<DeviceUpdateRow> expire(Tx& tx, int limit) {
    const auto ids = ids_of(tx->exec_params(
        "UPDATE device_updates u SET status = 'expired', finished_at = now(), "
        "reason = 'no success reported before the in-flight expiration', "
        "progress = (SELECT update_progress FROM devices WHERE id = u.device_id) "
        "WHERE u.id IN (SELECT id FROM device_updates WHERE status = 'in_flight' "
        "AND expires_at <= now() ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) "
        "RETURNING u.id",
        limit));
    return updates_by_ids(tx, ids);
}

FailureOutcome record_failure(Tx& tx, const DeviceUpdateRow& update, bool fleet_failure) {
    FailureOutcome outcome;
    if (!update.deployment_id) return outcome;
    const auto settings = tx->exec_params(
        "SELECT device_failure_threshold, device_failure_rate_amount, "
        "device_failure_rate_seconds, penalty_timeout_minutes FROM deployments WHERE id = $1",
        *update.deployment_id);
    if (settings.empty()) return outcome;
    const auto threshold = settings[0][0].as<int>();
    const auto rate_amount = settings[0][1].as<int>();
    const auto rate_seconds = settings[0][2].as<int>();
    const auto penalty_minutes = settings[0][3].as<int>();

    // Failures of this device on this deployment since its last penalty: in total, and within
    // the rate window.
    const auto counts = tx->exec_params1(
        "SELECT count(*), count(*) FILTER (WHERE u.finished_at > now() - "
        "make_interval(secs => $3)) FROM device_updates u JOIN devices d ON d.id = u.device_id "
        "WHERE u.device_id = $1 AND u.deployment_id = $2 AND u.status IN ('failed', 'expired') "
        "AND u.finished_at > coalesce(d.update_failures_since, '-infinity'::timestamptz)",
        update.device_id, *update.deployment_id, rate_seconds);
    if (counts[0].as<int>() >= threshold || counts[1].as<int>() >= rate_amount) {
        outcome.penalty_until =
            tx->exec_params1(
                  "UPDATE devices SET updates_blocked_until = now() + make_interval(mins => $2), "
                  "update_failures_since = now(), updated_at = now() WHERE id = $1 "
                  "RETURNING iso8601(updates_blocked_until)",
                  update.device_id, penalty_minutes)[0]
                .as<std::string>();
    }
    if (fleet_failure) {
        const auto row = tx->exec_params1(
            "UPDATE deployments SET failed_updates = failed_updates + 1 WHERE id = $1 "
            "RETURNING failed_updates, failure_threshold, is_active",
            *update.deployment_id);
        const auto failed = row[0].as<int>();
        const auto limit = row[1].as<int>();
        if (failed >= limit && row[2].as<bool>()) {
            const std::string reason = std::to_string(failed) +
                                       " failed updates reached the failure threshold of " +
                                       std::to_string(limit);
            tx->exec_params0(
                "UPDATE deployments SET is_active = false, paused_reason = $2, updated_at = now() "
                "WHERE id = $1",
                *update.deployment_id, reason);
            outcome.paused_reason = reason;
        }
    }
    return outcome;
}

std::vector<DeviceUpdateRow> history(Tx& tx, std::int64_t device_id, int limit) {
    std::vector<DeviceUpdateRow> out;
    for (const auto& row : tx->exec_params(std::string("SELECT ") + kUpdateColumns + kUpdateFrom +
                                               "WHERE u.device_id = $1 ORDER BY u.id DESC LIMIT $2",
                                           device_id, limit)) {
        out.push_back(update_from(row));
    }
    return out;
}

DeploymentCounts counts(Tx& tx, std::int64_t deployment_id) {
    const auto row = tx->exec_params1(
        "SELECT count(*) FILTER (WHERE status = 'in_flight'), "
        "count(*) FILTER (WHERE status = 'succeeded'), "
        "count(*) FILTER (WHERE status IN ('failed', 'expired')) "
        "FROM device_updates WHERE deployment_id = $1",
        deployment_id);
    return {row[0].as<std::int64_t>(), row[1].as<std::int64_t>(), row[2].as<std::int64_t>()};
}

void clear_penalty(Tx& tx, std::int64_t device_id) {
    tx->exec_params0(
        "UPDATE devices SET updates_blocked_until = NULL, update_failures_since = now(), "
        "updated_at = now() WHERE id = $1",
        device_id);
}

std::optional<std::int64_t> blocked_until(Tx& tx, std::int64_t device_id) {
    const auto rows = tx->exec_params(
        "SELECT ceil(extract(epoch FROM updates_blocked_until))::bigint FROM devices "
        "WHERE id = $1 AND updates_blocked_until > now()",
        device_id);
    if (rows.empty() || rows[0][0].is_null()) return std::nullopt;
    return rows[0][0].as<std::int64_t>();
}

std::vector<InFlightCount> in_flight_counts(Tx& tx) {
    std::vector<InFlightCount> out;
    for (const auto& r :
         tx->exec("SELECT d.id, d.name, p.name, o.name, (SELECT count(*) FROM device_updates u "
                  "WHERE u.deployment_id = d.id AND u.status = 'in_flight') FROM deployments d "
                  "JOIN products p ON p.id = d.product_id JOIN orgs o ON o.id = d.org_id "
                  "WHERE d.is_active ORDER BY d.id")) {
        out.push_back({r[0].as<std::int64_t>(), r[1].as<std::string>(), r[2].as<std::string>(),
                       r[3].as<std::string>(), r[4].as<std::int64_t>()});
    }
    return out;
}

void set_updates_enabled(Tx& tx, std::int64_t device_id, bool enabled) {
    tx->exec_params0("UPDATE devices SET updates_enabled = $2, updated_at = now() WHERE id = $1",
                     device_id, enabled);
}

}  // namespace otahub::db::rollouts
