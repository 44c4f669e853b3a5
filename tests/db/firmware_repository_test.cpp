#include <gtest/gtest.h>

#include <chrono>
#include <pqxx/pqxx>

#include "db/migrator.hpp"
#include "db/repositories/accounts_repository.hpp"
#include "db/repositories/firmwares_repository.hpp"
#include "db/repositories/keys_repository.hpp"
#include "db/repositories/products_repository.hpp"
#include "db/tx.hpp"
#include "tests/db/test_database.hpp"

namespace otahub::db {
namespace {

using std::chrono::seconds;
using Clock = std::chrono::system_clock;

class FirmwareRepository : public ::testing::Test {
  protected:
    void SetUp() override {
        Migrator{db_}.migrate();
        db_.run([&](Tx& tx) {
            org_ = accounts::create_org(tx, "acme").id;
            product_ = products::create(tx, org_, "demo").id;
            key_ = keys::create(tx, org_, "prod", "KEYKEYKEY=").id;
        });
    }

    NewFirmware firmware(const std::string& uuid, std::optional<std::int64_t> ttl) const {
        NewFirmware f;
        f.org_id = org_;
        f.product_id = product_;
        f.org_key_id = key_;
        f.uuid = uuid;
        f.version = "1.0.0";
        f.platform = "rpi4";
        f.architecture = "aarch64";
        f.size = 10;
        f.sha256 = "AB";
        f.partial_sha256 = {"AB", "CD"};
        f.storage_key = std::to_string(org_) + "/" + uuid + ".fw";
        f.ttl_seconds = ttl;
        return f;
    }

    FirmwareRow create(const std::string& uuid, std::optional<std::int64_t> ttl) {
        return db_.transact([&](Tx& tx) { return firmwares::create(tx, firmware(uuid, ttl)); });
    }

    std::vector<ExpiredFirmware> expire(Clock::time_point now) {
        return db_.transact([&](Tx& tx) { return firmwares::delete_expired(tx, now); });
    }

    std::optional<FirmwareRow> find(std::int64_t id) {
        return db_.transact([&](Tx& tx) { return firmwares::find_by_id(tx, id); });
    }

    void database_exec(const std::string& sql) {
        pqxx::connection conn{database_.url()};
        pqxx::nontransaction tx{conn};
        tx.exec0(sql);
    }

    /// The database's idea of now (timestamps are set by now() in SQL).
    Clock::time_point db_now() {
        return db_.transact([](Tx& tx) {
            auto micros = tx->exec1("SELECT (extract(epoch FROM now()) * 1000000)::bigint")[0]
                              .as<std::int64_t>();
            return Clock::time_point{std::chrono::microseconds(micros)};
        });
    }

