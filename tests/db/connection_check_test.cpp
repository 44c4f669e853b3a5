// The device endpoint's known-certificate fast path: connection_check (one read for the CRL
// state, the certificate and its device), open_connection_and_notify (connection row and NOTIFY
// in one statement) and rotation_work_on_join, against a real PostgreSQL.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <thread>

#include "db/migrator.hpp"
#include "db/notifications.hpp"
#include "db/repositories/accounts_repository.hpp"
#include "db/repositories/ca_certificates_repository.hpp"
#include "db/repositories/devices_repository.hpp"
#include "db/repositories/managed_ca_repository.hpp"
#include "db/repositories/products_repository.hpp"
#include "db/tx.hpp"
#include "tests/db/test_database.hpp"

namespace otahub::db {
namespace {

using Clock = std::chrono::system_clock;

class ConnectionCheck : public ::testing::Test {
  protected:
    void SetUp() override {
        Migrator{db_}.migrate();
        db_.run([&](Tx& tx) {
            org_ = accounts::create_org(tx, "acme").id;
            other_org_ = accounts::create_org(tx, "other").id;
            product_ = products::create(tx, org_, "demo").id;
            NewCaCertificate ca;
            ca.org_id = org_;
            ca.serial = "1001";
            ca.ski = "CA:SKI";
            ca.subject = "CN=fleet CA";
            ca.fingerprint = "CAFP";
            ca.not_before = Clock::now() - std::chrono::hours(1);
            ca.not_after = Clock::now() + std::chrono::hours(24);
            ca.der = {0x30, 0x00};
            ca_ = ca_certificates::create(tx, ca).id;
            device_ = devices::create_if_missing(tx, org_, product_, "dev-1", "", {}).id;
            certificate_ = insert_certificate(tx, "77", "DEVFP");
        });
    }

    /// A certificate of dev-1 issued by the CA; its key and SKI derive from the fingerprint.
    std::int64_t insert_certificate(Tx& tx, const std::string& serial,
                                    const std::string& fingerprint) const {
        NewDeviceCertificate cert;
        cert.org_id = org_;
        cert.device_id = device_;
        cert.serial = serial;
        cert.aki = "CA:SKI";
        cert.ski = "SKI:" + fingerprint;
        cert.not_before = Clock::now() - std::chrono::hours(1);
        cert.not_after = Clock::now() + std::chrono::hours(24);
        cert.fingerprint = fingerprint;
        cert.public_key_fingerprint = "KEY:" + fingerprint;
        cert.der = {0x30, 0x00};
        return devices::insert_certificate(tx, cert)->id;
    }

    devices::ConnectionCheck check(const std::string& fingerprint, const std::string& serial = "77",
                                   std::int64_t ca = 0) {
        devices::ConnectionCheck out;
        db_.autocommit([&](Tx& tx) {
            out = devices::connection_check(tx, fingerprint, ca == 0 ? ca_ : ca, serial, true);
        });
        return out;
    }

