// devices::record_joins (the joins that arrive together stored by one statement, with the facts
// their observers start from) and db::JoinBatcher, against a real PostgreSQL.

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <vector>

#include "db/join_batcher.hpp"
#include "db/migrator.hpp"
#include "db/repositories/accounts_repository.hpp"
#include "db/repositories/ca_certificates_repository.hpp"
#include "db/repositories/devices_repository.hpp"
#include "db/repositories/managed_ca_repository.hpp"
#include "db/repositories/products_repository.hpp"
#include "db/tx.hpp"
#include "tests/db/batcher_support.hpp"
#include "tests/db/fleet_support.hpp"
#include "tests/db/test_database.hpp"

namespace otahub::db {
namespace {

using Clock = std::chrono::system_clock;

class JoinBatch : public ::testing::Test {
  protected:
    void SetUp() override {
        Migrator{db_}.migrate();
        db_.run([&](Tx& tx) {
            org_ = accounts::create_org(tx, "acme").id;
            product_ = products::create(tx, org_, "demo").id;
            ca_ = ca_certificates::create(tx, testing::fleet_ca(org_)).id;
            for (const auto* name : {"dev-a", "dev-b", "dev-c"}) {
                devices_.push_back(devices::create_if_missing(tx, org_, product_, name, "", {}).id);
            }
        });
    }

    std::int64_t insert_certificate(Tx& tx, std::int64_t device, const std::string& serial,
                                    const std::string& fingerprint) const {
        return devices::insert_certificate(
                   tx, testing::fleet_certificate(org_, device, serial, fingerprint))
            ->id;
    }

    devices::JoinRecord join(std::int64_t device, const std::string& version,
                             const std::string& fingerprint = "FP") const {
        FirmwareReport report;
        report.uuid = "uuid-" + version;
        report.version = version;
        report.platform = "rpi4";
        report.metadata = {{"version", version}};
        return {device, std::make_shared<const FirmwareReport>(std::move(report)), fingerprint,
                ca_};
    }

    std::string version_of(std::int64_t device) {
        std::string version;
        db_.autocommit([&](Tx& tx) {
            const auto row =
                tx->exec_params1("SELECT coalesce(version, '') FROM devices WHERE id = $1", device);
            version = row[0].as<std::string>();
        });
        return version;
    }

