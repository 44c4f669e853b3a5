// rollouts::candidates (which of the devices a join or a deployment change names may be sent an
// update) and rollouts::finish (the update that ends, re-read with its device and deployment),
// against a real PostgreSQL, including with the generic plan a pooled connection keeps.

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "db/migrator.hpp"
#include "db/repositories/accounts_repository.hpp"
#include "db/repositories/devices_repository.hpp"
#include "db/repositories/products_repository.hpp"
#include "db/repositories/rollouts_repository.hpp"
#include "db/tx.hpp"
#include "tests/db/test_database.hpp"

namespace otahub::db {
namespace {

class RolloutCandidates : public ::testing::Test {
  protected:
    void SetUp() override {
        Migrator{db_}.migrate();
        db_.run([&](Tx& tx) {
            org_ = accounts::create_org(tx, "acme").id;
            product_ = products::create(tx, org_, "demo").id;
            other_product_ = products::create(tx, org_, "other").id;
        });
    }

    /// A device of `product` running firmware 1.0.0 (tags `beta`), connected `minutes_ago`.
    std::int64_t device(const std::string& name, int minutes_ago, std::int64_t product = 0) {
        std::int64_t id = 0;
        db_.run([&](Tx& tx) {
            id = devices::create_if_missing(tx, org_, product == 0 ? product_ : product, name, "",
                                            {"beta"})
                     .id;
            tx->exec_params0(
                "UPDATE devices SET firmware_uuid = 'uuid-1', version = '1.0.0', "
                "platform = 'rpi4', architecture = 'arm', "
                "connected_at = now() - make_interval(mins => $2) WHERE id = $1",
                id, minutes_ago);
        });
        return id;
    }

    void sql(const std::string& statement, std::int64_t id) {
        db_.run([&](Tx& tx) { tx->exec_params0(statement, id); });
    }

    /// A manual update of the device in flight.
    void in_flight(Tx& tx, std::int64_t id) const {
        tx->exec_params0(
            "INSERT INTO device_updates (org_id, device_id, firmware_uuid, firmware_version, "
            "source, expires_at) "
            "VALUES ($1, $2, 'uuid-2', '2.0.0', 'manual', now() + interval '1 hour')",
            org_, id);
    }

    /// `n` more devices of the product, as device() makes them, in `tx`.
    std::vector<std::int64_t> grow_fleet(Tx& tx, int n) const {
        std::vector<std::int64_t> ids;
        for (const auto& row : tx->exec_params(
                 "INSERT INTO devices (org_id, product_id, identifier, tags, firmware_uuid, "
                 "version, platform, architecture, connected_at) "
                 "SELECT $1, $2, 'fleet-' || g, '{beta}', 'uuid-1', '1.0.0', 'rpi4', 'arm', "
                 "now() - make_interval(mins => g) FROM generate_series(1, $3) g RETURNING id",
                 org_, product_, n)) {
            ids.push_back(row[0].as<std::int64_t>());
        }
        return ids;
    }

    /// Rows of devices and device_updates read so far by this transaction: by sequential and
    /// bitmap scans (counted on the table) and through any of their indexes (counted on the
    /// index).
    static std::int64_t rows_read(Tx& tx) {
        return tx
            ->exec1(
                "SELECT sum(CASE WHEN c.relkind = 'i' THEN 0 "
                "ELSE pg_stat_get_xact_tuples_returned(c.oid) END + "
                "pg_stat_get_xact_tuples_fetched(c.oid))::bigint FROM pg_class c "
                "WHERE c.oid IN ('devices'::regclass, 'device_updates'::regclass) "
                "OR c.oid IN (SELECT indexrelid FROM pg_index "
                "WHERE indrelid IN ('devices'::regclass, 'device_updates'::regclass))")[0]
            .as<std::int64_t>();
    }

    void in_flight(std::int64_t id) {
        db_.run([&](Tx& tx) { in_flight(tx, id); });
    }

