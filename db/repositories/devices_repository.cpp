#include "db/repositories/devices_repository.hpp"

#include <algorithm>
#include <string_view>

#include "db/notifications.hpp"
#include "db/repositories/managed_ca_repository.hpp"
#include "db/repositories/rollouts_repository.hpp"
#include "db/tx.hpp"

namespace otahub::db::devices {
namespace {

constexpr const char* kColumns =
    "d.id, d.org_id, d.product_id, p.name, o.name, d.identifier, d.description, "
    "array_to_json(d.tags)::text, d.updates_enabled, iso8601(d.updates_blocked_until), "
    "d.disabled, d.deleted_at IS NOT NULL, d.firmware_uuid, d.version, d.platform, "
    "d.architecture, d.firmware_product, d.firmware_metadata::text, d.device_api_version, "
    "d.firmware_validation_status, d.firmware_auto_revert_detected, "
    "array_to_json(d.connection_types)::text, d.network_interface, d.update_status, "
    "d.update_status_reason, iso8601(d.update_status_at), d.update_progress, d.update_stage, "
    "iso8601(d.first_seen_at), iso8601(d.last_seen_at), iso8601(d.connected_at), "
    "device_node(d.id), iso8601(d.inserted_at), iso8601(d.updated_at)";
constexpr const char* kFrom =
    " FROM devices d JOIN products p ON p.id = d.product_id JOIN orgs o ON o.id = d.org_id ";

constexpr const char* kCertColumns =
    "c.id, c.org_id, c.device_id, c.serial, c.aki, c.ski, iso8601(c.not_before), "
    "iso8601(c.not_after), c.fingerprint, c.public_key_fingerprint, c.revoked_at IS NOT NULL, "
    "iso8601(c.revoked_at), iso8601(c.last_used_at), iso8601(c.inserted_at)";

DeviceRow from(const pqxx::row& row) {
    DeviceRow d;
    d.id = row[0].as<std::int64_t>();
    d.org_id = row[1].as<std::int64_t>();
    d.product_id = row[2].as<std::int64_t>();
    d.product_name = row[3].as<std::string>();
    d.org_name = row[4].as<std::string>();
    d.identifier = row[5].as<std::string>();
    d.description = row[6].as<std::string>();
    d.tags = string_array(row[7]);
    d.updates_enabled = row[8].as<bool>();
    d.updates_blocked_until = opt_string(row[9]);
    d.disabled = row[10].as<bool>();
    d.deleted = row[11].as<bool>();
    d.firmware_uuid = opt_string(row[12]);
    d.version = opt_string(row[13]);
    d.platform = opt_string(row[14]);
    d.architecture = opt_string(row[15]);
    d.firmware_product = opt_string(row[16]);
    if (!row[17].is_null()) {
        d.firmware_metadata = nlohmann::json::parse(row[17].as<std::string>(), nullptr, false);
        if (d.firmware_metadata.is_discarded()) d.firmware_metadata = nullptr;
    }
    d.device_api_version = opt_string(row[18]);
    d.firmware_validation_status = row[19].as<std::string>();
    d.firmware_auto_revert_detected = row[20].as<bool>();
    d.connection_types = string_array(row[21]);
    d.network_interface = opt_string(row[22]);
    d.update_status = opt_string(row[23]);
    d.update_status_reason = opt_string(row[24]);
    d.update_status_at = opt_string(row[25]);
    if (!row[26].is_null()) d.update_progress = row[26].as<int>();
    d.update_stage = opt_string(row[27]);
    d.first_seen_at = opt_string(row[28]);
    d.last_seen_at = opt_string(row[29]);
    d.connected_at = opt_string(row[30]);
    d.node = opt_string(row[31]);
    d.online = d.node.has_value();
    d.inserted_at = row[32].as<std::string>();
    d.updated_at = row[33].as<std::string>();
    return d;
}

DeviceCertificateRow cert_from(const pqxx::row& row) {
    DeviceCertificateRow c;
    c.id = row[0].as<std::int64_t>();
    c.org_id = row[1].as<std::int64_t>();
    c.device_id = row[2].as<std::int64_t>();
    c.serial = row[3].as<std::string>();
    c.aki = opt_string(row[4]);
    c.ski = opt_string(row[5]);
    c.not_before = row[6].as<std::string>();
    c.not_after = row[7].as<std::string>();
    c.fingerprint = row[8].as<std::string>();
    c.public_key_fingerprint = row[9].as<std::string>();
    c.revoked = row[10].as<bool>();
    c.revoked_at = opt_string(row[11]);
    c.last_used_at = opt_string(row[12]);
    c.inserted_at = row[13].as<std::string>();
    return c;
}

std::optional<DeviceRow> first(const pqxx::result& r) {
    if (r.empty()) return std::nullopt;
    return from(r[0]);
}

std::string select_device(const char* where) {
    return std::string("SELECT ") + kColumns + kFrom + where;
}

std::string bigint_array(const std::vector<std::int64_t>& ids) {
    std::string out = "{";
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i > 0) out += ',';
        out += std::to_string(ids[i]);
    }
    return out + "}";
}

}  // namespace

