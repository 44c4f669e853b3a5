#include "db/repositories/audit_repository.hpp"

#include "db/tx.hpp"

namespace otahub::db::audit {

std::int64_t record(Tx& tx, const AuditEntry& e) {
    const std::optional<std::string> org =
        e.org_id ? std::optional<std::string>(std::to_string(*e.org_id)) : std::nullopt;
    return tx
        ->exec_params1(
            "INSERT INTO audit_logs (org_id, actor_type, actor, action, resource_type, resource, "
            "details, request_id) VALUES ($1::bigint, $2, $3, $4, $5, $6, $7::jsonb, $8) "
            "RETURNING id",
            nullable(org), e.actor_type, e.actor, e.action, e.resource_type, e.resource,
            e.details.dump(), nullable(e.request_id))[0]
        .as<std::int64_t>();
}

bool record_unless_recorded(Tx& tx, const AuditEntry& e) {
    if (!e.request_id) {
        record(tx, e);
        return true;
    }
    const std::optional<std::string> org =
        e.org_id ? std::optional<std::string>(std::to_string(*e.org_id)) : std::nullopt;
    const auto rows = tx->exec_params(
        "INSERT INTO audit_logs (org_id, actor_type, actor, action, resource_type, resource, "
        "details, request_id) SELECT $1::bigint, $2, $3, $4, $5, $6, $7::jsonb, $8 "
        "WHERE NOT EXISTS (SELECT 1 FROM audit_logs WHERE request_id = $8) RETURNING id",
        nullable(org), e.actor_type, e.actor, e.action, e.resource_type, e.resource,
        e.details.dump(), *e.request_id);
    return !rows.empty();
}

std::vector<AuditEntry> list(Tx& tx, std::int64_t org_id, const AuditFilter& f) {
    const auto rows = tx->exec_params(
        "SELECT id, org_id, actor_type, actor, action, resource_type, resource, details::text, "
        "request_id, iso8601(inserted_at) FROM audit_logs WHERE org_id = $1 "
        "AND ($2::text IS NULL OR action = $2) AND ($3::text IS NULL OR actor = $3) "
        "AND ($4::text IS NULL OR resource_type = $4) AND ($5::text IS NULL OR resource = $5) "
        "AND ($6::bigint IS NULL OR id < $6::bigint) "
        "AND ($8::timestamptz IS NULL OR inserted_at >= $8::timestamptz) "
        "AND ($9::timestamptz IS NULL OR inserted_at < $9::timestamptz) "
        "ORDER BY id DESC LIMIT $7",
        org_id, nullable(f.action), nullable(f.actor), nullable(f.resource_type),
        nullable(f.resource),
        nullable(f.before_id ? std::optional<std::string>(std::to_string(*f.before_id))
                             : std::nullopt),
        f.limit, nullable(f.since), nullable(f.until));
    std::vector<AuditEntry> out;
    out.reserve(rows.size());
    for (const auto& r : rows) {
        AuditEntry e;
        e.id = r[0].as<std::int64_t>();
        if (!r[1].is_null()) e.org_id = r[1].as<std::int64_t>();
        e.actor_type = r[2].as<std::string>();
        e.actor = r[3].as<std::string>();
        e.action = r[4].as<std::string>();
        e.resource_type = r[5].as<std::string>();
        e.resource = r[6].as<std::string>();
        e.details = nlohmann::json::parse(r[7].as<std::string>());
        e.request_id = opt_string(r[8]);
        e.inserted_at = r[9].as<std::string>();
        out.push_back(std::move(e));
    }
    return out;
}

}  // namespace otahub::db::audit
