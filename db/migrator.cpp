#include "db/migrator.hpp"

#include <spdlog/spdlog.h>

#include <pqxx/pqxx>
#include <set>

namespace otahub::db {
namespace {

constexpr const char* kCreateTable =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())";
// Any constant works as long as every otahubd uses the same one.
constexpr long long kMigrationLockKey = 0x6f7461687562LL;

std::set<std::string> applied_names(pqxx::connection& conn) {
    pqxx::nontransaction tx{conn};
    tx.exec0(kCreateTable);
    std::set<std::string> names;
    for (const auto& row : tx.exec("SELECT name FROM schema_migrations")) {
        names.insert(row[0].as<std::string>());
    }
    return names;
}

}  // namespace

Migrator::Migrator(Database& db, std::vector<Migration> migrations)
    : db_(db), migrations_(std::move(migrations)) {}

std::vector<std::string> Migrator::pending() {
    std::vector<std::string> result;
    try {
        pqxx::connection conn{db_.url()};
        auto applied = applied_names(conn);
        for (const auto& migration : migrations_) {
            if (!applied.contains(migration.name)) result.push_back(migration.name);
        }
    } catch (const pqxx::broken_connection& e) {
        throw Unavailable(std::string("database unavailable: ") + e.what());
    }
    return result;
}

std::vector<std::string> Migrator::migrate() {
    std::vector<std::string> done;
    std::unique_ptr<pqxx::connection> owned;
    try {
        owned = std::make_unique<pqxx::connection>(db_.url());
    } catch (const pqxx::broken_connection& e) {
        throw Unavailable(std::string("database unavailable: ") + e.what());
    }
    pqxx::connection& conn = *owned;
    {
        {
            pqxx::nontransaction lock{conn};
            lock.exec_params("SELECT pg_advisory_lock($1)", kMigrationLockKey);
        }
        try {
            auto applied = applied_names(conn);
            for (const auto& migration : migrations_) {
                if (applied.contains(migration.name)) continue;
                pqxx::work tx{conn};
                tx.exec(migration.sql);
                tx.exec_params("INSERT INTO schema_migrations (name) VALUES ($1)", migration.name);
                tx.commit();
                spdlog::info("applied migration {}", migration.name);
                done.push_back(migration.name);
            }
        } catch (...) {
            pqxx::nontransaction unlock{conn};
            unlock.exec_params("SELECT pg_advisory_unlock($1)", kMigrationLockKey);
            throw;
        }
        pqxx::nontransaction unlock{conn};
        unlock.exec_params("SELECT pg_advisory_unlock($1)", kMigrationLockKey);
    }
    return done;
}

}  // namespace otahub::db
