#include "db/migrator.hpp"

#include <gtest/gtest.h>

#include <future>
#include <pqxx/pqxx>

#include "db/repositories/accounts_repository.hpp"
#include "db/repositories/products_repository.hpp"
#include "db/tx.hpp"
#include "tests/db/test_database.hpp"

namespace otahub::db {
namespace {

std::int64_t count(const std::string& url, const std::string& sql) {
    pqxx::connection conn{url};
    pqxx::nontransaction tx{conn};
    return tx.exec1(sql)[0].as<std::int64_t>();
}

TEST(DbMigrator, AppliesEverythingOnceAndIsIdempotent) {
    testing::TestDatabase database;
    Database db{database.url(), 2};
    Migrator migrator{db};
    EXPECT_EQ(migrator.pending().size(), embedded_migrations().size());

    auto first = migrator.migrate();
    ASSERT_EQ(first.size(), embedded_migrations().size());
    EXPECT_EQ(first.front(), "0001_init");
    EXPECT_TRUE(migrator.pending().empty());

    auto second = migrator.migrate();
    EXPECT_TRUE(second.empty());
    EXPECT_EQ(count(database.url(), "SELECT count(*) FROM schema_migrations"),
              static_cast<std::int64_t>(embedded_migrations().size()));
}

// iso8601() is in the output of most queries: declared STABLE, the planner inlines it as the
// to_char expression (declared IMMUTABLE over to_char it ran as a separate function call, planned
// again in every query). Its text is unchanged: UTC, second precision.
TEST(DbMigrator, Iso8601IsInlinedAndFormatsUtc) {
    testing::TestDatabase database;
    Database db{database.url(), 1};
    Migrator{db}.migrate();
    pqxx::connection conn{database.url()};
    pqxx::nontransaction tx{conn};
    std::string plan;
    for (const auto& row : tx.exec("EXPLAIN VERBOSE SELECT iso8601(now())")) {
        plan += row[0].as<std::string>() + "\n";
    }
    EXPECT_NE(plan.find("to_char"), std::string::npos) << plan;
    EXPECT_EQ(plan.find("iso8601"), std::string::npos) << plan;
    EXPECT_EQ(tx.exec1("SELECT iso8601('2026-01-02 03:04:05.678+02')")[0].as<std::string>(),
              "2026-01-02T01:04:05Z");
    EXPECT_TRUE(tx.exec1("SELECT iso8601(NULL) IS NULL")[0].as<bool>());
}

TEST(DbMigrator, ConcurrentMigratorsApplyEachMigrationOnce) {
    testing::TestDatabase database;
    Database db_a{database.url(), 1};
    Database db_b{database.url(), 1};
    auto a = std::async(std::launch::async, [&] { return Migrator{db_a}.migrate(); });
    auto b = std::async(std::launch::async, [&] { return Migrator{db_b}.migrate(); });
    auto applied_a = a.get();
    auto applied_b = b.get();
    EXPECT_EQ(applied_a.size() + applied_b.size(), embedded_migrations().size());
    EXPECT_EQ(count(database.url(), "SELECT count(*) FROM schema_migrations"),
              static_cast<std::int64_t>(embedded_migrations().size()));
}

TEST(DbMigrator, FailingMigrationRollsBackAndIsNotRecorded) {
    testing::TestDatabase database;
    Database db{database.url(), 1};
    std::vector<Migration> migrations = {
        {"0001_ok", "CREATE TABLE t_ok (id int)"},
        {"0002_bad", "CREATE TABLE t_bad (id int); SELECT * FROM no_such_table"},
    };
    Migrator migrator{db, migrations};
    EXPECT_THROW(migrator.migrate(), std::exception);
    EXPECT_EQ(count(database.url(), "SELECT count(*) FROM schema_migrations"), 1);
    EXPECT_EQ(count(database.url(),
                    "SELECT count(*) FROM information_schema.tables WHERE table_name = 't_bad'"),
              0);
    EXPECT_EQ(migrator.pending(), std::vector<std::string>{"0002_bad"});
}

TEST(DbRepositories, UniqueNamesBecomeConflicts) {
    testing::TestDatabase database;
    Database db{database.url(), 2};
    Migrator{db}.migrate();
    auto org = db.transact([](Tx& tx) { return accounts::create_org(tx, "Acme"); });
    // Org names are unique regardless of case.
    EXPECT_THROW(db.run([](Tx& tx) { accounts::create_org(tx, "acme"); }), Conflict);
    db.run([&](Tx& tx) { products::create(tx, org.id, "demo"); });
    EXPECT_THROW(db.run([&](Tx& tx) { products::create(tx, org.id, "demo"); }), Conflict);
    // A failed transaction leaves nothing behind and the pool stays usable.
    EXPECT_EQ(db.transact([&](Tx& tx) { return products::list(tx, org.id).size(); }), 1U);
}

TEST(DbRepositories, TokensResolveToTheirUserOnly) {
    testing::TestDatabase database;
    Database db{database.url(), 1};
    Migrator{db}.migrate();
    auto user =
        db.transact([](Tx& tx) { return accounts::create_user(tx, "u@example.com", "U", "hash"); });
    db.run([&](Tx& tx) { accounts::create_token(tx, user.id, token_digest("nhu_abc"), "n"); });
    auto found =
        db.transact([](Tx& tx) { return accounts::user_for_token(tx, token_digest("nhu_abc")); });
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->email, "u@example.com");
    EXPECT_FALSE(
        db.transact([](Tx& tx) { return accounts::user_for_token(tx, token_digest("nhu_abd")); }));
}

TEST(DbDatabase, UnreachableServerIsUnavailable) {
    Database db{"postgresql://postgres@127.0.0.1:1/none?connect_timeout=2", 1};
    EXPECT_THROW(db.run([](Tx& tx) { tx->exec("SELECT 1"); }), Unavailable);
    EXPECT_FALSE(db.ping());
}

TEST(DbDatabase, RedactedUrlHidesPasswordsOnly) {
    // Constructing a Database does not connect: the URLs need not be reachable.
    EXPECT_EQ(Database("postgresql://app:s3cr:et@db.example:5432/hub", 1).redacted_url(),
              "postgresql://app:***@db.example:5432/hub");
    EXPECT_EQ(Database("postgresql://app:pa/ss#x@db:5432/hub", 1).redacted_url(),
              "postgresql://app:***@db:5432/hub");
    EXPECT_EQ(Database("postgresql://postgres@127.0.0.1:5432/hub", 1).redacted_url(),
              "postgresql://postgres@127.0.0.1:5432/hub");
    EXPECT_EQ(Database("postgresql://u@h/db?password=x&sslmode=require", 1).redacted_url(),
              "postgresql://u@h/db?password=***&sslmode=require");
    EXPECT_EQ(Database("host=h user=u password=hunter2 dbname=d", 1).redacted_url(),
              "host=h user=u password=*** dbname=d");
}

}  // namespace
}  // namespace otahub::db
