#pragma once

#include <string>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {

/// One forward-only schema change, named after its file (`0001_init`).
struct Migration {
    std::string name;
    std::string sql;
};

/// The migrations compiled into this binary, in order.
const std::vector<Migration>& embedded_migrations();

/// Applies pending migrations, each in its own transaction, recorded in `schema_migrations`.
/// Safe to run from several processes at once (serialised by an advisory lock).
class Migrator {
public:
    explicit Migrator(Database& db, std::vector<Migration> migrations = embedded_migrations());

    /// Applies what is pending; returns the names applied (empty when up to date).
    std::vector<std::string> migrate();
    /// Names of migrations not yet applied.
    std::vector<std::string> pending();

private:
    Database& db_;
    std::vector<Migration> migrations_;
};

}  // namespace otahub::db