    testing::TestDatabase test_db_;
    Database db_{test_db_.url(), 2};
    std::int64_t org_ = 0;
    std::int64_t product_ = 0;
    std::int64_t ca_ = 0;
    std::vector<std::int64_t> devices_;
};

TEST_F(JoinBatch, OneStatementStoresEveryReportAndReadsEachJoinsOwnFacts) {
    // dev-a has an update in flight; dev-b connects with a successor certificate whose
    // predecessor awaits retirement; dev-c has neither; a fourth join names a device that is gone.
    db_.run([&](Tx& tx) {
        tx->exec_params0(
            "INSERT INTO device_updates (org_id, device_id, firmware_uuid, source, expires_at) "
            "VALUES ($1, $2, 'uuid-x', 'manual', now() + interval '1 hour')",
            org_, devices_[0]);
        const auto old_cert = insert_certificate(tx, devices_[1], "11", "OLDFP");
        const auto new_cert = insert_certificate(tx, devices_[1], "12", "NEWFP");
        managed_ca::set_replaced_by(tx, old_cert, new_cert);
    });
    auto c = join(devices_[2], "3.0.0", "CFP");
    auto report = *c.report;
    report.metadata["meta"] = {{"note", "caf\xC3\xA9 \"quoted\" \\ done"}};
    c.report = std::make_shared<const FirmwareReport>(std::move(report));
    const std::vector<devices::JoinRecord> joins{join(devices_[0], "1.0.0", "AFP"),
                                                 join(devices_[1], "2.0.0", "NEWFP"), c,
                                                 join(devices_[2] + 1000, "9.9.9", "GONEFP")};
    std::vector<devices::JoinFacts> facts;
    db_.autocommit([&](Tx& tx) { facts = devices::record_joins(tx, joins); });

    ASSERT_EQ(facts.size(), 4u);
    EXPECT_TRUE(facts[0].update_in_flight);
    EXPECT_FALSE(facts[0].rotation_work);
    EXPECT_FALSE(facts[1].update_in_flight);
    EXPECT_TRUE(facts[1].rotation_work);
    EXPECT_FALSE(facts[2].update_in_flight);
    EXPECT_FALSE(facts[2].rotation_work);
    EXPECT_FALSE(facts[3].update_in_flight);
    EXPECT_FALSE(facts[3].rotation_work);

    db_.run([&](Tx& tx) {
        const auto rows = tx->exec_params(
            "SELECT id, firmware_uuid, version, platform, firmware_metadata->'meta'->>'note', "
            "last_seen_at IS NOT NULL FROM devices ORDER BY id");
        ASSERT_EQ(rows.size(), 3u) << "the join of a device that is gone creates nothing";
        for (std::size_t i = 0; i < 3; ++i) {
            const std::string version = std::to_string(i + 1) + ".0.0";
            EXPECT_EQ(rows[i][0].as<std::int64_t>(), devices_[i]);
            EXPECT_EQ(rows[i][1].as<std::string>(), "uuid-" + version);
            EXPECT_EQ(rows[i][2].as<std::string>(), version);
            EXPECT_EQ(rows[i][3].as<std::string>(), "rpi4");
            EXPECT_TRUE(rows[i][5].as<bool>());
        }
        EXPECT_EQ(rows[2][4].as<std::string>(), "caf\xC3\xA9 \"quoted\" \\ done");
    });
}

TEST_F(JoinBatch, EveryReportFieldIsStoredAsTheDeviceSentItWhateverItsBytes) {
    // The report is the device's text: quotes, backslashes, control characters and bytes that
    // are not UTF-8 (replaced by U+FFFD, never refused) in every field; absent fields are NULL.
    FirmwareReport report;
    report.uuid = "uuid \"q\" \\ end";
    report.version = "1.0\xFF";
    report.platform = "rpi\n4\t";
    report.architecture = "caf\xC3\xA9";
    report.device_api_version = "2.2.0";
    report.currently_downloading_uuid = "dl\x01";
    report.validation_status = "validated";
    report.auto_revert_detected = true;
    report.metadata = {{"note", "x\xFEy"}, {"nested", {{"n", 1}}}};
    const devices::JoinRecord record{
        devices_[0], std::make_shared<const FirmwareReport>(std::move(report)), "F\"P", ca_};
    std::vector<devices::JoinFacts> facts;
    db_.autocommit([&](Tx& tx) { facts = devices::record_joins(tx, {record}); });
    ASSERT_EQ(facts.size(), 1u);
    db_.autocommit([&](Tx& tx) {
        const auto row = tx->exec_params1(
            "SELECT firmware_uuid, version, platform, architecture, firmware_product IS NULL, "
            "device_api_version, currently_downloading_uuid, firmware_validation_status, "
            "firmware_auto_revert_detected, firmware_metadata->>'note', "
            "firmware_metadata->'nested'->>'n' FROM devices WHERE id = $1",
            devices_[0]);
        EXPECT_EQ(row[0].as<std::string>(), "uuid \"q\" \\ end");
        EXPECT_EQ(row[1].as<std::string>(), "1.0\uFFFD");
        EXPECT_EQ(row[2].as<std::string>(), "rpi\n4\t");
        EXPECT_EQ(row[3].as<std::string>(), "caf\xC3\xA9");
        EXPECT_TRUE(row[4].as<bool>()) << "no product reported";
        EXPECT_EQ(row[5].as<std::string>(), "2.2.0");
        EXPECT_EQ(row[6].as<std::string>(), "dl\x01");
        EXPECT_EQ(row[7].as<std::string>(), "validated");
        EXPECT_TRUE(row[8].as<bool>());
        EXPECT_EQ(row[9].as<std::string>(), "x\uFFFDy");
        EXPECT_EQ(row[10].as<std::string>(), "1");
    });
}

TEST_F(JoinBatch, TheGenericPlanMadeOnNearlyEmptyTablesScansNoTableWhole) {
    // A pooled connection keeps the generic plan made at a statement's sixth execution; made on
    // nearly empty tables, an unfenced plan scans devices (or the certificates) whole for every
    // batch, however large the fleet has grown since.
    std::vector<devices::JoinRecord> joins;
    for (std::size_t i = 0; i < devices_.size(); ++i) {
        joins.push_back(join(devices_[i], "1.0." + std::to_string(i)));
    }
    db_.run([&](Tx& tx) {
        tx->exec0("SET LOCAL plan_cache_mode = force_generic_plan");
        const std::string scans =
            "SELECT pg_stat_get_xact_numscans('devices'::regclass) + "
            "pg_stat_get_xact_numscans('device_certificates'::regclass) + "
            "pg_stat_get_xact_numscans('device_updates'::regclass) + "
            "pg_stat_get_xact_numscans('managed_ca_keys'::regclass)";
        const auto before = tx->exec1(scans)[0].as<std::int64_t>();
        const auto facts = devices::record_joins(tx, joins);
        EXPECT_EQ(facts.size(), joins.size());
        EXPECT_EQ(tx->exec1(scans)[0].as<std::int64_t>(), before) << "sequential scans";
        EXPECT_EQ(tx->exec_params1("SELECT count(*) FROM devices WHERE version LIKE '1.0.%'")[0]
                      .as<std::int64_t>(),
                  3);
    });
}

using testing::JobThreads;

std::future<devices::JoinFacts> submit_join(JoinBatcher& batcher, devices::JoinRecord record) {
    return testing::submit_to(batcher, std::move(record));
}

TEST_F(JoinBatch, JoinsThatArriveTogetherShareAStatementAndADevicesSecondJoinWaitsItsTurn) {
    JobThreads pool;
    JoinBatcher batcher{db_, pool.post()};
    // Another connection holds dev-a's row: the first batch (dev-a's join) waits for it, and the
    // joins arriving meanwhile queue for the next batch.
    pqxx::connection other{test_db_.url()};
    std::optional<pqxx::work> blocker;
    blocker.emplace(other);
    blocker->exec_params("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", devices_[0]);

    std::vector<std::future<devices::JoinFacts>> answers;
    answers.push_back(submit_join(batcher, join(devices_[0], "1.0.0")));
    for (int i = 0; i < 100 && batcher.statements() == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(batcher.statements(), 1u);
    answers.push_back(submit_join(batcher, join(devices_[1], "2.0.0")));
    answers.push_back(submit_join(batcher, join(devices_[0], "1.0.1")));
    answers.push_back(submit_join(batcher, join(devices_[2], "3.0.0")));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(batcher.statements(), 1u) << "the others wait for the batch in flight";
    EXPECT_EQ(pool.jobs(), 1u) << "waiting joins hold no worker thread";
    blocker->commit();
    for (auto& a : answers) EXPECT_NO_THROW(a.get());
    pool.join();

    // The three joins queued meanwhile went in one statement: dev-a's second among them, as its
    // first was no longer queued. One job ran both statements.
    EXPECT_EQ(batcher.statements(), 2u);
    EXPECT_EQ(batcher.items(), 4u);
    EXPECT_EQ(pool.jobs(), 1u);
    EXPECT_EQ(version_of(devices_[0]), "1.0.1") << "a device's joins are stored in their order";
    EXPECT_EQ(version_of(devices_[1]), "2.0.0");
    EXPECT_EQ(version_of(devices_[2]), "3.0.0");
}

TEST_F(JoinBatch, TwoJoinsOfOneDeviceQueuedTogetherGoToSeparateStatementsInOrder) {
    JobThreads pool;
    JoinBatcher batcher{db_, pool.post()};
    pqxx::connection other{test_db_.url()};
    std::optional<pqxx::work> blocker;
    blocker.emplace(other);
    blocker->exec_params("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", devices_[2]);

    std::vector<std::future<devices::JoinFacts>> answers;
    answers.push_back(submit_join(batcher, join(devices_[2], "0.0.1")));
    for (int i = 0; i < 100 && batcher.statements() == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(batcher.statements(), 1u);
    // Queued while the first batch waits: two joins of dev-a and one of dev-b.
    answers.push_back(submit_join(batcher, join(devices_[0], "1.0.0")));
    answers.push_back(submit_join(batcher, join(devices_[0], "1.0.1")));
    answers.push_back(submit_join(batcher, join(devices_[1], "2.0.0")));
    blocker->commit();
    for (auto& a : answers) EXPECT_NO_THROW(a.get());
    pool.join();

    // dev-a's first join and dev-b's in the second statement, dev-a's second in the third.
    EXPECT_EQ(batcher.statements(), 3u);
    EXPECT_EQ(version_of(devices_[0]), "1.0.1");
    EXPECT_EQ(version_of(devices_[1]), "2.0.0");
    EXPECT_EQ(version_of(devices_[2]), "0.0.1");
}

}  // namespace
}  // namespace otahub::db