    testing::TestDatabase database_;
    Database db_{database_.url(), 2};
    std::int64_t org_ = 0;
    std::int64_t product_ = 0;
    std::int64_t key_ = 0;
};

constexpr const char* kUuidA = "00000000-0000-5000-8000-00000000000a";
constexpr const char* kUuidB = "00000000-0000-5000-8000-00000000000b";
constexpr const char* kUuidC = "00000000-0000-5000-8000-00000000000c";

TEST_F(FirmwareRepository, StoresEveryFieldAndJoinsNames) {
    auto f = create(kUuidA, std::nullopt);
    EXPECT_EQ(f.product, "demo");
    EXPECT_EQ(f.key_name, "prod");
    EXPECT_EQ(f.partial_sha256, (std::vector<std::string>{"AB", "CD"}));
    EXPECT_EQ(f.tool, "fwup");
    EXPECT_FALSE(f.ttl_seconds);
    EXPECT_FALSE(f.ttl_until);
    EXPECT_EQ(db_.transact([&](Tx& tx) { return firmwares::list(tx, product_).size(); }), 1U);
    EXPECT_TRUE(db_.transact([&](Tx& tx) { return firmwares::find_in_org(tx, org_, kUuidA); }));
    EXPECT_FALSE(
        db_.transact([&](Tx& tx) { return firmwares::find_in_org(tx, org_ + 1, kUuidA); }));
}

TEST_F(FirmwareRepository, UuidIsUniquePerOrg) {
    create(kUuidA, std::nullopt);
    EXPECT_THROW(create(kUuidA, 60), Conflict);
    auto other_org = db_.transact([](Tx& tx) { return accounts::create_org(tx, "other").id; });
    db_.run([&](Tx& tx) {
        auto product = products::create(tx, other_org, "demo").id;
        auto key = keys::create(tx, other_org, "k", "KEYKEYKEY=").id;
        auto f = firmware(kUuidA, std::nullopt);
        f.org_id = other_org;
        f.product_id = product;
        f.org_key_id = key;
        firmwares::create(tx, f);
    });
}

TEST_F(FirmwareRepository, ExpiresOnlyAfterTheTtl) {
    auto before = db_now();
    auto f = create(kUuidA, 3600);
    auto forever = create(kUuidB, std::nullopt);
    ASSERT_TRUE(f.ttl_until);
    EXPECT_EQ(f.ttl_seconds, 3600);
    EXPECT_TRUE(expire(before + seconds(3599)).empty());
    auto deleted = expire(before + seconds(3600 + 60));
    ASSERT_EQ(deleted.size(), 1U);
    EXPECT_EQ(deleted[0].uuid, kUuidA);
    EXPECT_EQ(deleted[0].storage_key, f.storage_key);
    EXPECT_FALSE(find(f.id));
    EXPECT_TRUE(find(forever.id));
    EXPECT_TRUE(expire(before + seconds(100 * 365 * 86400L)).empty());
}

TEST_F(FirmwareRepository, AReferenceStopsTheClockAndReleasingRestartsIt) {
    auto f = create(kUuidA, 600);
    db_.run([&](Tx& tx) { firmwares::referenced(tx, f.id); });
    EXPECT_FALSE(find(f.id)->ttl_until);
    auto t = db_now() + seconds(86400);
    EXPECT_TRUE(expire(t).empty());
    // Released a day later: it lives 600 s from then.
    db_.run([&](Tx& tx) { firmwares::unreferenced(tx, f.id, t); });
    EXPECT_TRUE(find(f.id)->ttl_until);
    EXPECT_TRUE(expire(t + seconds(599)).empty());
    EXPECT_EQ(expire(t + seconds(601)).size(), 1U);

    // Without a TTL, releasing changes nothing.
    auto g = create(kUuidB, std::nullopt);
    db_.run([&](Tx& tx) { firmwares::unreferenced(tx, g.id); });
    EXPECT_FALSE(find(g.id)->ttl_until);
}

TEST_F(FirmwareRepository, AReferencingRowKeepsFirmwareAndStopsItsClock) {
    // What the deployments table will do: a RESTRICT foreign key.
    database_exec(
        "CREATE TABLE fake_deployments (firmware_id BIGINT NOT NULL "
        "REFERENCES firmwares (id) ON DELETE RESTRICT)");
    auto used = create(kUuidA, 60);
    auto unused = create(kUuidB, 60);
    database_exec("INSERT INTO fake_deployments VALUES (" + std::to_string(used.id) + ")");
    auto deleted = expire(db_now() + seconds(3600));
    ASSERT_EQ(deleted.size(), 1U);
    EXPECT_EQ(deleted[0].uuid, kUuidB);
    EXPECT_TRUE(find(used.id));
    EXPECT_FALSE(find(used.id)->ttl_until);
    EXPECT_FALSE(find(unused.id));
    try {
        db_.run([&](Tx& tx) { firmwares::remove(tx, used.id); });
        ADD_FAILURE() << "deleting referenced firmware succeeded";
    } catch (const ApiError& e) {
        EXPECT_EQ(e.code(), ErrorCode::kConflict);
    }
}

TEST_F(FirmwareRepository, ConcurrentCollectorsSkipEachOthersRows) {
    create(kUuidA, 1);
    create(kUuidB, 1);
    create(kUuidC, 1);
    auto later = db_now() + seconds(60);
    pqxx::connection first_conn{database_.url()};
    pqxx::connection second_conn{database_.url()};
    pqxx::work first_work{first_conn};
    Tx first{first_work};
    auto claimed = firmwares::delete_expired(first, later, 2);
    EXPECT_EQ(claimed.size(), 2U);
    {
        // While the first pass is uncommitted, a second one neither waits nor double-deletes.
        pqxx::work second_work{second_conn};
        Tx second{second_work};
        auto rest = firmwares::delete_expired(second, later, 100);
        ASSERT_EQ(rest.size(), 1U);
        for (const auto& c : claimed) EXPECT_NE(c.uuid, rest[0].uuid);
        second_work.commit();
    }
    first_work.commit();
    EXPECT_TRUE(expire(later).empty());
}

TEST_F(FirmwareRepository, KeysInUseCannotBeDeleted) {
    auto f = create(kUuidA, std::nullopt);
    EXPECT_EQ(db_.transact([&](Tx& tx) { return keys::firmware_count(tx, key_); }), 1);
    try {
        db_.run([&](Tx& tx) { keys::remove(tx, key_); });
        ADD_FAILURE() << "deleting a key in use succeeded";
    } catch (const ApiError& e) {
        EXPECT_EQ(e.code(), ErrorCode::kConflict);
    }
    db_.run([&](Tx& tx) { firmwares::remove(tx, f.id); });
    db_.run([&](Tx& tx) { keys::remove(tx, key_); });
    EXPECT_FALSE(db_.transact([&](Tx& tx) { return keys::find(tx, org_, "prod"); }));
}

TEST_F(FirmwareRepository, KeyNamesAndValuesAreUniquePerOrg) {
    EXPECT_THROW(db_.run([&](Tx& tx) { keys::create(tx, org_, "prod", "OTHER="); }), Conflict);
    EXPECT_THROW(db_.run([&](Tx& tx) { keys::create(tx, org_, "second", "KEYKEYKEY="); }),
                 Conflict);
    db_.run([&](Tx& tx) { keys::create(tx, org_, "second", "OTHER="); });
    EXPECT_EQ(db_.transact([&](Tx& tx) { return keys::list(tx, org_).size(); }), 2U);
}

}  // namespace
}  // namespace otahub::db
