// Statements run through `tx->exec_params*` are prepared once per pooled connection and run by
// name afterwards; with preparation off, or past the per-connection cap, they run unprepared.
// Results, NULL parameters, errors and the connection's health are the same either way.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>

#include "db/database.hpp"
#include "db/tx.hpp"
#include "tests/db/test_database.hpp"

namespace otahub::db {
namespace {

using namespace std::chrono_literals;

constexpr const char* kLookup = "SELECT $1::int + 1, $2::text IS NULL";

/// Statements prepared on the connection the transaction runs on, by their SQL text.
std::int64_t prepared_count(Tx& tx, const std::string& sql) {
    return tx
        ->exec1("SELECT count(*) FROM pg_prepared_statements WHERE statement = " +
                (*tx).quote(sql))[0]
        .as<std::int64_t>();
}

TEST(DbPreparedStatements, ARepeatedStatementIsPreparedOnceAndGivesTheSameResults) {
    testing::TestDatabase database;
    Database db{database.url(), 1, Timeouts{5s, 10000ms}};  // one connection: same session
    for (int i = 0; i < 3; ++i) {
        db.run([&](Tx& tx) {
            const auto row = tx->exec_params1(kLookup, i, nullptr);
            EXPECT_EQ(row[0].as<int>(), i + 1);
            EXPECT_TRUE(row[1].as<bool>());
            const auto other = tx->exec_params1(kLookup, 10, std::string("x"));
            EXPECT_EQ(other[0].as<int>(), 11);
            EXPECT_FALSE(other[1].as<bool>());
            EXPECT_EQ(prepared_count(tx, kLookup), 1);
        });
    }
    // The autocommit path shares the connection's statements.
    db.autocommit([&](Tx& tx) {
        EXPECT_EQ(tx->exec_params(kLookup, 1, nullptr).size(), 1U);
        EXPECT_EQ(prepared_count(tx, kLookup), 1);
    });
}

TEST(DbPreparedStatements, OffRunsEveryStatementUnprepared) {
    testing::TestDatabase database;
    Database db{database.url(), 1, Timeouts{5s, 10000ms}, false};
    for (int i = 0; i < 2; ++i) {
        db.run([&](Tx& tx) {
            EXPECT_EQ(tx->exec_params1(kLookup, i, nullptr)[0].as<int>(), i + 1);
            EXPECT_EQ(tx->exec1("SELECT count(*) FROM pg_prepared_statements")[0].as<int>(), 0);
        });
    }
}

TEST(DbPreparedStatements, AFailedStatementLeavesTheConnectionAndTheStatementUsable) {
    testing::TestDatabase database;
    Database db{database.url(), 1, Timeouts{5s, 10000ms}};
    db.run([](Tx& tx) { tx->exec("CREATE TABLE t (id int PRIMARY KEY)"); });
    const std::string insert = "INSERT INTO t (id) VALUES ($1)";
    db.run([&](Tx& tx) { tx->exec_params0(insert, 1); });
    // The prepared insert fails on the duplicate: the transaction rolls back as a whole.
    EXPECT_THROW(db.run([&](Tx& tx) {
        tx->exec_params0(insert, 2);
        tx->exec_params0(insert, 1);
    }),
                 Conflict);
    // A statement first prepared inside a failing transaction stays usable too.
    const std::string bad_cast = "SELECT $1::int";
    EXPECT_THROW(db.run([&](Tx& tx) { tx->exec_params1(bad_cast, "not a number"); }), ApiError);
    db.run([&](Tx& tx) {
        EXPECT_EQ(tx->exec_params1(bad_cast, 5)[0].as<int>(), 5);
        tx->exec_params0(insert, 3);
        EXPECT_EQ(
            tx->exec1("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")[0].as<std::string>(),
            "1,3");
        EXPECT_EQ(prepared_count(tx, insert), 1);
    });
}

TEST(DbPreparedStatements, PastTheCapStatementsRunUnprepared) {
    testing::TestDatabase database;
    Database db{database.url(), 1, Timeouts{5s, 60000ms}};
    const auto distinct = [](std::size_t i) { return "SELECT $1::int + " + std::to_string(i); };
    db.run([&](Tx& tx) {
        for (std::size_t i = 0; i < PreparedStatements::kMax + 5; ++i) {
            EXPECT_EQ(tx->exec_params1(distinct(i), 1)[0].as<std::size_t>(), i + 1);
        }
        EXPECT_EQ(tx->exec1("SELECT count(*) FROM pg_prepared_statements")[0].as<std::size_t>(),
                  PreparedStatements::kMax);
        EXPECT_EQ(prepared_count(tx, distinct(PreparedStatements::kMax)), 0);
        EXPECT_EQ(prepared_count(tx, distinct(0)), 1);
    });
}

}  // namespace
}  // namespace otahub::db
