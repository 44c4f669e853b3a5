#include "db/repositories/managed_ca_repository.hpp"

#include "db/tx.hpp"

namespace otahub::db::managed_ca {
namespace {

constexpr const char* kCaColumns =
    "SELECT c.id, c.org_id, c.serial, c.ski, c.fingerprint, c.active, c.der, k.encrypted_key "
    "FROM ca_certificates c JOIN managed_ca_keys k ON k.ca_certificate_id = c.id ";

ManagedCaRow ca_from(const pqxx::row& row) {
    ManagedCaRow ca;
    ca.id = row[0].as<std::int64_t>();
    ca.org_id = row[1].as<std::int64_t>();
    ca.serial = row[2].as<std::string>();
    ca.ski = row[3].as<std::string>();
    ca.fingerprint = row[4].as<std::string>();
    ca.active = row[5].as<bool>();
    const pqxx::binarystring der(row[6]);
    ca.der.assign(der.begin(), der.end());
    ca.encrypted_key = row[7].as<std::string>();
    return ca;
}

std::optional<ManagedCaRow> first_ca(const pqxx::result& rows) {
    if (rows.empty()) return std::nullopt;
    return ca_from(rows[0]);
}

constexpr const char* kCertColumns =
    "SELECT d.id, d.org_id, d.device_id, d.serial, d.fingerprint, coalesce(d.aki, ''), "
    "iso8601(d.not_after), extract(epoch FROM d.not_after)::bigint, d.revoked_at IS NOT NULL, "
    "d.replaced_by_id, iso8601(d.renew_requested_at), iso8601(d.retire_after) "
    "FROM device_certificates d ";

RotationCertificate cert_from(const pqxx::row& row) {
    RotationCertificate c;
    c.id = row[0].as<std::int64_t>();
    c.org_id = row[1].as<std::int64_t>();
    c.device_id = row[2].as<std::int64_t>();
    c.serial = row[3].as<std::string>();
    c.fingerprint = row[4].as<std::string>();
    c.aki = row[5].as<std::string>();
    c.not_after = row[6].as<std::string>();
    c.not_after_epoch = row[7].as<std::int64_t>();
    c.revoked = row[8].as<bool>();
    if (!row[9].is_null()) c.replaced_by_id = row[9].as<std::int64_t>();
    c.renew_requested_at = opt_string(row[10]);
    c.retire_after = opt_string(row[11]);
    return c;
}

std::vector<RetiredCertificate> retired_from(const pqxx::result& rows) {
    std::vector<RetiredCertificate> out;
    out.reserve(rows.size());
    for (const auto& row : rows) {
        RetiredCertificate r;
        r.id = row[0].as<std::int64_t>();
        r.org_id = row[1].as<std::int64_t>();
        r.device_id = row[2].as<std::int64_t>();
        r.device_identifier = row[3].as<std::string>();
        r.serial = row[4].as<std::string>();
        r.fingerprint = row[5].as<std::string>();
        out.push_back(std::move(r));
    }
    return out;
}

}  // namespace

void store_key(Tx& tx, std::int64_t ca_id, const std::string& encrypted_key) {
    tx->exec_params0(
        "INSERT INTO managed_ca_keys (ca_certificate_id, encrypted_key) VALUES ($1, $2)", ca_id,
        encrypted_key);
}

std::optional<ManagedCaRow> find(Tx& tx, std::int64_t ca_id) {
    return first_ca(tx->exec_params(std::string(kCaColumns) + "WHERE c.id = $1", ca_id));
}

std::optional<ManagedCaRow> find_by_serial(Tx& tx, std::int64_t org_id, const std::string& serial) {
    return first_ca(tx->exec_params(
        std::string(kCaColumns) + "WHERE c.org_id = $1 AND c.serial = $2", org_id, serial));
}

std::optional<ManagedCaRow> find_by_fingerprint(Tx& tx, const std::string& fingerprint) {
    return first_ca(
        tx->exec_params(std::string(kCaColumns) + "WHERE c.fingerprint = $1", fingerprint));
}

std::optional<ManagedCaRow> find_by_ski(Tx& tx, std::int64_t org_id, const std::string& ski) {
    return first_ca(tx->exec_params(
        std::string(kCaColumns) + "WHERE c.org_id = $1 AND c.ski = $2 ORDER BY c.id DESC LIMIT 1",
        org_id, ski));
}

std::optional<std::vector<std::uint8_t>> ca_der(Tx& tx, std::int64_t ca_id) {
    const auto rows = tx->exec_params("SELECT der FROM ca_certificates WHERE id = $1", ca_id);
    if (rows.empty()) return std::nullopt;
    const pqxx::binarystring der(rows[0][0]);
    return std::vector<std::uint8_t>(der.begin(), der.end());
}

std::optional<ManagedCaRow> latest(Tx& tx, std::int64_t org_id) {
    return first_ca(tx->exec_params(std::string(kCaColumns) +
                                        "WHERE c.org_id = $1 AND c.active AND c.not_after > now() "
                                        "ORDER BY c.id DESC LIMIT 1",
                                    org_id));
}

bool is_managed(Tx& tx, std::int64_t ca_id) {
    return !tx->exec_params("SELECT 1 FROM managed_ca_keys WHERE ca_certificate_id = $1", ca_id)
                .empty();
}

std::vector<RevokedDeviceCertificate> revoked_certificates(Tx& tx, std::int64_t org_id,
                                                           const std::string& ca_ski) {
    const auto rows = tx->exec_params(
        "SELECT serial, extract(epoch FROM revoked_at)::bigint FROM device_certificates "
        "WHERE org_id = $1 AND aki = $2 AND revoked_at IS NOT NULL ORDER BY id",
        org_id, ca_ski);
    std::vector<RevokedDeviceCertificate> out;
    out.reserve(rows.size());
    for (const auto& row : rows) {
        out.push_back({row[0].as<std::string>(), row[1].as<std::int64_t>()});
    }
    return out;
}

CrlInfo crl_info(Tx& tx, std::int64_t ca_id) {
    const auto rows = tx->exec_params(
        "SELECT c.missing_crl, r.ca_certificate_id IS NOT NULL, r.crl_number::text, "
        "iso8601(r.this_update), iso8601(r.next_update), coalesce(r.revoked_count, 0), "
        "iso8601(r.updated_at), coalesce(r.next_update < now(), false) "
        "FROM ca_certificates c LEFT JOIN ca_crls r ON r.ca_certificate_id = c.id "
        "WHERE c.id = $1",
        ca_id);
    CrlInfo info;
    if (rows.empty()) return info;
    const auto& row = rows[0];
    info.missing_crl = row[0].as<std::string>();
    info.present = row[1].as<bool>();
    info.crl_number = opt_string(row[2]);
    info.this_update = opt_string(row[3]);
    info.next_update = opt_string(row[4]);
    info.revoked_count = row[5].as<std::int64_t>();
    info.updated_at = opt_string(row[6]);
    info.expired = row[7].as<bool>();
    return info;
}

std::optional<std::pair<std::optional<std::string>, std::int64_t>> crl_order(Tx& tx,
                                                                             std::int64_t ca_id) {
    const auto rows = tx->exec_params(
        "SELECT crl_number::text, extract(epoch FROM this_update)::bigint FROM ca_crls "
        "WHERE ca_certificate_id = $1",
        ca_id);
    if (rows.empty()) return std::nullopt;
    return std::make_pair(opt_string(rows[0][0]), rows[0][1].as<std::int64_t>());
}

void store_crl(Tx& tx, std::int64_t ca_id, const NewCrl& crl) {
    const std::optional<std::string> next =
        crl.next_update
            ? std::optional<std::string>(std::to_string(epoch_seconds(*crl.next_update)))
            : std::nullopt;
    tx->exec_params0(
        "INSERT INTO ca_crls (ca_certificate_id, der, crl_number, this_update, next_update, "
        "revoked_count) VALUES ($1, $2, $3::numeric, to_timestamp($4), "
        "to_timestamp($5::double precision), $6) "
        "ON CONFLICT (ca_certificate_id) DO UPDATE SET der = EXCLUDED.der, "
        "crl_number = EXCLUDED.crl_number, this_update = EXCLUDED.this_update, "
        "next_update = EXCLUDED.next_update, revoked_count = EXCLUDED.revoked_count, "
        "updated_at = now()",
        ca_id, pqxx::binarystring(crl.der.data(), crl.der.size()), nullable(crl.crl_number),
        epoch_seconds(crl.this_update), nullable(next),
        static_cast<std::int64_t>(crl.revoked.size()));
    tx->exec_params0("DELETE FROM ca_crl_entries WHERE ca_certificate_id = $1", ca_id);
    std::vector<std::string> serials;
    std::vector<std::string> times;
    serials.reserve(crl.revoked.size());
    times.reserve(crl.revoked.size());
    for (const auto& [serial, at] : crl.revoked) {
        serials.push_back(serial);
        times.push_back(std::to_string(epoch_seconds(at)));
    }
    tx->exec_params0(
        "INSERT INTO ca_crl_entries (ca_certificate_id, serial, revoked_at) "
        "SELECT $1, s, to_timestamp(t::double precision) "
        "FROM unnest($2::text[], $3::text[]) AS u(s, t) ON CONFLICT DO NOTHING",
        ca_id, array_literal(serials), array_literal(times));
}

void set_missing_crl_policy(Tx& tx, std::int64_t ca_id, const std::string& policy) {
    tx->exec_params0(
        "UPDATE ca_certificates SET missing_crl = $2, updated_at = now() WHERE id = $1", ca_id,
        policy);
}

std::string crl_state_subquery(std::string_view ca, std::string_view serial,
                               std::string_view issued) {
    std::string sql = "SELECT c.missing_crl, r.ca_certificate_id IS NOT NULL, ";
    sql += "coalesce(r.next_update < now(), false), ";
    sql += std::string(issued) + " AND EXISTS (SELECT 1 FROM ca_crl_entries e ";
    sql += "WHERE e.ca_certificate_id = c.id AND e.serial = " + std::string(serial) + ") ";
    sql += "FROM ca_certificates c LEFT JOIN ca_crls r ON r.ca_certificate_id = c.id ";
    sql += "WHERE c.id = " + std::string(ca);
    return sql;
}

std::optional<std::string> crl_refusal(const CrlState& state) {
    if (state.listed) return std::string("certificate revoked by the CA's CRL");
    if (state.missing_crl_policy == "refuse") {
        if (!state.has_crl) return std::string("no CRL imported for the CA");
        if (state.expired) return std::string("the CA's CRL has expired");
    }
    return std::nullopt;
}

std::string crl_admits_sql(std::string_view policy, std::string_view has_crl,
                           std::string_view expired, std::string_view listed) {
    return "(NOT coalesce(" + std::string(listed) + ", false) AND NOT (coalesce(" +
           std::string(policy) + ", '') = 'refuse' AND (NOT coalesce(" + std::string(has_crl) +
           ", false) OR coalesce(" + std::string(expired) + ", false))))";
}

std::vector<std::pair<std::int64_t, std::string>> certificates_with_serials(
    Tx& tx, std::int64_t org_id, const std::string& ca_ski,
    const std::vector<std::string>& serials) {
    const auto rows = tx->exec_params(
        "SELECT device_id, fingerprint FROM device_certificates "
        "WHERE org_id = $1 AND aki = $2 AND serial = ANY($3::text[])",
        org_id, ca_ski, array_literal(serials));
    std::vector<std::pair<std::int64_t, std::string>> out;
    for (const auto& row : rows) {
        out.emplace_back(row[0].as<std::int64_t>(), row[1].as<std::string>());
    }
    return out;
}

std::optional<RotationCertificate> find_certificate(Tx& tx, const std::string& fingerprint) {
    const auto rows =
        tx->exec_params(std::string(kCertColumns) + "WHERE d.fingerprint = $1", fingerprint);
    if (rows.empty()) return std::nullopt;
    return cert_from(rows[0]);
}

std::optional<RotationCertificate> current_certificate(Tx& tx, std::int64_t device_id) {
    const auto rows = tx->exec_params(
        std::string(kCertColumns) +
            "WHERE d.device_id = $1 AND d.revoked_at IS NULL AND d.replaced_by_id IS NULL "
            "ORDER BY d.last_used_at DESC NULLS LAST, d.id DESC LIMIT 1",
        device_id);
    if (rows.empty()) return std::nullopt;
    return cert_from(rows[0]);
}

void mark_renew_requested(Tx& tx, std::int64_t certificate_id) {
    tx->exec_params0(
        "UPDATE device_certificates SET renew_requested_at = now(), updated_at = now() "
        "WHERE id = $1",
        certificate_id);
}

void set_replaced_by(Tx& tx, std::int64_t certificate_id, std::int64_t successor_id) {
    tx->exec_params0(
        "UPDATE device_certificates SET replaced_by_id = $2, updated_at = now() WHERE id = $1",
        certificate_id, successor_id);
}

std::string rotation_work_sql(std::string_view fingerprint, std::string_view ca_id) {
    // The same conditions as schedule_retirement, and is_managed.
    return "EXISTS (SELECT 1 FROM device_certificates o JOIN device_certificates n "
           "ON o.replaced_by_id = n.id WHERE n.fingerprint = " +
           std::string(fingerprint) +
           " AND o.retire_after IS NULL AND o.revoked_at IS NULL AND n.revoked_at IS NULL "
           "OFFSET 0) OR EXISTS (SELECT 1 FROM managed_ca_keys WHERE ca_certificate_id = " +
           std::string(ca_id) + " OFFSET 0)";
}

std::vector<RetiredCertificate> schedule_retirement(Tx& tx, const std::string& fingerprint,
                                                    std::chrono::seconds grace) {
    return retired_from(tx->exec_params(
        "UPDATE device_certificates o SET retire_after = now() + make_interval(secs => $2), "
        "updated_at = now() FROM device_certificates n, devices d "
        "WHERE n.fingerprint = $1 AND o.replaced_by_id = n.id AND o.retire_after IS NULL "
        "AND o.revoked_at IS NULL AND n.revoked_at IS NULL AND d.id = o.device_id "
        "RETURNING o.id, o.org_id, o.device_id, d.identifier, o.serial, o.fingerprint",
        fingerprint, static_cast<double>(grace.count())));
}

std::vector<RetiredCertificate> retire_due(Tx& tx) {
    return retired_from(tx->exec_params(
        "UPDATE device_certificates o SET revoked_at = now(), updated_at = now() "
        "FROM devices d WHERE o.retire_after <= now() AND o.revoked_at IS NULL "
        "AND d.id = o.device_id "
        "RETURNING o.id, o.org_id, o.device_id, d.identifier, o.serial, o.fingerprint"));
}

}  // namespace otahub::db::managed_ca
