#include "db/repositories/firmwares_repository.hpp"

#include "db/tx.hpp"

namespace otahub::db::firmwares {
namespace {

constexpr const char* kColumns =
    "f.id, f.org_id, f.product_id, f.org_key_id, p.name, k.name, f.uuid, f.version, f.platform, "
    "f.architecture, f.author, f.description, f.misc, f.vcs_identifier, f.fwup_version, f.tool, "
    "f.creation_date, f.size, f.sha256, array_to_string(f.partial_sha256, ','), f.storage_key, "
    "f.ttl_seconds, iso8601(f.ttl_until), iso8601(f.inserted_at), iso8601(f.updated_at)";
constexpr const char* kFrom =
    " FROM firmwares f JOIN products p ON p.id = f.product_id"
    " JOIN org_keys k ON k.id = f.org_key_id";

std::vector<std::string> split_commas(const std::string& text) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < text.size()) {
        auto comma = text.find(',', start);
        if (comma == std::string::npos) comma = text.size();
        out.push_back(text.substr(start, comma - start));
        start = comma + 1;
    }
    return out;
}

FirmwareRow from(const pqxx::row& row) {
    FirmwareRow f;
    f.id = row[0].as<std::int64_t>();
    f.org_id = row[1].as<std::int64_t>();
    f.product_id = row[2].as<std::int64_t>();
    f.org_key_id = row[3].as<std::int64_t>();
    f.product = row[4].as<std::string>();
    f.key_name = row[5].as<std::string>();
    f.uuid = row[6].as<std::string>();
    f.version = row[7].as<std::string>();
    f.platform = row[8].as<std::string>();
    f.architecture = row[9].as<std::string>();
    f.author = row[10].as<std::string>();
    f.description = row[11].as<std::string>();
    f.misc = row[12].as<std::string>();
    f.vcs_identifier = row[13].as<std::string>();
    f.fwup_version = row[14].as<std::string>();
    f.tool = row[15].as<std::string>();
    f.creation_date = row[16].as<std::string>();
    f.size = row[17].as<std::int64_t>();
    f.sha256 = row[18].as<std::string>();
    f.partial_sha256 = split_commas(row[19].as<std::string>());
    f.storage_key = row[20].as<std::string>();
    if (!row[21].is_null()) f.ttl_seconds = row[21].as<std::int64_t>();
    f.ttl_until = opt_string(row[22]);
    f.inserted_at = row[23].as<std::string>();
    f.updated_at = row[24].as<std::string>();
    return f;
}

std::optional<FirmwareRow> first(const pqxx::result& r) {
    if (r.empty()) return std::nullopt;
    return from(r[0]);
}

/// Microseconds since the epoch, for to_timestamp() (integers travel exactly; doubles might not).
std::int64_t epoch_micros(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

}  // namespace

FirmwareRow create(Tx& tx, const NewFirmware& f) {
    // Hex digests never hold commas, quotes or braces: a plain array literal is safe.
    std::string partials = "{";
    for (std::size_t i = 0; i < f.partial_sha256.size(); ++i) {
        if (i > 0) partials += ",";
        partials += f.partial_sha256[i];
    }
    partials += "}";
    // libpqxx 6 has no std::optional parameters: a null const char* is SQL NULL.
    const std::string uploaded_by = f.uploaded_by ? std::to_string(*f.uploaded_by) : "";
    const std::string ttl = f.ttl_seconds ? std::to_string(*f.ttl_seconds) : "";
    auto id =
        tx->exec_params1(
              "INSERT INTO firmwares (org_id, product_id, org_key_id, uploaded_by, uuid, "
              "version, platform, architecture, author, description, misc, vcs_identifier, "
              "fwup_version, creation_date, size, sha256, partial_sha256, storage_key, "
              "ttl_seconds, ttl_until) VALUES ($1, $2, $3, $4::bigint, $5, $6, $7, $8, $9, $10, "
              "$11, "
              "$12, $13, $14, $15, $16, $17::text[], $18, $19::bigint, "
              "now() + make_interval(secs => $19::bigint)) RETURNING id",
              f.org_id, f.product_id, f.org_key_id, f.uploaded_by ? uploaded_by.c_str() : nullptr,
              f.uuid, f.version, f.platform, f.architecture, f.author, f.description, f.misc,
              f.vcs_identifier, f.fwup_version, f.creation_date, f.size, f.sha256, partials,
              f.storage_key, f.ttl_seconds ? ttl.c_str() : nullptr)[0]
            .as<std::int64_t>();
    return *find_by_id(tx, id);
}

