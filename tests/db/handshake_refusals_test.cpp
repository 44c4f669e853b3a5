// Refused-handshake counts are kept per hour; hours past the retention are deleted (prune).
#include "db/repositories/handshake_refusals_repository.hpp"

#include <gtest/gtest.h>

#include <chrono>

#include "db/migrator.hpp"
#include "db/tx.hpp"
#include "tests/db/test_database.hpp"

namespace otahub::db {
namespace {

std::int64_t hours_ago(std::int64_t hours) {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    return (now / 3600 - hours) * 3600;
}

RefusalCount refusal(std::int64_t hour_epoch, const char* reason) {
    RefusalCount c;
    c.hour_epoch = hour_epoch;
    c.reason = reason;
    c.stage = "tls";
    c.count = 3;
    c.common_names = {"dev-1"};
    c.serials = {"01"};
    c.first_epoch = hour_epoch;
    c.last_epoch = hour_epoch + 60;
    return c;
}

TEST(DbHandshakeRefusals, PruneDeletesOnlyHoursPastTheRetention) {
    testing::TestDatabase database;
    Database db{database.url(), 1};
    Migrator{db}.migrate();
    const auto rows = [&] {
        return db.transact([](Tx& tx) {
            return tx->exec1("SELECT count(*) FROM handshake_refusals")[0].as<int>();
        });
    };
    db.run([](Tx& tx) {
        handshake_refusals::upsert(
            tx, {refusal(hours_ago(100 * 24), "expired"), refusal(hours_ago(10 * 24), "unknown_ca"),
                 refusal(hours_ago(0), "revoked")});
    });
    ASSERT_EQ(rows(), 3);
    db.run([](Tx& tx) { EXPECT_EQ(handshake_refusals::prune(tx, 90), 1); });
    EXPECT_EQ(rows(), 2);
    db.run([](Tx& tx) { EXPECT_EQ(handshake_refusals::prune(tx, 90), 0); });
    db.run([](Tx& tx) { EXPECT_EQ(handshake_refusals::prune(tx, 5), 1); });
    EXPECT_EQ(db.transact([](Tx& tx) {
        return tx->exec1("SELECT reason FROM handshake_refusals")[0].as<std::string>();
    }),
              "revoked");
}

}  // namespace
}  // namespace otahub::db
