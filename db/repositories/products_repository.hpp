#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {

struct ProductRow {
    std::int64_t id = 0;
    std::int64_t org_id = 0;
    std::string name;
    std::string inserted_at;
    std::string updated_at;
};

/// Products of an org.
namespace products {

ProductRow create(Tx& tx, std::int64_t org_id, const std::string& name);
std::vector<ProductRow> list(Tx& tx, std::int64_t org_id);
std::optional<ProductRow> find(Tx& tx, std::int64_t org_id, const std::string& name);
std::optional<ProductRow> find_by_id(Tx& tx, std::int64_t id);
ProductRow rename(Tx& tx, std::int64_t id, const std::string& name);
void remove(Tx& tx, std::int64_t id);

}  // namespace products
}  // namespace otahub::db
