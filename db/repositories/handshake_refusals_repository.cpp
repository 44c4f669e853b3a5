#include "db/repositories/handshake_refusals_repository.hpp"

#include "db/tx.hpp"

namespace otahub::db::handshake_refusals {
namespace {

// Merges two text[] keeping the first kMaxSamples distinct items in order of appearance.
constexpr const char* kMergeSamples =
    "(SELECT COALESCE(array_agg(c ORDER BY o), '{}') FROM (SELECT c, min(o) AS o FROM "
    "unnest(t.{0} || EXCLUDED.{0}) WITH ORDINALITY AS u(c, o) GROUP BY c ORDER BY min(o) "
    "LIMIT 10) s)";

std::string merge(const std::string& column) {
    std::string sql = kMergeSamples;
    for (auto at = sql.find("{0}"); at != std::string::npos; at = sql.find("{0}")) {
        sql.replace(at, 3, column);
    }
    return sql;
}

}  // namespace

void upsert(Tx& tx, const std::vector<RefusalCount>& counts) {
    static const std::string kSql =
        "INSERT INTO handshake_refusals AS t (hour, ca_certificate_id, org_id, reason, stage, "
        "count, common_names, serials, first_at, last_at) VALUES (to_timestamp($1), $2, "
        "(SELECT id FROM orgs WHERE id = $3::bigint), $4, $5, $6, "
        "ARRAY(SELECT jsonb_array_elements_text($7::jsonb)), "
        "ARRAY(SELECT jsonb_array_elements_text($8::jsonb)), to_timestamp($9), to_timestamp($10)) "
        "ON CONFLICT (hour, ca_certificate_id, reason, stage) DO UPDATE SET "
        "count = t.count + EXCLUDED.count, org_id = COALESCE(EXCLUDED.org_id, t.org_id), "
        "common_names = " +
        merge("common_names") + ", serials = " + merge("serials") +
        ", first_at = LEAST(t.first_at, EXCLUDED.first_at), "
        "last_at = GREATEST(t.last_at, EXCLUDED.last_at)";
    for (const auto& c : counts) {
        const std::optional<std::string> org =
            c.org_id ? std::optional<std::string>(std::to_string(*c.org_id)) : std::nullopt;
        tx->exec_params0(kSql, c.hour_epoch, c.ca_id, nullable(org), c.reason, c.stage, c.count,
                         json_array(c.common_names), json_array(c.serials), c.first_epoch,
                         c.last_epoch);
    }
}

std::vector<RefusalRow> list(Tx& tx, std::int64_t org_id, const RefusalFilter& f) {
    const auto rows = tx->exec_params(
        "SELECT iso8601(r.hour), ca.serial, r.reason, r.stage, r.count, to_jsonb(r.common_names), "
        "to_jsonb(r.serials), iso8601(r.first_at), iso8601(r.last_at) FROM handshake_refusals r "
        "LEFT JOIN ca_certificates ca ON ca.id = r.ca_certificate_id "
        "WHERE r.org_id = $1 "
        "AND ($2::timestamptz IS NULL OR r.last_at >= $2::timestamptz) "
        "AND ($3::timestamptz IS NULL OR r.hour < $3::timestamptz) "
        "AND ($4::text IS NULL OR r.reason = $4) AND ($5::text IS NULL OR ca.serial = $5) "
        "ORDER BY r.hour DESC, r.count DESC, r.reason LIMIT $6",
        org_id, nullable(f.since), nullable(f.until), nullable(f.reason), nullable(f.ca_serial),
        f.limit);
    std::vector<RefusalRow> out;
    out.reserve(rows.size());
    for (const auto& r : rows) {
        RefusalRow row;
        row.hour = r[0].as<std::string>();
        row.ca_serial = opt_string(r[1]);
        row.reason = r[2].as<std::string>();
        row.stage = r[3].as<std::string>();
        row.count = r[4].as<std::int64_t>();
        row.common_names = string_array(r[5]);
        row.serials = string_array(r[6]);
        row.first_at = r[7].as<std::string>();
        row.last_at = r[8].as<std::string>();
        out.push_back(std::move(row));
    }
    return out;
}

std::int64_t prune(Tx& tx, int days) {
    return static_cast<std::int64_t>(
        tx->exec_params0("DELETE FROM handshake_refusals "
                         "WHERE hour < now() - make_interval(days => $1::int)",
                         days)
            .affected_rows());
}

}  // namespace otahub::db::handshake_refusals