    testing::TestDatabase test_db_;
    Database db_{test_db_.url(), 2};
    std::int64_t org_ = 0;
    std::int64_t product_ = 0;
    std::int64_t other_product_ = 0;
};

TEST_F(RolloutCandidates, OnlyTheNamedDevicesThatMayBeSentAnUpdateInConnectionOrder) {
    const auto late = device("late", 1);
    const auto early = device("early", 30);
    const auto penalty_over = device("penalty-over", 10);
    const auto disabled = device("disabled", 5);
    const auto updates_off = device("updates-off", 5);
    const auto busy = device("busy", 5);
    const auto penalised = device("penalised", 5);
    const auto elsewhere = device("elsewhere", 5, other_product_);
    const auto unreported = device("unreported", 5);
    const auto deleted = device("deleted", 5);
    const auto not_named = device("not-named", 20);
    sql("UPDATE devices SET updates_blocked_until = now() - interval '1 minute' WHERE id = $1",
        penalty_over);
    sql("UPDATE devices SET disabled = true WHERE id = $1", disabled);
    sql("UPDATE devices SET updates_enabled = false WHERE id = $1", updates_off);
    in_flight(busy);
    sql("UPDATE devices SET updates_blocked_until = now() + interval '1 hour' WHERE id = $1",
        penalised);
    sql("UPDATE devices SET firmware_uuid = NULL WHERE id = $1", unreported);
    sql("UPDATE devices SET deleted_at = now() WHERE id = $1", deleted);
    ASSERT_NE(not_named, 0);

    std::vector<RolloutCandidate> got;
    db_.autocommit([&](Tx& tx) {
        got = rollouts::candidates(tx, product_,
                                   {late, early, penalty_over, disabled, updates_off, busy,
                                    penalised, elsewhere, unreported, deleted, deleted + 1000});
    });
    ASSERT_EQ(got.size(), 3u);
    EXPECT_EQ(got[0].id, early) << "the longest connected first";
    EXPECT_EQ(got[1].id, penalty_over);
    EXPECT_EQ(got[2].id, late);
    EXPECT_EQ(got[0].identifier, "early");
    EXPECT_EQ(got[0].org_id, org_);
    EXPECT_EQ(got[0].version, "1.0.0");
    EXPECT_EQ(got[0].firmware_uuid, "uuid-1");
    EXPECT_EQ(got[0].platform, "rpi4");
    EXPECT_EQ(got[0].architecture, "arm");
    EXPECT_EQ(got[0].tags, std::vector<std::string>{"beta"});

    db_.autocommit([&](Tx& tx) { got = rollouts::candidates(tx, product_, {}); });
    EXPECT_TRUE(got.empty());
}

TEST_F(RolloutCandidates, ReadOnlyTheNamedRowsWhateverThePlan) {
    // Every join asks for its device. A pooled connection keeps the generic plan PostgreSQL made
    // at the statement's sixth execution; made while the product had one device, it must still
    // look the named devices up after the fleet has grown, not read every device of the product
    // (or every update in flight) for each join.
    const auto seed = device("seed", 1);
    db_.run([&](Tx& tx) {
        tx->exec0("SET LOCAL plan_cache_mode = force_generic_plan");
        ASSERT_EQ(rollouts::candidates(tx, product_, {seed}).size(), 1u) << "plan made";
        // The devices that join are the newest: a plan that walks the product's devices until
        // it meets each one reads nearly all of them.
        const auto ids = grow_fleet(tx, 40);
        for (std::size_t i = 0; i < 10; ++i) in_flight(tx, ids[i]);
        in_flight(tx, ids[39]);
        const auto before = rows_read(tx);
        const auto got = rollouts::candidates(tx, product_, {ids[39], ids[38]});
        EXPECT_LE(rows_read(tx) - before, 4) << "rows read";
        ASSERT_EQ(got.size(), 1u) << "ids[39] has an update in flight";
        EXPECT_EQ(got[0].id, ids[38]);
    });
}

TEST_F(RolloutCandidates, AnEndingUpdateReadsOnlyItsOwnRowsWhateverThePlan) {
    // finish() re-reads the update it ended with its device and deployment. With the generic
    // plan made while the tables were nearly empty, that must not read every device (or every
    // update ever sent, which device_updates keeps) for each update that ends.
    const auto seed = device("seed", 1);
    db_.run([&](Tx& tx) {
        tx->exec0("SET LOCAL plan_cache_mode = force_generic_plan");
        in_flight(tx, seed);
        ASSERT_TRUE(rollouts::finish(tx, seed, "succeeded", std::nullopt).has_value())
            << "plan made";
        const auto ids = grow_fleet(tx, 40);
        for (auto id : ids) in_flight(tx, id);
        tx->exec_params0(
            "UPDATE device_updates SET status = 'succeeded', finished_at = now() "
            "WHERE device_id <> $1",
            ids[37]);
        for (std::size_t i = 0; i < 10; ++i) in_flight(tx, ids[i]);
        const auto before = rows_read(tx);
        const auto ended = rollouts::finish(tx, ids[37], "failed", std::string("broken"));
        EXPECT_LE(rows_read(tx) - before, 6) << "rows read";
        ASSERT_TRUE(ended.has_value());
        EXPECT_EQ(ended->device_id, ids[37]);
        EXPECT_EQ(ended->product_id, product_);
        EXPECT_EQ(ended->status, "failed");
        EXPECT_EQ(ended->reason, std::optional<std::string>("broken"));
        EXPECT_FALSE(ended->deployment_id.has_value());
    });
}

}  // namespace
}  // namespace otahub::db
