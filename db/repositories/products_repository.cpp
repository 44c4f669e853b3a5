#include "db/repositories/products_repository.hpp"

#include "db/tx.hpp"

namespace otahub::db::products {
namespace {

constexpr const char* kColumns =
    "p.id, p.org_id, p.name, iso8601(p.inserted_at), iso8601(p.updated_at)";

ProductRow from(const pqxx::row& row) {
    return ProductRow{row[0].as<std::int64_t>(), row[1].as<std::int64_t>(),
                      row[2].as<std::string>(), row[3].as<std::string>(),
                      row[4].as<std::string>()};
}

}  // namespace

ProductRow create(Tx& tx, std::int64_t org_id, const std::string& name) {
    return from(tx->exec_params1(
        std::string("INSERT INTO products AS p (org_id, name) VALUES ($1, $2) RETURNING ") +
            kColumns,
        org_id, name));
}

std::vector<ProductRow> list(Tx& tx, std::int64_t org_id) {
    std::vector<ProductRow> out;
    for (const auto& row :
         tx->exec_params(std::string("SELECT ") + kColumns +
                             " FROM products p WHERE p.org_id = $1 ORDER BY p.name",
                         org_id)) {
        out.push_back(from(row));
    }
    return out;
}

std::optional<ProductRow> find(Tx& tx, std::int64_t org_id, const std::string& name) {
    auto r = tx->exec_params(std::string("SELECT ") + kColumns +
                                 " FROM products p WHERE p.org_id = $1 AND p.name = $2",
                             org_id, name);
    if (r.empty()) return std::nullopt;
    return from(r[0]);
}

std::optional<ProductRow> find_by_id(Tx& tx, std::int64_t id) {
    auto r = tx->exec_params(std::string("SELECT ") + kColumns + " FROM products p WHERE p.id = $1",
                             id);
    if (r.empty()) return std::nullopt;
    return from(r[0]);
}

ProductRow rename(Tx& tx, std::int64_t id, const std::string& name) {
    return from(tx->exec_params1(
        std::string("UPDATE products AS p SET name = $2, updated_at = now() WHERE p.id = $1 "
                    "RETURNING ") +
            kColumns,
        id, name));
}

void remove(Tx& tx, std::int64_t id) { tx->exec_params0("DELETE FROM products WHERE id = $1", id); }

}  // namespace otahub::db::products
