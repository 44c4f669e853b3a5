#include "db/repositories/keys_repository.hpp"

#include "db/tx.hpp"

namespace otahub::db::keys {
namespace {

constexpr const char* kColumns =
    "k.id, k.org_id, k.name, k.key, iso8601(k.inserted_at), iso8601(k.updated_at)";

KeyRow from(const pqxx::row& row) {
    return KeyRow{row[0].as<std::int64_t>(), row[1].as<std::int64_t>(), row[2].as<std::string>(),
                  row[3].as<std::string>(),  row[4].as<std::string>(),  row[5].as<std::string>()};
}

}  // namespace

KeyRow create(Tx& tx, std::int64_t org_id, const std::string& name, const std::string& key) {
    return from(tx->exec_params1(
        std::string("INSERT INTO org_keys AS k (org_id, name, key) VALUES ($1, $2, $3) "
                    "RETURNING ") +
            kColumns,
        org_id, name, key));
}

std::vector<KeyRow> list(Tx& tx, std::int64_t org_id) {
    std::vector<KeyRow> out;
    for (const auto& row :
         tx->exec_params(std::string("SELECT ") + kColumns +
                             " FROM org_keys k WHERE k.org_id = $1 ORDER BY k.name",
                         org_id)) {
        out.push_back(from(row));
    }
    return out;
}

std::optional<KeyRow> find(Tx& tx, std::int64_t org_id, const std::string& name) {
    auto r = tx->exec_params(
        std::string("SELECT ") + kColumns + " FROM org_keys k WHERE k.org_id = $1 AND k.name = $2",
        org_id, name);
    if (r.empty()) return std::nullopt;
    return from(r[0]);
}

std::optional<KeyRow> find_by_id(Tx& tx, std::int64_t id) {
    auto r =
        tx->exec_params(std::string("SELECT ") + kColumns + " FROM org_keys k WHERE k.id = $1", id);
    if (r.empty()) return std::nullopt;
    return from(r[0]);
}

std::int64_t firmware_count(Tx& tx, std::int64_t key_id) {
    return tx->exec_params1("SELECT count(*) FROM firmwares WHERE org_key_id = $1", key_id)[0]
        .as<std::int64_t>();
}

void remove(Tx& tx, std::int64_t id) { tx->exec_params0("DELETE FROM org_keys WHERE id = $1", id); }

}  // namespace otahub::db::keys