std::vector<FirmwareRow> list(Tx& tx, std::int64_t product_id) {
    std::vector<FirmwareRow> out;
    for (const auto& row :
         tx->exec_params(std::string("SELECT ") + kColumns + kFrom +
                             " WHERE f.product_id = $1 ORDER BY f.inserted_at, f.id",
                         product_id)) {
        out.push_back(from(row));
    }
    return out;
}

std::optional<FirmwareRow> find(Tx& tx, std::int64_t product_id, const std::string& uuid) {
    return first(tx->exec_params(
        std::string("SELECT ") + kColumns + kFrom + " WHERE f.product_id = $1 AND f.uuid = $2",
        product_id, uuid));
}

std::optional<FirmwareRow> find_in_org(Tx& tx, std::int64_t org_id, const std::string& uuid) {
    return first(tx->exec_params(
        std::string("SELECT ") + kColumns + kFrom + " WHERE f.org_id = $1 AND f.uuid = $2", org_id,
        uuid));
}

std::optional<FirmwareRow> find_by_id(Tx& tx, std::int64_t id) {
    return first(
        tx->exec_params(std::string("SELECT ") + kColumns + kFrom + " WHERE f.id = $1", id));
}

void remove(Tx& tx, std::int64_t id) {
    tx->exec_params0("DELETE FROM firmwares WHERE id = $1", id);
}

void referenced(Tx& tx, std::int64_t id) {
    tx->exec_params0(
        "UPDATE firmwares SET ttl_until = NULL, updated_at = now() "
        "WHERE id = $1 AND ttl_until IS NOT NULL",
        id);
}

void unreferenced(Tx& tx, std::int64_t id,
                  std::optional<std::chrono::system_clock::time_point> now) {
    if (now) {
        tx->exec_params0(
            "UPDATE firmwares SET ttl_until = to_timestamp($2::bigint / 1000000.0) + "
            "make_interval(secs => "
            "ttl_seconds), updated_at = now() WHERE id = $1 AND ttl_seconds IS NOT NULL",
            id, epoch_micros(*now));
    } else {
        tx->exec_params0(
            "UPDATE firmwares SET ttl_until = now() + make_interval(secs => ttl_seconds), "
            "updated_at = now() WHERE id = $1 AND ttl_seconds IS NOT NULL",
            id);
    }
}

std::vector<ExpiredFirmware> delete_expired(Tx& tx, std::chrono::system_clock::time_point now,
                                            int limit) {
    auto candidates = tx->exec_params(
        "SELECT id, org_id, uuid, storage_key FROM firmwares "
        "WHERE ttl_until IS NOT NULL AND ttl_until < to_timestamp($1::bigint / 1000000.0) "
        "ORDER BY ttl_until LIMIT $2 FOR UPDATE SKIP LOCKED",
        epoch_micros(now), limit);
    std::vector<ExpiredFirmware> deleted;
    for (const auto& row : candidates) {
        ExpiredFirmware f{row[0].as<std::int64_t>(), row[1].as<std::int64_t>(),
                          row[2].as<std::string>(), row[3].as<std::string>()};
        bool still_referenced = false;
        // A savepoint per row, so one row still referenced does not abort the whole pass.
        tx->exec0("SAVEPOINT firmware_gc");
        try {
            tx->exec_params0("DELETE FROM firmwares WHERE id = $1", f.id);
            tx->exec0("RELEASE SAVEPOINT firmware_gc");
        } catch (const pqxx::foreign_key_violation&) {
            tx->exec0("ROLLBACK TO SAVEPOINT firmware_gc");
            still_referenced = true;
        }
        if (still_referenced) {
            referenced(tx, f.id);
        } else {
            deleted.push_back(std::move(f));
        }
    }
    return deleted;
}

}  // namespace otahub::db::firmwares
