#include "db/repositories/reports_repository.hpp"

#include "db/tx.hpp"

namespace otahub::db::reports {

std::vector<ExpiringCertificateRow> expiring_certificates(Tx& tx, std::int64_t org_id, int days) {
    const auto rows = tx->exec_params(
        "SELECT d.identifier, p.name, dc.serial, iso8601(dc.not_after), dc.not_after < now(), "
        "(SELECT ca.serial FROM ca_certificates ca WHERE ca.org_id = dc.org_id AND ca.ski = dc.aki "
        "ORDER BY ca.id DESC LIMIT 1), iso8601(dc.renew_requested_at), "
        "dc.replaced_by_id IS NOT NULL "
        "FROM device_certificates dc JOIN devices d ON d.id = dc.device_id "
        "JOIN products p ON p.id = d.product_id "
        "WHERE dc.org_id = $1 AND dc.revoked_at IS NULL AND d.deleted_at IS NULL "
        "AND dc.not_after < now() + make_interval(days => $2) "
        "ORDER BY dc.not_after, d.identifier, dc.serial LIMIT $3",
        org_id, days, kMaxRows);
    std::vector<ExpiringCertificateRow> out;
    out.reserve(rows.size());
    for (const auto& r : rows) {
        ExpiringCertificateRow row;
        row.identifier = r[0].as<std::string>();
        row.product = r[1].as<std::string>();
        row.serial = r[2].as<std::string>();
        row.not_after = r[3].as<std::string>();
        row.expired = r[4].as<bool>();
        row.ca_serial = opt_string(r[5]);
        row.renew_requested_at = opt_string(r[6]);
        row.replaced = r[7].as<bool>();
        out.push_back(std::move(row));
    }
    return out;
}

std::vector<ExpiringCaRow> expiring_cas(Tx& tx, std::int64_t org_id, int days) {
    const auto rows = tx->exec_params(
        "SELECT c.serial, c.subject, iso8601(c.not_after), c.not_after < now(), c.active, "
        "EXISTS (SELECT 1 FROM managed_ca_keys k WHERE k.ca_certificate_id = c.id) "
        "FROM ca_certificates c WHERE c.org_id = $1 "
        "AND c.not_after < now() + make_interval(days => $2) ORDER BY c.not_after, c.id LIMIT $3",
        org_id, days, kMaxRows);
    std::vector<ExpiringCaRow> out;
    out.reserve(rows.size());
    for (const auto& r : rows) {
        ExpiringCaRow row;
        row.serial = r[0].as<std::string>();
        row.subject = r[1].as<std::string>();
        row.not_after = r[2].as<std::string>();
        row.expired = r[3].as<bool>();
        row.active = r[4].as<bool>();
        row.managed = r[5].as<bool>();
        out.push_back(std::move(row));
    }
    return out;
}

std::vector<RefusedDeviceRow> refused_devices(Tx& tx, std::int64_t org_id, int recent_days) {
    const auto rows = tx->exec_params(
        "WITH samples AS ("
        " SELECT r.reason, r.stage, r.ca_certificate_id, r.org_id, r.count, r.last_at, cn, "
        " CASE WHEN r.reason = 'revoked' THEN 'revoked' "
        "      WHEN r.reason IN ('expired', 'not_yet_valid') THEN 'expired' "
        "      ELSE 'unknown' END AS category "
        " FROM handshake_refusals r, unnest(r.common_names) AS cn "
        " WHERE (r.org_id = $1 OR r.org_id IS NULL) "
        " AND r.last_at >= now() - make_interval(days => $2) "
        " AND r.reason IN ('revoked', 'expired', 'not_yet_valid', 'unknown_ca', "
        "  'unexpected_key', 'common_name_mismatch', 'other_org', 'not_registered', "
        "  'bad_signature', 'invalid_certificate', 'certificate_conflict')) "
        "SELECT s.cn, p.name, d.id IS NOT NULL, s.category, s.reason, s.stage, ca.serial, "
        "sum(s.count)::bigint, iso8601(max(s.last_at)) "
        "FROM samples s "
        "LEFT JOIN devices d ON d.org_id = $1 AND d.identifier = s.cn AND d.deleted_at IS NULL "
        "LEFT JOIN products p ON p.id = d.product_id "
        "LEFT JOIN ca_certificates ca ON ca.id = s.ca_certificate_id AND ca.org_id = $1 "
        "WHERE s.org_id = $1 OR d.id IS NOT NULL "
        "GROUP BY s.cn, p.name, d.id, s.category, s.reason, s.stage, ca.serial "
        "ORDER BY max(s.last_at) DESC, s.cn LIMIT $3",
        org_id, recent_days, kMaxRows);
    std::vector<RefusedDeviceRow> out;
    out.reserve(rows.size());
    for (const auto& r : rows) {
        RefusedDeviceRow row;
        row.identifier = r[0].as<std::string>();
        row.product = opt_string(r[1]);
        row.registered = r[2].as<bool>();
        row.category = r[3].as<std::string>();
        row.reason = r[4].as<std::string>();
        row.stage = r[5].as<std::string>();
        row.ca_serial = opt_string(r[6]);
        row.refusals = r[7].as<std::int64_t>();
        row.last_at = r[8].as<std::string>();
        out.push_back(std::move(row));
    }
    return out;
}

}  // namespace otahub::db::reports