    testing::TestDatabase test_db_;
    Database db_{test_db_.url(), 2};
    std::int64_t org_ = 0;
    std::int64_t other_org_ = 0;
    std::int64_t product_ = 0;
    std::int64_t ca_ = 0;
    std::int64_t device_ = 0;
    std::int64_t certificate_ = 0;
};

TEST_F(ConnectionCheck, AKnownCertificateComesWithItsDeviceAndTheCrlState) {
    auto c = check("DEVFP");
    ASSERT_TRUE(c.certificate.has_value());
    EXPECT_EQ(c.certificate->id, certificate_);
    EXPECT_FALSE(c.certificate->revoked);
    ASSERT_TRUE(c.certificate->device.has_value());
    EXPECT_EQ(c.certificate->device->id, device_);
    EXPECT_EQ(c.certificate->device->org_id, org_);
    EXPECT_EQ(c.certificate->device->product_id, product_);
    EXPECT_EQ(c.certificate->device->identifier, "dev-1");
    EXPECT_FALSE(c.certificate->device->disabled);
    EXPECT_FALSE(c.certificate->device->deleted);
    EXPECT_EQ(c.crl.missing_crl_policy, std::optional<std::string>("accept"));
    EXPECT_FALSE(c.crl.has_crl);
    EXPECT_EQ(managed_ca::crl_refusal(c.crl), std::nullopt);
}

TEST_F(ConnectionCheck, AnUnknownFingerprintHasNoCertificateButStillTheCrlState) {
    db_.run([&](Tx& tx) { managed_ca::set_missing_crl_policy(tx, ca_, "refuse"); });
    auto c = check("NOPE");
    EXPECT_FALSE(c.certificate.has_value());
    EXPECT_EQ(managed_ca::crl_refusal(c.crl),
              std::optional<std::string>("no CRL imported for the CA"));
}

TEST_F(ConnectionCheck, AnUnknownCaHasNoCrlState) {
    auto c = check("DEVFP", "77", ca_ + 1000);
    EXPECT_EQ(c.crl.missing_crl_policy, std::nullopt);
    EXPECT_EQ(managed_ca::crl_refusal(c.crl), std::nullopt);
    EXPECT_TRUE(c.certificate.has_value());
}

TEST_F(ConnectionCheck, SeesRevocationDisablingDeletionAndCrlListing) {
    db_.run([&](Tx& tx) {
        devices::revoke_certificate(tx, certificate_);
        devices::update(tx, device_, "", {}, true, true);
        NewCrl crl;
        crl.der = {0x30, 0x00};
        crl.this_update = Clock::now() - std::chrono::minutes(1);
        crl.next_update = Clock::now() + std::chrono::hours(1);
        crl.revoked = {{"77", Clock::now() - std::chrono::minutes(1)}};
        managed_ca::store_crl(tx, ca_, crl);
    });
    auto c = check("DEVFP");
    ASSERT_TRUE(c.certificate.has_value());
    EXPECT_TRUE(c.certificate->revoked);
    EXPECT_TRUE(c.certificate->device->disabled);
    EXPECT_TRUE(c.crl.has_crl);
    EXPECT_TRUE(c.crl.listed);
    EXPECT_EQ(managed_ca::crl_refusal(c.crl),
              std::optional<std::string>("certificate revoked by the CA's CRL"));
    // Another serial of the same CA is not listed.
    EXPECT_FALSE(check("DEVFP", "78").crl.listed);

    db_.run([&](Tx& tx) { devices::soft_delete(tx, device_); });
    EXPECT_TRUE(check("DEVFP").certificate->device->deleted);
}

TEST_F(ConnectionCheck, OpenConnectionAndNotifyWritesTheRowAndSendsTheEvent) {
    std::mutex mutex;
    std::vector<std::string> payloads;
    std::atomic<bool> listening{false};
    ListenerOptions options;
    options.url = test_db_.url();
    options.on_notification = [&](const std::string& payload) {
        const std::lock_guard lock{mutex};
        payloads.push_back(payload);
    };
    options.on_connected = [&](bool) { listening = true; };
    NotificationListener listener{options};
    listener.start();
    for (int i = 0; i < 100 && !listening; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(listening);

    std::int64_t id = 0;
    db_.autocommit([&](Tx& tx) {
        id = devices::open_connection_and_notify(
            tx, device_, "node-a", "127.0.0.1:5000", "DEVFP", ca_, certificate_,
            R"({"kind":"device_connected","device_id":)" + std::to_string(device_) +
                R"(,"node_id":"node-a"})");
    });
    EXPECT_GT(id, 0);
    db_.autocommit([&](Tx& tx) {
        auto row = tx->exec_params1(
            "SELECT c.device_id, c.node_id, c.status, c.certificate_fingerprint, "
            "d.connected_at IS NOT NULL, k.last_used_at IS NOT NULL, a.last_used_at IS NOT NULL "
            "FROM device_connections c JOIN devices d ON d.id = c.device_id "
            "JOIN device_certificates k ON k.fingerprint = c.certificate_fingerprint "
            "JOIN ca_certificates a ON a.id = $2 WHERE c.id = $1",
            id, ca_);
        EXPECT_EQ(row[0].as<std::int64_t>(), device_);
        EXPECT_EQ(row[1].as<std::string>(), "node-a");
        EXPECT_EQ(row[2].as<std::string>(), "connected");
        EXPECT_EQ(row[3].as<std::string>(), "DEVFP");
        EXPECT_TRUE(row[4].as<bool>());
        EXPECT_TRUE(row[5].as<bool>());
        EXPECT_TRUE(row[6].as<bool>());
    });
    nlohmann::json event;
    for (int i = 0; i < 100; ++i) {
        {
            const std::lock_guard lock{mutex};
            if (!payloads.empty()) {
                event = nlohmann::json::parse(payloads.front());
                break;
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    listener.stop();
    ASSERT_TRUE(event.is_object()) << "no notification arrived";
    EXPECT_EQ(event.value("kind", ""), "device_connected");
    EXPECT_EQ(event.value("device_id", std::int64_t{0}), device_);
    EXPECT_EQ(event.value("node_id", ""), "node-a");
    EXPECT_EQ(event.value("connection_id", std::int64_t{0}), id);
}

TEST_F(ConnectionCheck, RotationWorkOnlyForManagedCasOrPendingRetirement) {
    bool work = true;
    db_.autocommit([&](Tx& tx) { work = managed_ca::rotation_work_on_join(tx, "DEVFP", ca_); });
    EXPECT_FALSE(work) << "a custom CA and no replaced certificate";

    // A successor certificate: the old one awaits retirement when the new one connects.
    std::int64_t successor = 0;
    db_.run([&](Tx& tx) {
        successor = insert_certificate(tx, "78", "DEVFP2");
        managed_ca::set_replaced_by(tx, certificate_, successor);
    });
    db_.autocommit([&](Tx& tx) { work = managed_ca::rotation_work_on_join(tx, "DEVFP2", ca_); });
    EXPECT_TRUE(work);
    db_.run([&](Tx& tx) {
        EXPECT_EQ(managed_ca::schedule_retirement(tx, "DEVFP2", std::chrono::seconds(60)).size(),
                  1u);
    });
    db_.autocommit([&](Tx& tx) { work = managed_ca::rotation_work_on_join(tx, "DEVFP2", ca_); });
    EXPECT_FALSE(work) << "already scheduled";
}

}  // namespace
}  // namespace otahub::db