std::optional<DeviceRow> find(Tx& tx, std::int64_t org_id, const std::string& identifier) {
    return first(tx->exec_params(
        select_device("WHERE d.org_id = $1 AND d.identifier = $2 AND d.deleted_at IS NULL"), org_id,
        identifier));
}

std::optional<DeviceRow> find_any(Tx& tx, std::int64_t org_id, const std::string& identifier) {
    return first(tx->exec_params(select_device("WHERE d.org_id = $1 AND d.identifier = $2"), org_id,
                                 identifier));
}

std::optional<DeviceRow> find_by_id(Tx& tx, std::int64_t id) {
    return first(tx->exec_params(select_device("WHERE d.id = $1"), id));
}

DevicePage list(Tx& tx, const DeviceQuery& query) {
    static const char* kWhere =
        "WHERE d.product_id = $1 AND d.deleted_at IS NULL "
        "AND ($2::text IS NULL OR $2::text = ANY(d.tags)) "
        "AND ($3::boolean IS NULL OR device_online(d.id) = $3::boolean) "
        "AND ($4::text IS NULL OR d.version = $4::text) "
        "AND ($5::text IS NULL OR starts_with(d.identifier, $5::text)) "
        "AND ($6::text IS NULL OR d.id IN (SELECT c.device_id FROM device_connections c "
        "WHERE c.node_id = $6::text AND c.status = 'connected' AND device_node(c.device_id) = "
        "$6)) ";
    const std::optional<std::string> online =
        query.online ? std::optional<std::string>(*query.online ? "true" : "false") : std::nullopt;
    DevicePage page;
    page.total =
        tx->exec_params1(std::string("SELECT count(*) FROM devices d ") + kWhere, query.product_id,
                         nullable(query.tag), nullable(online), nullable(query.version),
                         nullable(query.identifier_prefix), nullable(query.node))[0]
            .as<std::int64_t>();
    const std::int64_t offset =
        static_cast<std::int64_t>(query.page - 1) * static_cast<std::int64_t>(query.page_size);
    for (const auto& row : tx->exec_params(
             select_device(kWhere) + "ORDER BY d.identifier LIMIT $7 OFFSET $8", query.product_id,
             nullable(query.tag), nullable(online), nullable(query.version),
             nullable(query.identifier_prefix), nullable(query.node), query.page_size, offset)) {
        page.devices.push_back(from(row));
    }
    return page;
}

DeviceRow create(Tx& tx, std::int64_t org_id, std::int64_t product_id,
                 const std::string& identifier, const std::string& description,
                 const std::vector<std::string>& tags) {
    // A soft-deleted device with that identifier comes back as a fresh registration.
    auto r = tx->exec_params(
        "INSERT INTO devices (org_id, product_id, identifier, description, tags) "
        "VALUES ($1, $2, $3, $4, ARRAY(SELECT jsonb_array_elements_text($5::jsonb))) "
        "ON CONFLICT (org_id, identifier) DO UPDATE SET product_id = EXCLUDED.product_id, "
        "description = EXCLUDED.description, tags = EXCLUDED.tags, deleted_at = NULL, "
        "disabled = false, updates_enabled = true, updates_blocked_until = NULL, "
        "updated_at = now() WHERE devices.deleted_at IS NOT NULL RETURNING id",
        org_id, product_id, identifier, description, json_array(tags));
    if (r.empty()) throw Conflict("already exists: identifier");
    return *find_by_id(tx, r[0][0].as<std::int64_t>());
}

DeviceRow create_if_missing(Tx& tx, std::int64_t org_id, std::int64_t product_id,
                            const std::string& identifier, const std::string& description,
                            const std::vector<std::string>& tags, bool* created) {
    // ON CONFLICT DO NOTHING waits for a concurrent insert of the same key to commit; the
    // SELECT after it (a new statement, READ COMMITTED) then sees that row.
    const auto inserted = tx->exec_params(
        "INSERT INTO devices (org_id, product_id, identifier, description, tags) "
        "VALUES ($1, $2, $3, $4, ARRAY(SELECT jsonb_array_elements_text($5::jsonb))) "
        "ON CONFLICT (org_id, identifier) DO NOTHING RETURNING id",
        org_id, product_id, identifier, description, json_array(tags));
    if (created != nullptr) *created = !inserted.empty();
    return *find_any(tx, org_id, identifier);
}

DeviceRow update(Tx& tx, std::int64_t id, const std::string& description,
                 const std::vector<std::string>& tags, bool updates_enabled, bool disabled) {
    tx->exec_params0(
        "UPDATE devices SET description = $2, "
        "tags = ARRAY(SELECT jsonb_array_elements_text($3::jsonb)), updates_enabled = $4, "
        "disabled = $5, updated_at = now() WHERE id = $1",
        id, description, json_array(tags), updates_enabled, disabled);
    return *find_by_id(tx, id);
}

void soft_delete(Tx& tx, std::int64_t id) {
    tx->exec_params0("UPDATE devices SET deleted_at = now(), updated_at = now() WHERE id = $1", id);
}

namespace {

// `"name":"value"` after a comma, `value` as a JSON string. Names and addresses are the peer's
// text, not necessarily UTF-8: anything but printable ASCII goes through nlohmann's serializer,
// which replaces invalid UTF-8.
void append_json_member(std::string& out, std::string_view name, const std::string& value) {
    out += ",\"";
    out += name;
    out += "\":";
    const bool plain = std::all_of(value.begin(), value.end(), [](char ch) {
        return ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\';
    });
    if (plain) {
        out.push_back('"');
        out += value;
        out.push_back('"');
    } else {
        out += nlohmann::json(value).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
}

// `"name":null` after a comma when there is no value, else append_json_member.
void append_json_optional(std::string& out, std::string_view name,
                          const std::optional<std::string>& value) {
    if (value) {
        append_json_member(out, name, *value);
        return;
    }
    out += ",\"";
    out += name;
    out += "\":null";
}

}  // namespace

std::vector<JoinFacts> record_joins(Tx& tx, const std::vector<JoinRecord>& joins) {
    std::vector<JoinFacts> out(joins.size());
    if (joins.empty()) return out;
    // Written out rather than built as a JSON document (a tree of maps per join, the metadata
    // copied into it), as check_open_or_provision's input is. Report strings are the device's
    // (cut on character boundaries): invalid UTF-8 is replaced, never thrown on.
    std::string input = "[";
    input.reserve(joins.size() * 512);
    for (std::size_t n = 0; n < joins.size(); ++n) {
        const auto& j = joins[n];
        if (!j.report) throw ApiError(ErrorCode::kInternal, "join without report");
        const auto& r = *j.report;
        if (n > 0) input.push_back(',');
        input += "{\"n\":" + std::to_string(n);
        input += ",\"id\":" + std::to_string(j.device_id);
        append_json_optional(input, "uuid", r.uuid);
        append_json_optional(input, "version", r.version);
        append_json_optional(input, "platform", r.platform);
        append_json_optional(input, "architecture", r.architecture);
        append_json_optional(input, "product", r.product);
        input += ",\"metadata\":";
        input += r.metadata.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        append_json_optional(input, "api", r.device_api_version);
        append_json_member(input, "validation", r.validation_status);
        input += r.auto_revert_detected ? ",\"revert\":true" : ",\"revert\":false";
        append_json_optional(input, "downloading", r.currently_downloading_uuid);
        append_json_member(input, "fp", j.fingerprint);
        input += ",\"ca\":" + std::to_string(j.ca_id);
        input.push_back('}');
    }
    input.push_back(']');
    // The UPDATE runs whether or not the outer SELECT reads it (PostgreSQL always completes
    // data-modifying CTEs); the two facts read tables it does not touch. Fences against the
    // generic plan a pooled connection keeps (made at its sixth execution, possibly while the
    // tables were nearly empty, when a sequential scan looks cheapest): the range on `n`, true
    // for every record, makes PostgreSQL estimate one input row instead of jsonb_to_recordset's
    // 100, so devices is updated through its primary key; OFFSET 0 keeps each EXISTS a lookup
    // per record rather than a hashed scan of its table.
    static const std::string sql =
        "WITH input AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS i(n int, id bigint, "
        "uuid text, version text, platform text, architecture text, product text, "
        "metadata jsonb, api text, validation text, revert boolean, downloading text, fp text, "
        "ca bigint) WHERE i.n >= 0 AND i.n < 2147483647), "
        "joined AS (UPDATE devices d SET firmware_uuid = i.uuid, version = i.version, "
        "platform = i.platform, architecture = i.architecture, firmware_product = i.product, "
        "firmware_metadata = i.metadata, device_api_version = i.api, "
        "firmware_validation_status = i.validation, firmware_auto_revert_detected = i.revert, "
        "currently_downloading_uuid = i.downloading, last_seen_at = now(), updated_at = now() "
        "FROM input i WHERE d.id = i.id RETURNING d.id) "
        "SELECT i.n, (" +
        rollouts::in_flight_exists_sql("i.id") + "), (" +
        managed_ca::rotation_work_sql("i.fp", "i.ca") + ") FROM input i ORDER BY i.n";
    const auto rows = tx->exec_params(sql, input);
    if (rows.size() != joins.size()) {
        throw ApiError(ErrorCode::kInternal, "join batch: one row per join expected");
    }
    for (const auto& row : rows) {
        const auto n = row[0].as<std::size_t>();
        if (n >= out.size()) throw ApiError(ErrorCode::kInternal, "join batch: bad row");
        out[n] = JoinFacts{row[1].as<bool>(), row[2].as<bool>()};
    }
    return out;
}

void record_status(Tx& tx, std::int64_t id, const std::string& status,
                   const std::optional<std::string>& reason,
                   const std::optional<std::int64_t>& delay_for_minutes) {
    const std::optional<std::string> delay =
        delay_for_minutes ? std::optional<std::string>(std::to_string(*delay_for_minutes))
                          : std::nullopt;
    tx->exec_params0(
        "UPDATE devices SET update_status = $2, update_status_reason = $3, "
        "update_status_at = now(), updates_blocked_until = CASE WHEN $4::bigint IS NULL "
        "THEN updates_blocked_until ELSE now() + make_interval(mins => $4::int) END, "
        "updated_at = now() WHERE id = $1",
        id, status, nullable(reason), nullable(delay));
}

void record_progress(Tx& tx, std::int64_t id, int value, const std::optional<std::string>& stage) {
    tx->exec_params0(
        "UPDATE devices SET update_progress = $2, update_stage = $3, update_progress_at = now(), "
        "update_status = CASE WHEN update_status IS NULL OR update_status IN ('received', "
        "'started') THEN 'updating' ELSE update_status END WHERE id = $1",
        id, value, nullable(stage));
}

void record_connection_types(Tx& tx, std::int64_t id, const std::vector<std::string>& types) {
    tx->exec_params0(
        "UPDATE devices SET connection_types = "
        "ARRAY(SELECT jsonb_array_elements_text($2::jsonb)) WHERE id = $1",
        id, json_array(types));
}

void record_firmware_validated(Tx& tx, std::int64_t id) {
    tx->exec_params0("UPDATE devices SET firmware_validation_status = 'validated' WHERE id = $1",
                     id);
}

void record_network_interface(Tx& tx, std::int64_t id, const std::string& interface_name) {
    tx->exec_params0("UPDATE devices SET network_interface = $2 WHERE id = $1", id, interface_name);
}

// ---- certificates ----

std::optional<DeviceCertificateRow> find_certificate_by_fingerprint(
    Tx& tx, const std::string& fingerprint) {
    auto r = tx->exec_params(std::string("SELECT ") + kCertColumns +
                                 " FROM device_certificates c WHERE c.fingerprint = $1",
                             fingerprint);
    if (r.empty()) return std::nullopt;
    return cert_from(r[0]);
}

std::vector<DeviceCertificateRow> certificates_by_public_key(Tx& tx, std::int64_t org_id,
                                                             const std::string& public_key_fp) {
    std::vector<DeviceCertificateRow> out;
    for (const auto& row :
         tx->exec_params(std::string("SELECT ") + kCertColumns +
                             " FROM device_certificates c JOIN devices d ON d.id = c.device_id "
                             "WHERE c.org_id = $1 AND c.public_key_fingerprint = $2 ORDER BY c.id",
                         org_id, public_key_fp)) {
        out.push_back(cert_from(row));
    }
    return out;
}

std::int64_t count_certificates_with_other_key(Tx& tx, std::int64_t device_id,
                                               const std::string& public_key_fp) {
    return tx
        ->exec_params1(
            "SELECT count(*) FROM device_certificates WHERE device_id = $1 AND "
            "public_key_fingerprint <> $2",
            device_id, public_key_fp)[0]
        .as<std::int64_t>();
}

std::optional<DeviceCertificateRow> insert_certificate(Tx& tx, const NewDeviceCertificate& cert) {
    auto r = tx->exec_params(
        std::string("INSERT INTO device_certificates AS c (org_id, device_id, serial, aki, ski, "
                    "not_before, not_after, fingerprint, public_key_fingerprint, der, "
                    "last_used_at) VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''), "
                    "to_timestamp($6), to_timestamp($7), $8, $9, $10, now()) "
                    "ON CONFLICT (fingerprint) DO NOTHING RETURNING ") +
            kCertColumns,
        cert.org_id, cert.device_id, cert.serial, cert.aki, cert.ski,
        epoch_seconds(cert.not_before), epoch_seconds(cert.not_after), cert.fingerprint,
        cert.public_key_fingerprint, pqxx::binarystring(cert.der.data(), cert.der.size()));
    if (r.empty()) return std::nullopt;
    return cert_from(r[0]);
}

std::vector<DeviceCertificateRow> list_certificates(Tx& tx, std::int64_t device_id) {
    std::vector<DeviceCertificateRow> out;
    for (const auto& row : tx->exec_params(
             std::string("SELECT ") + kCertColumns +
                 " FROM device_certificates c WHERE c.device_id = $1 AND c.revoked_at IS NULL "
                 "ORDER BY c.id",
             device_id)) {
        out.push_back(cert_from(row));
    }
    return out;
}

std::optional<DeviceCertificateRow> find_certificate(Tx& tx, std::int64_t device_id,
                                                     const std::string& serial) {
    auto r = tx->exec_params(std::string("SELECT ") + kCertColumns +
                                 " FROM device_certificates c WHERE c.device_id = $1 AND "
                                 "c.serial = $2",
                             device_id, serial);
    if (r.empty()) return std::nullopt;
    return cert_from(r[0]);
}

void revoke_certificate(Tx& tx, std::int64_t certificate_id) {
    tx->exec_params0(
        "UPDATE device_certificates SET revoked_at = COALESCE(revoked_at, now()), "
        "updated_at = now() WHERE id = $1",
        certificate_id);
}

// ---- connections and nodes ----

namespace {

// What goes with a new connection row: the device's connection times and the last use (at
// most once a minute) of the CA and the certificate, as CTEs named device, ca and certificate.
// Each argument is an SQL expression for an id; a NULL id writes nothing.
std::string connection_writes(std::string_view device, std::string_view ca,
                              std::string_view certificate) {
    return "device AS (UPDATE devices SET connected_at = now(), last_seen_at = now(), "
           "first_seen_at = COALESCE(first_seen_at, now()) WHERE id = " +
           std::string(device) +
           "), ca AS (UPDATE ca_certificates SET last_used_at = now() WHERE id = " +
           std::string(ca) +
           " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')), "
           "certificate AS (UPDATE device_certificates SET last_used_at = now() WHERE id = " +
           std::string(certificate) +
           " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute'))";
}

// The connection row and its writes: one statement, so one round trip on every device
// connection. $1 device, $2 node, $3 remote address, $4 fingerprint, $5 CA, $6 certificate id
// (or null).
const std::string& open_connection_sql() {
    static const std::string sql =
        "WITH connection AS (INSERT INTO device_connections (device_id, node_id, "
        "remote_address, certificate_fingerprint) VALUES ($1, $2, $3, NULLIF($4, '')) "
        "RETURNING id), " +
        connection_writes("$1", "$5", "$6::bigint") + " SELECT id";
    return sql;
}

// The known-certificate check for every attempt of a batch, with the connection row, its writes
// and NOTIFY when it admits the device, and, for an attempt whose certificate is not stored and
// whose CA's CRL admits it, JITP, all in one statement (check_open_or_provision). $1
// the attempts (jsonb: n, fp, ca, org, serial, issued, identifier, pkfp, aki, ski, nb, na, der as
// hex, remote), $2 node, $3 channel, $4 event. Attempts are matched to the rows they wrote by
// fingerprint and by (organization, identifier): the caller never puts two attempts with the same
// fingerprint, identifier or public key in one batch. The two branches exclude each other per
// attempt (cert_id null or not). New device rows are written with their connection times: rows
// inserted by this statement are invisible to its UPDATEs. No device_connected NOTIFY for a device
// created here: its one use is to close older sessions of the device, and a device this statement
// creates has none (a concurrent first connection either lost the insert or finds the device in a
// transaction, which NOTIFYs). Without it a JITP storm's commits do not queue on the NOTIFY lock
// and every node's listener is not woken per new device: 5% more devices per second in bench/run.
const std::string& check_open_or_provision_sql() {
    static const std::string admits =
        managed_ca::crl_admits_sql("chk.policy", "chk.has_crl", "chk.expired", "chk.listed");
    // The attempts come as one jsonb value, which PostgreSQL estimates at 100 rows, and a pooled
    // connection keeps the generic plan it made at its sixth execution, possibly while the tables
    // were nearly empty: without the fences (OFFSET 0 keeps a subquery from being flattened into
    // a join, = ANY(ARRAY(...)) makes an index lookup once the table has grown past a few pages)
    // that plan scanned device_certificates and devices whole for every batch, which grew with
    // the fleet. The devices and certificates of the connections opened are updated through a
    // join with them (a row or so, by PostgreSQL's estimate: a nested loop over the primary key):
    // `id = ANY(...)` there still made sequential scans in a plan made on nearly empty tables.
    static const std::string sql =
        "WITH input AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS i(n int, fp text, "
        "ca bigint, org bigint, serial text, issued boolean, identifier text, pkfp text, "
        "aki text, ski text, nb double precision, na double precision, der text, remote text)), "
        "chk AS (SELECT i.n, crl.policy, crl.has_crl, crl.expired, crl.listed, "
        "k.id AS cert_id, k.revoked, d.id AS device_id, d.org_id, d.product_id, d.identifier, "
        "d.disabled, d.deleted_at IS NOT NULL AS deleted "
        "FROM input i LEFT JOIN LATERAL (SELECT * FROM (" +
        managed_ca::crl_state_subquery("i.ca", "i.serial", "i.issued") +
        ") s OFFSET 0) AS crl(policy, has_crl, expired, listed) ON true "
        "LEFT JOIN LATERAL (SELECT c.id, c.revoked_at IS NOT NULL AS revoked, c.device_id "
        "FROM device_certificates c WHERE c.fingerprint = i.fp OFFSET 0) k ON true "
        "LEFT JOIN LATERAL (SELECT * FROM devices d WHERE d.id = k.device_id OFFSET 0) d "
        "ON true), "
        "connection AS (INSERT INTO device_connections (device_id, node_id, remote_address, "
        "certificate_fingerprint) SELECT chk.device_id, $2, i.remote, i.fp "
        "FROM chk JOIN input i ON i.n = chk.n WHERE " +
        admits +
        " AND chk.cert_id IS NOT NULL AND NOT chk.revoked AND chk.device_id IS NOT NULL "
        "AND chk.org_id = i.org AND NOT chk.deleted AND NOT chk.disabled "
        "RETURNING id, device_id, certificate_fingerprint), "
        "device AS (UPDATE devices d SET connected_at = now(), last_seen_at = now(), "
        "first_seen_at = COALESCE(d.first_seen_at, now()) FROM connection c "
        "WHERE d.id = c.device_id), "
        "certificate AS (UPDATE device_certificates k SET last_used_at = now() "
        "FROM chk JOIN input i ON i.n = chk.n "
        "JOIN connection c ON c.certificate_fingerprint = i.fp WHERE k.id = chk.cert_id "
        "AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')), "
        "j_profile AS (SELECT i.n, i.org, i.identifier, c.jitp_product_id, c.jitp_tags, "
        "c.jitp_description, c.serial AS ca_serial, p.name AS product "
        "FROM input i JOIN chk ON chk.n = i.n "
        "JOIN ca_certificates c ON c.id = i.ca AND c.org_id = i.org "
        "JOIN products p ON p.id = c.jitp_product_id "
        "WHERE i.identifier <> '' AND chk.cert_id IS NULL AND " +
        admits +
        " AND NOT EXISTS (SELECT 1 FROM device_certificates WHERE org_id = i.org "
        "AND public_key_fingerprint = i.pkfp OFFSET 0) "
        "AND NOT EXISTS (SELECT 1 FROM devices WHERE org_id = i.org "
        "AND identifier = i.identifier OFFSET 0)), "
        "j_device AS (INSERT INTO devices (org_id, product_id, identifier, description, tags, "
        "connected_at, first_seen_at, last_seen_at) SELECT org, jitp_product_id, identifier, "
        "jitp_description, jitp_tags, now(), now(), now() FROM j_profile ORDER BY n "
        "ON CONFLICT (org_id, identifier) DO NOTHING "
        "RETURNING id, org_id, product_id, identifier), "
        "j_input AS (SELECT d.id AS device_id, d.org_id, i.*, jp.product, jp.ca_serial "
        "FROM j_device d JOIN j_profile jp ON jp.org = d.org_id AND jp.identifier = d.identifier "
        "JOIN input i ON i.n = jp.n), "
        "j_audit AS (INSERT INTO audit_logs (org_id, actor_type, actor, action, resource_type, "
        "resource, details) SELECT org_id, 'device', identifier, 'device.provisioned', "
        "'device', identifier, jsonb_build_object('product', product, 'ca_serial', ca_serial, "
        "'certificate_serial', serial, 'remote', remote) FROM j_input ORDER BY n), "
        "j_certificate AS (INSERT INTO device_certificates (org_id, device_id, serial, aki, ski, "
        "not_before, not_after, fingerprint, public_key_fingerprint, der, last_used_at) "
        "SELECT org_id, device_id, serial, NULLIF(aki, ''), NULLIF(ski, ''), to_timestamp(nb), "
        "to_timestamp(na), fp, pkfp, decode(der, 'hex'), now() FROM j_input ORDER BY n "
        "ON CONFLICT (fingerprint) DO NOTHING RETURNING device_id, fingerprint), "
        "j_connection AS (INSERT INTO device_connections (device_id, node_id, remote_address, "
        "certificate_fingerprint) SELECT jc.device_id, $2, i.remote, jc.fingerprint "
        "FROM j_certificate jc JOIN input i ON i.fp = jc.fingerprint "
        "RETURNING id, certificate_fingerprint), "
        "ca AS (UPDATE ca_certificates SET last_used_at = now() WHERE id = ANY(ARRAY(SELECT i.ca "
        "FROM input i WHERE i.fp IN (SELECT certificate_fingerprint FROM connection "
        "UNION ALL SELECT certificate_fingerprint FROM j_connection))) "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')) "
        "SELECT chk.policy, chk.has_crl, chk.expired, chk.listed, chk.cert_id, chk.revoked, "
        "chk.device_id, chk.org_id, chk.product_id, chk.identifier, chk.disabled, chk.deleted, "
        "c.id, CASE WHEN c.id IS NOT NULL THEN pg_notify($3, ($4::jsonb || "
        "jsonb_build_object('connection_id', c.id, 'device_id', c.device_id))::text) END, "
        "d.id, d.org_id, d.product_id, d.identifier, jc.id, i.n "
        "FROM input i JOIN chk ON chk.n = i.n "
        "LEFT JOIN connection c ON c.certificate_fingerprint = i.fp "
        "LEFT JOIN j_profile jp ON jp.n = i.n "
        "LEFT JOIN j_device d ON d.org_id = jp.org AND d.identifier = jp.identifier "
        "LEFT JOIN j_connection jc ON jc.certificate_fingerprint = i.fp ORDER BY i.n";
    return sql;
}

ConnectionCheck check_from(const pqxx::row& row) {
    ConnectionCheck check;
    if (!row[0].is_null()) {
        check.crl = {row[0].as<std::string>(), row[1].as<bool>(), row[2].as<bool>(),
                     row[3].as<bool>()};
    }
    if (!row[4].is_null()) {
        KnownCertificate cert;
        cert.id = row[4].as<std::int64_t>();
        cert.revoked = row[5].as<bool>();
        if (!row[6].is_null()) {
            cert.device = DeviceIdentity{row[6].as<std::int64_t>(), row[7].as<std::int64_t>(),
                                         row[8].as<std::int64_t>(), row[9].as<std::string>(),
                                         row[10].as<bool>(),        row[11].as<bool>()};
        }
        check.certificate = std::move(cert);
    }
    return check;
}

std::optional<std::string> id_text(std::optional<std::int64_t> id) {
    return id ? std::optional<std::string>(std::to_string(*id)) : std::nullopt;
}

}  // namespace

std::int64_t open_connection_and_notify(Tx& tx, std::int64_t device_id, const std::string& node_id,
                                        const std::string& remote_address,
                                        const std::string& fingerprint, std::int64_t ca_id,
                                        std::optional<std::int64_t> certificate_id,
                                        const std::string& event) {
    if (event.size() > kMaxNotifyPayload - 32) {
        throw ApiError(ErrorCode::kInternal, "event payload too large for NOTIFY");
    }
    return tx
        ->exec_params1(open_connection_sql() +
                           ", pg_notify($7, ($8::jsonb || jsonb_build_object('connection_id', "
                           "id))::text) FROM connection",
                       device_id, node_id, remote_address, fingerprint, ca_id,
                       nullable(id_text(certificate_id)), std::string(kEventChannel), event)[0]
        .as<std::int64_t>();
}

std::vector<CheckOrProvision> check_open_or_provision(Tx& tx,
                                                      const std::vector<ConnectionAttempt>& batch,
                                                      const std::string& node_id,
                                                      const std::string& event) {
    std::vector<CheckOrProvision> out(batch.size());
    if (batch.empty()) return out;
    // Room for the connection and device ids the statement adds.
    if (event.size() > kMaxNotifyPayload - 64) {
        throw ApiError(ErrorCode::kInternal, "event payload too large for NOTIFY");
    }
    // Written out rather than built as a JSON document: a connection's certificate is ~1,000 hex
    // digits, and a document of 14 members per attempt with the serializer's pass over every
    // character took ~1.6% of the hub's samples in a handshake profile.
    std::string input = "[";
    input.reserve(batch.size() * 1536);
    for (std::size_t n = 0; n < batch.size(); ++n) {
        const auto& a = batch[n];
        const auto& c = a.certificate;
        if (c.fingerprint.empty())
            throw ApiError(ErrorCode::kInternal, "attempt without fingerprint");
        if (n > 0) input.push_back(',');
        input += "{\"n\":" + std::to_string(n);
        append_json_member(input, "fp", c.fingerprint);
        input += ",\"ca\":" + std::to_string(a.ca_id);
        input += ",\"org\":" + std::to_string(a.org_id);
        append_json_member(input, "serial", c.serial);
        input += a.issued_by_ca ? ",\"issued\":true" : ",\"issued\":false";
        append_json_member(input, "identifier", a.jitp ? a.identifier : std::string());
        append_json_member(input, "pkfp", c.public_key_fingerprint);
        append_json_member(input, "aki", c.aki);
        append_json_member(input, "ski", c.ski);
        input += ",\"nb\":" + std::to_string(epoch_seconds(c.not_before));
        input += ",\"na\":" + std::to_string(epoch_seconds(c.not_after));
        input += ",\"der\":\"";
        static constexpr char kHex[] = "0123456789abcdef";
        for (const auto byte : c.der) {
            input.push_back(kHex[byte >> 4]);
            input.push_back(kHex[byte & 0x0f]);
        }
        input.push_back('"');
        append_json_member(input, "remote", a.remote_address);
        input.push_back('}');
    }
    input.push_back(']');
    const auto rows = tx->exec_params(check_open_or_provision_sql(), input, node_id,
                                      std::string(kEventChannel), event);
    if (rows.size() != batch.size()) {
        throw ApiError(ErrorCode::kInternal, "connection batch: one row per attempt expected");
    }
    for (const auto& row : rows) {
        const auto n = row[19].as<std::size_t>();
        if (n >= out.size()) throw ApiError(ErrorCode::kInternal, "connection batch: bad row");
        auto& o = out[n];
        o.check = check_from(row);
        if (!row[12].is_null()) o.check.connection_id = row[12].as<std::int64_t>();
        if (!row[14].is_null()) {
            Provisioned made;
            made.device_id = row[14].as<std::int64_t>();
            made.org_id = row[15].as<std::int64_t>();
            made.product_id = row[16].as<std::int64_t>();
            made.identifier = row[17].as<std::string>();
            if (!row[18].is_null()) made.connection_id = row[18].as<std::int64_t>();
            o.provisioned = std::move(made);
        }
    }
    return out;
}

void close_connection(Tx& tx, std::int64_t connection_id, const std::string& reason) {
    close_connections(tx,
                      {ConnectionClose{connection_id, reason, std::chrono::system_clock::now()}});
}

std::int64_t close_connections(Tx& tx, const std::vector<ConnectionClose>& closes) {
    if (closes.empty()) return 0;
    nlohmann::json list = nlohmann::json::array();
    for (const auto& c : closes) {
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(c.at.time_since_epoch()).count();
        list.push_back({{"id", c.connection_id}, {"reason", c.reason}, {"at", ms}});
    }
    // A reason is the hub's text, or a close reason or error message that may not be UTF-8.
    const auto input = list.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    // The generic plan a pooled connection keeps (see check_open_or_provision_sql) read every
    // connected row of the cluster (a bitmap scan of device_connections_node_connected) for each
    // batch of closes. The range on the id, true for every connection row, makes PostgreSQL
    // expect one input row instead of jsonb_to_recordset's 100, and `<> 'disconnected'` (the same
    // rows: status is one of the two) does not match that partial index's predicate, which a
    // plan made while few sessions were connected takes for nearly free: rows are looked up by id.
    const auto row = tx->exec_params1(
        "WITH input AS (SELECT i.id, i.reason, least(now(), to_timestamp(i.at / 1000.0)) AS at "
        "FROM jsonb_to_recordset($1::jsonb) AS i(id bigint, reason text, at double precision) "
        "WHERE i.id >= 1 AND i.id < 9223372036854775807), "
        "closed AS (UPDATE device_connections c SET status = 'disconnected', "
        "disconnected_at = greatest(c.connected_at, input.at), "
        "last_seen_at = greatest(c.last_seen_at, c.connected_at, input.at), "
        "disconnect_reason = input.reason "
        "FROM input WHERE c.id = input.id AND c.status <> 'disconnected' "
        "RETURNING c.device_id, c.disconnected_at AS at), "
        "seen AS (SELECT device_id, max(at) AS at FROM closed GROUP BY device_id), "
        "touched AS (UPDATE devices d SET last_seen_at = greatest(d.last_seen_at, seen.at) "
        "FROM seen WHERE d.id = seen.device_id) "
        "SELECT count(*) FROM closed",
        input);
    return row[0].as<std::int64_t>();
}

void touch_last_seen(Tx& tx, const std::vector<std::int64_t>& device_ids) {
    if (device_ids.empty()) return;
    const std::string ids = bigint_array(device_ids);
    tx->exec_params0("UPDATE devices SET last_seen_at = now() WHERE id = ANY($1::bigint[])", ids);
    tx->exec_params0(
        "UPDATE device_connections SET last_seen_at = now() WHERE device_id = ANY($1::bigint[]) "
        "AND status = 'connected'",
        ids);
}

std::vector<std::pair<std::int64_t, std::string>> sessions_to_close(
    Tx& tx, const std::vector<std::pair<std::int64_t, std::string>>& sessions) {
    std::vector<std::pair<std::int64_t, std::string>> out;
    if (sessions.empty()) return out;
    nlohmann::json list = nlohmann::json::array();
    for (const auto& [device_id, fingerprint] : sessions) {
        list.push_back({{"d", device_id}, {"f", fingerprint}});
    }
    for (const auto& row : tx->exec_params(
             "SELECT s.d, CASE WHEN d.id IS NULL OR d.deleted_at IS NOT NULL THEN 'device deleted' "
             "WHEN d.disabled THEN 'device disabled' ELSE 'certificate revoked' END "
             "FROM jsonb_to_recordset($1::jsonb) AS s(d bigint, f text) "
             "LEFT JOIN devices d ON d.id = s.d "
             "LEFT JOIN device_certificates c ON c.fingerprint = s.f "
             "WHERE d.id IS NULL OR d.deleted_at IS NOT NULL OR d.disabled "
             "OR c.revoked_at IS NOT NULL",
             list.dump())) {
        out.emplace_back(row[0].as<std::int64_t>(), row[1].as<std::string>());
    }
    return out;
}

void heartbeat_node(Tx& tx, const std::string& node_id) {
    tx->exec_params0(
        "INSERT INTO nodes (node_id) VALUES ($1) ON CONFLICT (node_id) DO UPDATE "
        "SET heartbeat_at = now()",
        node_id);
}

std::int64_t disconnect_node(Tx& tx, const std::string& node_id, const std::string& reason) {
    auto r = tx->exec_params(
        "UPDATE device_connections SET status = 'disconnected', disconnected_at = now(), "
        "disconnect_reason = $2 WHERE node_id = $1 AND status = 'connected'",
        node_id, reason);
    return static_cast<std::int64_t>(r.affected_rows());
}

std::vector<NodeRow> nodes(Tx& tx, std::int64_t org_id) {
    std::vector<NodeRow> out;
    for (const auto& row : tx->exec_params(
             "SELECT n.node_id, iso8601(n.started_at), iso8601(n.heartbeat_at), "
             "n.heartbeat_at > now() - otahub_node_ttl(), "
             "(SELECT count(DISTINCT c.device_id) FROM device_connections c "
             " JOIN devices d ON d.id = c.device_id "
             " WHERE c.node_id = n.node_id AND c.status = 'connected' AND d.org_id = $1 "
             " AND d.deleted_at IS NULL AND device_node(c.device_id) = n.node_id) "
             "FROM nodes n ORDER BY n.node_id",
             org_id)) {
        NodeRow node;
        node.node_id = row[0].as<std::string>();
        node.started_at = row[1].as<std::string>();
        node.heartbeat_at = row[2].as<std::string>();
        node.alive = row[3].as<bool>();
        node.connected_devices = row[4].as<std::int64_t>();
        out.push_back(std::move(node));
    }
    return out;
}

std::int64_t sweep_dead_nodes(Tx& tx) {
    auto r = tx->exec(
        "UPDATE device_connections c SET status = 'disconnected', "
        "disconnected_at = COALESCE(n.heartbeat_at, now()), disconnect_reason = 'node down' "
        "FROM device_connections c2 LEFT JOIN nodes n ON n.node_id = c2.node_id "
        "WHERE c.id = c2.id AND c.status = 'connected' "
        "AND (n.node_id IS NULL OR n.heartbeat_at < now() - otahub_node_ttl())");
    tx->exec("DELETE FROM nodes WHERE heartbeat_at < now() - interval '1 day'");
    return static_cast<std::int64_t>(r.affected_rows());
}

}  // namespace otahub::db::devices
