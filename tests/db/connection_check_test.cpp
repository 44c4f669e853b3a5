// The device endpoint's statements, against a real PostgreSQL: check_open_or_provision (for
// every connection of a batch, the CRL state, the certificate and its device, and the connection
// row with its NOTIFY when they admit it, and plain JITP, in one statement),
// open_connection_and_notify, and record_joins for one join (the join's UPDATE and the facts its
// observers start from, in one statement); and ConnectionBatcher.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <pqxx/pqxx>
#include <set>
#include <thread>
#include <tuple>

#include "db/connection_batcher.hpp"
#include "db/migrator.hpp"
#include "db/notifications.hpp"
#include "db/repositories/accounts_repository.hpp"
#include "db/repositories/audit_repository.hpp"
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

/// Listens on the event channel and keeps what arrives.
class EventWatch {
  public:
    explicit EventWatch(const std::string& url) {
        ListenerOptions options;
        options.url = url;
        options.on_notification = [this](const std::string& payload) {
            const std::lock_guard lock{mutex_};
            payloads_.push_back(payload);
        };
        options.on_connected = [this](bool) { listening_ = true; };
        listener_.emplace(options);
        listener_->start();
        for (int i = 0; i < 100 && !listening_; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }
    ~EventWatch() { listener_->stop(); }
    EventWatch(const EventWatch&) = delete;
    EventWatch& operator=(const EventWatch&) = delete;

    bool listening() const { return listening_; }

    /// The first notification, parsed (waits up to 5 s); null when none came.
    nlohmann::json first_event() {
        for (int i = 0; i < 100; ++i) {
            {
                const std::lock_guard lock{mutex_};
                if (!payloads_.empty()) return nlohmann::json::parse(payloads_.front());
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return nullptr;
    }

    /// How many notifications came before the first of kind `kind` (waits up to 5 s for it);
    /// SIZE_MAX when it never came.
    std::size_t events_until(const std::string& kind) {
        for (int i = 0; i < 100; ++i) {
            {
                const std::lock_guard lock{mutex_};
                for (std::size_t n = 0; n < payloads_.size(); ++n) {
                    if (nlohmann::json::parse(payloads_[n]).value("kind", "") == kind) return n;
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return SIZE_MAX;
    }

  private:
    std::mutex mutex_;
    std::vector<std::string> payloads_;
    std::atomic<bool> listening_{false};
    std::optional<NotificationListener> listener_;
};

class ConnectionCheck : public ::testing::Test {
  protected:
    void SetUp() override {
        Migrator{db_}.migrate();
        db_.run([&](Tx& tx) {
            org_ = accounts::create_org(tx, "acme").id;
            other_org_ = accounts::create_org(tx, "other").id;
            product_ = products::create(tx, org_, "demo").id;
            ca_ = ca_certificates::create(tx, testing::fleet_ca(org_)).id;
            device_ = devices::create_if_missing(tx, org_, product_, "dev-1", "", {}).id;
            certificate_ = insert_certificate(tx, "77", "DEVFP");
        });
    }

    /// A certificate of dev-1 issued by the CA; its key and SKI derive from the fingerprint.
    std::int64_t insert_certificate(Tx& tx, const std::string& serial,
                                    const std::string& fingerprint) const {
        return devices::insert_certificate(
                   tx, testing::fleet_certificate(org_, device_, serial, fingerprint))
            ->id;
    }

    /// devices::record_joins for dev-1's join alone.
    devices::JoinFacts record_join(Tx& tx, const FirmwareReport& report,
                                   const std::string& fingerprint, std::int64_t ca) const {
        return devices::record_joins(
                   tx, {{device_, std::make_shared<const FirmwareReport>(report), fingerprint, ca}})
            .at(0);
    }

    /// CA `ca`'s missing-CRL policy, and its CRL: "none", "current" or "expired", listing serial
    /// 77 (the CRL states the admission rule reads, with serials 77 and 78).
    void set_crl_state(std::int64_t ca, const std::string& policy, const std::string& crl_state) {
        db_.run([&](Tx& tx) {
            managed_ca::set_missing_crl_policy(tx, ca, policy);
            tx->exec_params0("DELETE FROM ca_crls WHERE ca_certificate_id = $1", ca);
            if (crl_state == "none") return;
            NewCrl crl;
            crl.der = {0x30, 0x00};
            const bool expired = crl_state == "expired";
            crl.this_update = Clock::now() - std::chrono::hours(expired ? 3 : 1);
            crl.next_update = Clock::now() + std::chrono::hours(expired ? -1 : 1);
            crl.revoked = {{"77", Clock::now() - std::chrono::hours(2)}};
            managed_ca::store_crl(tx, ca, crl);
        });
    }

    /// check_open_or_provision for one attempt without JITP, from node-a.
    devices::ConnectionCheck decide(const std::string& fingerprint, const std::string& serial,
                                    std::int64_t ca, std::int64_t org, const std::string& event) {
        devices::ConnectionAttempt attempt;
        attempt.ca_id = ca;
        attempt.org_id = org;
        attempt.issued_by_ca = true;
        attempt.certificate.fingerprint = fingerprint;
        attempt.certificate.serial = serial;
        attempt.remote_address = "127.0.0.1:5000";
        std::vector<devices::CheckOrProvision> out;
        db_.autocommit([&](Tx& tx) {
            out = devices::check_open_or_provision(tx, {attempt}, "node-a", event);
        });
        EXPECT_EQ(out.size(), 1u);
        EXPECT_FALSE(out.at(0).provisioned.has_value());
        return out.at(0).check;
    }

    /// The check as a pure read: for an organization that does not exist, so it never opens a
    /// connection.
    devices::ConnectionCheck check(const std::string& fingerprint, const std::string& serial = "77",
                                   std::int64_t ca = 0) {
        auto out = decide(fingerprint, serial, ca == 0 ? ca_ : ca, -1, "{}");
        EXPECT_FALSE(out.connection_id.has_value());
        return out;
    }

    /// The check for org `org` (default: the CA's), opening the connection when it admits it.
    devices::ConnectionCheck open(const std::string& fingerprint, const std::string& serial = "77",
                                  std::int64_t org = 0) {
        return decide(fingerprint, serial, ca_, org == 0 ? org_ : org,
                      R"({"kind":"device_connected","node_id":"node-a"})");
    }

    /// Undoes what opening a connection writes besides the row (dev-1's connection and seen
    /// times, its certificates' and the CA's last use; the certificates' older than the
    /// once-a-minute throttle), so that a test sees whether an opening writes them.
    void forget_connection_writes() {
        db_.run([&](Tx& tx) {
            tx->exec_params0(
                "UPDATE devices SET connected_at = NULL, last_seen_at = NULL "
                "WHERE id = $1",
                device_);
            tx->exec_params0(
                "UPDATE device_certificates SET last_used_at = "
                "'2000-01-01T00:00:00Z' WHERE device_id = $1",
                device_);
            tx->exec_params0("UPDATE ca_certificates SET last_used_at = NULL WHERE id = $1", ca_);
        });
    }

    /// Connection `id` is dev-1's on node-a from 127.0.0.1:5000 with certificate DEVFP, it wrote
    /// the connection time and the certificate's and CA's last use, and its device_connected
    /// event arrived at `watch`.
    void expect_opened(std::int64_t id, EventWatch& watch) {
        db_.autocommit([&](Tx& tx) {
            const auto row = tx->exec_params1(
                "SELECT c.device_id, c.node_id, c.status, c.certificate_fingerprint, "
                "c.remote_address, d.connected_at IS NOT NULL, d.last_seen_at IS NOT NULL, "
                "k.last_used_at > now() - interval '1 hour', a.last_used_at IS NOT NULL "
                "FROM device_connections c JOIN devices d ON d.id = c.device_id "
                "JOIN device_certificates k ON k.fingerprint = c.certificate_fingerprint "
                "JOIN ca_certificates a ON a.id = $2 WHERE c.id = $1",
                id, ca_);
            EXPECT_EQ(row[0].as<std::int64_t>(), device_);
            EXPECT_EQ(row[1].as<std::string>(), "node-a");
            EXPECT_EQ(row[2].as<std::string>(), "connected");
            EXPECT_EQ(row[3].as<std::string>(), "DEVFP");
            EXPECT_EQ(row[4].as<std::string>(), "127.0.0.1:5000");
            EXPECT_TRUE(row[5].as<bool>()) << "connection time";
            EXPECT_TRUE(row[6].as<bool>()) << "last seen";
            EXPECT_TRUE(row[7].as<bool>()) << "certificate use";
            EXPECT_TRUE(row[8].as<bool>()) << "CA use";
        });
        const nlohmann::json event = watch.first_event();
        ASSERT_TRUE(event.is_object()) << "no notification arrived";
        EXPECT_EQ(event.value("kind", ""), "device_connected");
        EXPECT_EQ(event.value("device_id", std::int64_t{0}), device_);
        EXPECT_EQ(event.value("node_id", ""), "node-a");
        EXPECT_EQ(event.value("connection_id", std::int64_t{0}), id);
    }

    std::int64_t connections() {
        std::int64_t n = 0;
        db_.autocommit([&](Tx& tx) {
            n = tx->exec1("SELECT count(*) FROM device_connections")[0].as<std::int64_t>();
        });
        return n;
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
    forget_connection_writes();
    EventWatch watch{test_db_.url()};
    ASSERT_TRUE(watch.listening());

    std::int64_t id = 0;
    db_.autocommit([&](Tx& tx) {
        id = devices::open_connection_and_notify(
            tx, device_, "node-a", "127.0.0.1:5000", "DEVFP", ca_, certificate_,
            R"({"kind":"device_connected","device_id":)" + std::to_string(device_) +
                R"(,"node_id":"node-a"})");
    });
    EXPECT_GT(id, 0);
    expect_opened(id, watch);
}

TEST_F(ConnectionCheck, CloseConnectionsEndsOpenSessionsWithTheirReasonAndTimeInOneStatement) {
    const auto a = open("DEVFP").connection_id;
    const auto b = open("DEVFP").connection_id;
    const auto c = open("DEVFP").connection_id;
    ASSERT_TRUE(a && b && c);
    db_.run([&](Tx& tx) {
        devices::close_connection(tx, *c, "earlier");
        tx->exec0(
            "UPDATE device_connections SET connected_at = now() - interval '2 hours', "
            "last_seen_at = now() - interval '2 hours'");
        tx->exec_params0(
            "UPDATE devices SET last_seen_at = now() - interval '30 minutes' "
            "WHERE id = $1",
            device_);
    });
    const auto now = std::chrono::system_clock::now();
    const auto seconds_ago = [&](std::int64_t id, const char* column) {
        double s = 0;
        db_.autocommit([&](Tx& tx) {
            s = tx->exec_params1(std::string("SELECT extract(epoch FROM now() - ") + column +
                                     ")::float8 FROM device_connections WHERE id = $1",
                                 id)[0]
                    .as<double>();
        });
        return s;
    };
    const auto device_seen_ago = [&] {
        double s = 0;
        db_.autocommit([&](Tx& tx) {
            s = tx->exec_params1(
                      "SELECT extract(epoch FROM now() - last_seen_at)::float8 FROM devices "
                      "WHERE id = $1",
                      device_)[0]
                    .as<double>();
        });
        return s;
    };

    // A session that ended an hour ago (kept through an outage): its own time, and the device's
    // last sighting (30 minutes ago) does not go back. The one already closed is left alone.
    std::int64_t closed = 0;
    db_.run([&](Tx& tx) {
        closed = devices::close_connections(
            tx,
            {{*a, "closed by device (code 1000)", now - std::chrono::hours(1)}, {*c, "late", now}});
    });
    EXPECT_EQ(closed, 1);
    EXPECT_NEAR(seconds_ago(*a, "disconnected_at"), 3600, 60);
    EXPECT_NEAR(seconds_ago(*a, "last_seen_at"), 3600, 60);
    EXPECT_NEAR(device_seen_ago(), 1800, 60);

    // A node clock ahead of the database's is bounded by now(); a reason that is not UTF-8 is
    // stored with replacement characters rather than failing the whole batch.
    db_.run([&](Tx& tx) {
        closed = devices::close_connections(
            tx, {{*b, std::string("internal error: \xff\xfe"), now + std::chrono::hours(1)}});
    });
    EXPECT_EQ(closed, 1);
    EXPECT_NEAR(seconds_ago(*b, "disconnected_at"), 0, 60);
    EXPECT_NEAR(device_seen_ago(), 0, 60);

    db_.autocommit([&](Tx& tx) {
        const auto rows =
            tx->exec("SELECT id, status, disconnect_reason FROM device_connections ORDER BY id");
        ASSERT_EQ(rows.size(), 3U);
        EXPECT_EQ(rows[0][1].as<std::string>(), "disconnected");
        EXPECT_EQ(rows[0][2].as<std::string>(), "closed by device (code 1000)");
        EXPECT_EQ(rows[1][2].as<std::string>(), "internal error: \uFFFD\uFFFD");
        EXPECT_EQ(rows[2][2].as<std::string>(), "earlier") << "the closed one was rewritten";
        EXPECT_EQ(tx->exec_params1("SELECT device_online($1)", device_)[0].as<bool>(), false);
    });
}

TEST_F(ConnectionCheck, ClosingSessionsReadsOnlyTheirRowsWhateverThePlan) {
    // Forty sessions connected; two close. A generic plan made on nearly empty tables must
    // still look their rows up by id, not read every connected row of the cluster per batch.
    db_.run([&](Tx& tx) {
        tx->exec_params0(
            "INSERT INTO device_connections (device_id, node_id, remote_address, "
            "certificate_fingerprint) SELECT $1, 'node-a', '127.0.0.1:5000', 'DEVFP' "
            "FROM generate_series(1, 40)",
            device_);
    });
    std::vector<std::int64_t> ids;
    db_.autocommit([&](Tx& tx) {
        for (const auto& row : tx->exec("SELECT id FROM device_connections ORDER BY id LIMIT 2")) {
            ids.push_back(row[0].as<std::int64_t>());
        }
    });
    ASSERT_EQ(ids.size(), 2u);
    db_.run([&](Tx& tx) {
        tx->exec0("SET LOCAL plan_cache_mode = force_generic_plan");
        const std::string read =
            "SELECT pg_stat_get_xact_tuples_fetched('device_connections'::regclass) + "
            "pg_stat_get_xact_tuples_returned('device_connections'::regclass)";
        const auto before = tx->exec1(read)[0].as<std::int64_t>();
        const auto at = std::chrono::system_clock::now();
        EXPECT_EQ(devices::close_connections(
                      tx, {{ids[0], "gone", at}, {ids[1], "gone", at}, {ids[1] + 1000, "x", at}}),
                  2);
        EXPECT_LE(tx->exec1(read)[0].as<std::int64_t>() - before, 4) << "rows read";
        EXPECT_EQ(tx->exec1("SELECT count(*) FROM device_connections WHERE status = 'connected'")[0]
                      .as<std::int64_t>(),
                  38);
    });
}

TEST_F(ConnectionCheck, RotationWorkOnlyForManagedCasOrPendingRetirement) {
    auto rotation_work = [&](const std::string& fingerprint, std::int64_t ca) {
        bool work = false;
        db_.autocommit([&](Tx& tx) {
            work = record_join(tx, FirmwareReport{}, fingerprint, ca).rotation_work;
        });
        return work;
    };
    EXPECT_FALSE(rotation_work("DEVFP", ca_)) << "a custom CA and no replaced certificate";

    // A successor certificate: the old one awaits retirement when the new one connects.
    std::int64_t successor = 0;
    db_.run([&](Tx& tx) {
        successor = insert_certificate(tx, "78", "DEVFP2");
        managed_ca::set_replaced_by(tx, certificate_, successor);
    });
    EXPECT_TRUE(rotation_work("DEVFP2", ca_));
    db_.run([&](Tx& tx) {
        EXPECT_EQ(managed_ca::schedule_retirement(tx, "DEVFP2", std::chrono::seconds(60)).size(),
                  1u);
    });
    EXPECT_FALSE(rotation_work("DEVFP2", ca_)) << "already scheduled";
}

TEST_F(ConnectionCheck, RecordJoinStoresTheReportAndReadsTheJoinFacts) {
    FirmwareReport report;
    report.uuid = "uuid-1";
    report.version = "1.2.3";
    report.platform = "rpi4";
    report.metadata = {{"version", "1.2.3"}};
    devices::JoinFacts facts{true, true};
    db_.autocommit([&](Tx& tx) { facts = record_join(tx, report, "DEVFP", ca_); });
    EXPECT_FALSE(facts.update_in_flight);
    EXPECT_FALSE(facts.rotation_work);
    db_.run([&](Tx& tx) {
        const auto row = tx->exec_params1(
            "SELECT firmware_uuid, version, platform, firmware_metadata->>'version', "
            "last_seen_at IS NOT NULL FROM devices WHERE id = $1",
            device_);
        EXPECT_EQ(row[0].as<std::string>(), "uuid-1");
        EXPECT_EQ(row[1].as<std::string>(), "1.2.3");
        EXPECT_EQ(row[2].as<std::string>(), "rpi4");
        EXPECT_EQ(row[3].as<std::string>(), "1.2.3");
        EXPECT_TRUE(row[4].as<bool>());
    });

    // An update in flight, and a successor certificate whose predecessor awaits retirement:
    // the same statement now reports both, each as its own query would.
    std::int64_t successor = 0;
    db_.run([&](Tx& tx) {
        tx->exec_params0(
            "INSERT INTO device_updates (org_id, device_id, firmware_uuid, source, expires_at) "
            "VALUES ($1, $2, 'uuid-2', 'manual', now() + interval '1 hour')",
            org_, device_);
        successor = insert_certificate(tx, "78", "DEVFP2");
        managed_ca::set_replaced_by(tx, certificate_, successor);
    });
    report.version = "1.2.4";
    db_.autocommit([&](Tx& tx) { facts = record_join(tx, report, "DEVFP2", ca_); });
    EXPECT_TRUE(facts.update_in_flight);
    EXPECT_TRUE(facts.rotation_work);
    db_.run([&](Tx& tx) {
        EXPECT_EQ(tx->exec_params1("SELECT version FROM devices WHERE id = $1", device_)[0]
                      .as<std::string>(),
                  "1.2.4")
            << "the UPDATE ran although the outer SELECT does not read it";
    });
    // The old certificate does not itself have a successor pending: no rotation work for it.
    db_.autocommit([&](Tx& tx) { facts = record_join(tx, report, "DEVFP", ca_); });
    EXPECT_TRUE(facts.update_in_flight);
    EXPECT_FALSE(facts.rotation_work);
    db_.run([&](Tx& tx) {
        tx->exec_params0("UPDATE device_updates SET status = 'succeeded' WHERE device_id = $1",
                         device_);
    });
    db_.autocommit([&](Tx& tx) { facts = record_join(tx, report, "DEVFP2", ca_); });
    EXPECT_FALSE(facts.update_in_flight) << "a finished update is not in flight";
}

TEST_F(ConnectionCheck, CheckAndOpenAgreesWithCrlRefusalOnEveryCrlState) {
    // Every CRL state the rule reads: policy x (no CRL, current, expired) x (listed or not).
    int opened = 0;
    int refused = 0;
    for (const std::string policy : {"accept", "refuse"}) {
        for (const std::string crl_state : {"none", "current", "expired"}) {
            for (const std::string serial : {"77", "78"}) {
                set_crl_state(ca_, policy, crl_state);
                const auto what = policy + "/" + crl_state + "/serial " + serial;
                const auto before = connections();
                const auto read = check("DEVFP", serial);
                const auto c = open("DEVFP", serial);
                const auto refusal = managed_ca::crl_refusal(c.crl);
                EXPECT_EQ(refusal, managed_ca::crl_refusal(read.crl)) << what;
                EXPECT_EQ(c.crl.listed, read.crl.listed) << what;
                EXPECT_EQ(c.connection_id.has_value(), !refusal.has_value()) << what;
                EXPECT_EQ(connections(), before + (refusal ? 0 : 1)) << what;
                (refusal ? refused : opened) += 1;
            }
        }
    }
    // accept: listed refused on both CRLs (2), others open (4); refuse: only an unlisted serial
    // on the current CRL opens (1).
    EXPECT_EQ(opened, 5);
    EXPECT_EQ(refused, 7);
}

TEST_F(ConnectionCheck, CheckAndOpenOpensNothingForRefusedOrUnknownCertificates) {
    db_.run([&](Tx& tx) { insert_certificate(tx, "79", "DEVFP3"); });
    forget_connection_writes();
    // What an opening writes besides the row (connection time, certificate and CA use).
    auto writes = [&] {
        std::string out;
        db_.autocommit([&](Tx& tx) {
            out = tx->exec_params1(
                        "SELECT concat_ws('|', d.connected_at, d.last_seen_at, a.last_used_at, "
                        "(SELECT string_agg(k.last_used_at::text, ',' ORDER BY k.id) "
                        "FROM device_certificates k WHERE k.device_id = d.id)) "
                        "FROM devices d, ca_certificates a WHERE d.id = $1 AND a.id = $2",
                        device_, ca_)[0]
                      .as<std::string>();
        });
        return out;
    };
    const auto before = connections();
    const auto written = writes();
    auto unknown = open("NOPE");
    EXPECT_FALSE(unknown.certificate.has_value());
    EXPECT_FALSE(unknown.connection_id.has_value());

    auto other = open("DEVFP", "77", other_org_);
    ASSERT_TRUE(other.certificate.has_value());
    EXPECT_FALSE(other.connection_id.has_value()) << "a device of another organization";

    db_.run([&](Tx& tx) { devices::update(tx, device_, "", {}, true, true); });
    auto disabled = open("DEVFP");
    EXPECT_TRUE(disabled.certificate->device->disabled);
    EXPECT_FALSE(disabled.connection_id.has_value());

    db_.run([&](Tx& tx) { devices::update(tx, device_, "", {}, true, false); });
    db_.run([&](Tx& tx) { devices::revoke_certificate(tx, certificate_); });
    auto revoked = open("DEVFP");
    EXPECT_TRUE(revoked.certificate->revoked);
    EXPECT_FALSE(revoked.connection_id.has_value());

    db_.run([&](Tx& tx) { devices::soft_delete(tx, device_); });
    auto deleted = open("DEVFP3", "79");
    EXPECT_TRUE(deleted.certificate->device->deleted);
    EXPECT_FALSE(deleted.connection_id.has_value());

    EXPECT_EQ(connections(), before);
    EXPECT_EQ(writes(), written) << "a refusal writes nothing";
}

TEST_F(ConnectionCheck, CheckAndOpenWritesTheRowItsWritesAndTheEvent) {
    forget_connection_writes();
    EventWatch watch{test_db_.url()};
    ASSERT_TRUE(watch.listening());

    const auto c = open("DEVFP");
    ASSERT_TRUE(c.connection_id.has_value());
    ASSERT_TRUE(c.certificate.has_value());
    EXPECT_EQ(c.certificate->device->id, device_);
    expect_opened(*c.connection_id, watch);
}

/// check_open_or_provision against a CA with a JITP profile (product demo, tags, description).
class Provisioning : public ConnectionCheck {
  protected:
    void SetUp() override {
        ConnectionCheck::SetUp();
        db_.run([&](Tx& tx) {
            auto ca = testing::fleet_ca(org_);
            ca.serial = "2002";
            ca.ski = "JITP:SKI";
            ca.subject = "CN=jitp CA";
            ca.fingerprint = "JITPCAFP";
            ca.jitp = JitpProfile{product_, "demo", {"field", "eu"}, "made on first contact"};
            jitp_ca_ = ca_certificates::create(tx, ca).id;
        });
    }

    devices::ConnectionAttempt request(const std::string& identifier,
                                       const std::string& fingerprint, std::int64_t ca = 0) const {
        devices::ConnectionAttempt p;
        p.ca_id = ca == 0 ? jitp_ca_ : ca;
        p.org_id = org_;
        p.issued_by_ca = true;
        p.jitp = true;
        p.identifier = identifier;
        auto& c = p.certificate;
        c.org_id = org_;
        c.serial = "5" + fingerprint.substr(fingerprint.size() - 1);
        c.aki = "JITP:SKI";
        c.ski = "SKI:" + fingerprint;
        c.not_before = Clock::now() - std::chrono::hours(1);
        c.not_after = Clock::now() + std::chrono::hours(24);
        c.fingerprint = fingerprint;
        c.public_key_fingerprint = "KEY:" + fingerprint;
        c.der = {0x30, 0x01, 0x05};
        p.remote_address = "127.0.0.9:4000";
        return p;
    }

    std::vector<devices::CheckOrProvision> batch(
        const std::vector<devices::ConnectionAttempt>& attempts) {
        std::vector<devices::CheckOrProvision> out;
        db_.autocommit([&](Tx& tx) {
            out = devices::check_open_or_provision(
                tx, attempts, "node-b", R"({"kind":"device_connected","node_id":"node-b"})");
        });
        return out;
    }

    devices::CheckOrProvision check_or_provision(const devices::ConnectionAttempt& p) {
        auto out = batch({p});
        EXPECT_EQ(out.size(), 1u);
        return out.at(0);
    }

    std::optional<devices::Provisioned> provision(const devices::ConnectionAttempt& p) {
        return check_or_provision(p).provisioned;
    }

    std::int64_t count(const std::string& sql) {
        std::int64_t n = 0;
        db_.autocommit([&](Tx& tx) { n = tx->exec1(sql)[0].as<std::int64_t>(); });
        return n;
    }

    /// Another connection inserts dev-block and does not commit (until blocker_->commit()): a
    /// statement provisioning dev-block waits for it.
    void hold_dev_block() {
        other_.emplace(test_db_.url());
        blocker_.emplace(*other_);
        blocker_->exec_params0(
            "INSERT INTO devices (org_id, product_id, identifier) VALUES ($1, $2, 'dev-block')",
            org_, product_);
    }

    std::int64_t jitp_ca_ = 0;
    std::optional<pqxx::connection> other_;
    std::optional<pqxx::work> blocker_;
};

TEST_F(Provisioning, APlainFirstConnectionIsProvisionedInOneStatement) {
    EventWatch watch{test_db_.url()};
    ASSERT_TRUE(watch.listening());
    const auto made = provision(request("dev-new", "NEWFP1"));
    ASSERT_TRUE(made.has_value());
    // No device_connected NOTIFY (a new device has no older session to close): the first event
    // on the channel is the one sent after the statement committed.
    db_.autocommit([&](Tx& tx) {
        tx->exec_params1("SELECT pg_notify($1, '{\"kind\":\"after\"}')",
                         std::string(kEventChannel));
    });
    EXPECT_EQ(watch.first_event().value("kind", ""), "after");
    ASSERT_TRUE(made->connection_id.has_value());
    EXPECT_EQ(made->org_id, org_);
    EXPECT_EQ(made->product_id, product_);
    EXPECT_EQ(made->identifier, "dev-new");
    db_.autocommit([&](Tx& tx) {
        const auto d = devices::find_by_id(tx, made->device_id);
        ASSERT_TRUE(d.has_value());
        EXPECT_EQ(d->identifier, "dev-new");
        EXPECT_EQ(d->description, "made on first contact");
        EXPECT_EQ(d->tags, (std::vector<std::string>{"field", "eu"}));
        EXPECT_TRUE(d->connected_at.has_value());
        EXPECT_TRUE(d->first_seen_at.has_value());
        EXPECT_TRUE(d->last_seen_at.has_value());
        const auto cert = devices::find_certificate_by_fingerprint(tx, "NEWFP1");
        ASSERT_TRUE(cert.has_value());
        EXPECT_EQ(cert->device_id, made->device_id);
        EXPECT_EQ(cert->serial, "51");
        EXPECT_EQ(cert->aki, "JITP:SKI");
        const auto conn = tx->exec_params1(
            "SELECT device_id, node_id, remote_address, certificate_fingerprint, status "
            "FROM device_connections WHERE id = $1",
            *made->connection_id);
        EXPECT_EQ(conn[0].as<std::int64_t>(), made->device_id);
        EXPECT_EQ(conn[1].as<std::string>(), "node-b");
        EXPECT_EQ(conn[2].as<std::string>(), "127.0.0.9:4000");
        EXPECT_EQ(conn[3].as<std::string>(), "NEWFP1");
        EXPECT_EQ(conn[4].as<std::string>(), "connected");
        const auto audit = tx->exec1(
            "SELECT actor_type, actor, action, resource, details::text FROM audit_logs "
            "WHERE action = 'device.provisioned'");
        EXPECT_EQ(audit[0].as<std::string>(), "device");
        EXPECT_EQ(audit[1].as<std::string>(), "dev-new");
        EXPECT_EQ(audit[3].as<std::string>(), "dev-new");
        const auto details = nlohmann::json::parse(audit[4].as<std::string>());
        EXPECT_EQ(details.value("product", ""), "demo");
        EXPECT_EQ(details.value("ca_serial", ""), "2002");
        EXPECT_EQ(details.value("certificate_serial", ""), "51");
        EXPECT_EQ(details.value("remote", ""), "127.0.0.9:4000");
        EXPECT_TRUE(tx->exec_params1("SELECT last_used_at IS NOT NULL FROM ca_certificates "
                                     "WHERE id = $1",
                                     jitp_ca_)[0]
                        .as<bool>());
    });
}

// The attempts reach PostgreSQL as JSON text the repository writes itself: every field arrives as
// it was, the peer's names with quotes, backslashes and non-ASCII letters, invalid UTF-8 replaced
// (U+FFFD), every byte value of the DER.
TEST_F(Provisioning, EveryFieldOfAnAttemptReachesTheRowsItWrites) {
    using std::chrono::seconds;
    auto first = request("dev-\"quoted\"\\back\tslash-\xc3\xa9", "FIELDS1");
    first.certificate.der.clear();
    for (int byte = 0; byte < 256; ++byte) {
        first.certificate.der.push_back(static_cast<std::uint8_t>(byte));
    }
    first.certificate.not_before = Clock::time_point(seconds(1700000000));
    first.certificate.not_after = Clock::time_point(seconds(1900000001));
    first.certificate.serial = "-1234567890123456789012345678901234567890";
    first.certificate.ski = "";
    first.remote_address = "[::1]:5000";
    auto second = request("dev-\xff-invalid", "FIELDS2");
    const auto out = batch({first, second});
    ASSERT_EQ(out.size(), 2u);
    ASSERT_TRUE(out[0].provisioned.has_value());
    ASSERT_TRUE(out[1].provisioned.has_value());
    EXPECT_EQ(out[0].provisioned->identifier, first.identifier);
    EXPECT_EQ(out[1].provisioned->identifier, "dev-\xef\xbf\xbd-invalid");
    db_.autocommit([&](Tx& tx) {
        const auto cert = tx->exec_params1(
            "SELECT encode(der, 'hex'), extract(epoch FROM not_before)::bigint, "
            "extract(epoch FROM not_after)::bigint, serial, ski IS NULL, aki, "
            "public_key_fingerprint FROM device_certificates WHERE fingerprint = 'FIELDS1'");
        std::string hex;
        for (int byte = 0; byte < 256; ++byte) {
            static constexpr char kHex[] = "0123456789abcdef";
            hex.push_back(kHex[byte >> 4]);
            hex.push_back(kHex[byte & 0x0f]);
        }
        EXPECT_EQ(cert[0].as<std::string>(), hex);
        EXPECT_EQ(cert[1].as<std::int64_t>(), 1700000000);
        EXPECT_EQ(cert[2].as<std::int64_t>(), 1900000001);
        EXPECT_EQ(cert[3].as<std::string>(), first.certificate.serial);
        EXPECT_TRUE(cert[4].as<bool>());
        EXPECT_EQ(cert[5].as<std::string>(), "JITP:SKI");
        EXPECT_EQ(cert[6].as<std::string>(), "KEY:FIELDS1");
        EXPECT_EQ(tx->exec_params1("SELECT remote_address FROM device_connections WHERE id = $1",
                                   *out[0].provisioned->connection_id)[0]
                      .as<std::string>(),
                  "[::1]:5000");
        EXPECT_EQ(tx->exec1("SELECT count(*) FROM devices WHERE identifier = "
                            "'dev-\"quoted\"\\back' || chr(9) || 'slash-\xc3\xa9'")[0]
                      .as<std::int64_t>(),
                  1);
    });
}

TEST_F(Provisioning, AnythingButThePlainCaseIsLeftToTheTransaction) {
    const auto devices_before = count("SELECT count(*) FROM devices");
    const auto audit_before = count("SELECT count(*) FROM audit_logs");
    // The CA has no JITP profile.
    EXPECT_FALSE(provision(request("dev-x", "XFP1", ca_)).has_value());
    // The identifier exists (dev-1), also once deleted.
    EXPECT_FALSE(provision(request("dev-1", "XFP2")).has_value());
    db_.run([&](Tx& tx) { devices::soft_delete(tx, device_); });
    EXPECT_FALSE(provision(request("dev-1", "XFP3")).has_value());
    // The certificate is stored already (its device is deleted: not opened either).
    EXPECT_FALSE(provision(request("dev-y", "DEVFP")).has_value());
    // No common name.
    EXPECT_FALSE(provision(request("", "XFP6")).has_value());
    // A certificate with the same public key is stored in the organization (rotation).
    auto same_key = request("dev-z", "XFP4");
    same_key.certificate.public_key_fingerprint = "KEY:DEVFP";
    EXPECT_FALSE(provision(same_key).has_value());
    // A CA of another organization.
    auto other = request("dev-w", "XFP5");
    other.org_id = other_org_;
    EXPECT_FALSE(provision(other).has_value());

    EXPECT_EQ(count("SELECT count(*) FROM devices"), devices_before);
    EXPECT_EQ(count("SELECT count(*) FROM audit_logs"), audit_before);
    EXPECT_EQ(count("SELECT count(*) FROM device_connections"), 0);
}

TEST_F(Provisioning, AKnownCertificateIsOpenedAsByCheckAndOpenWithItsEvent) {
    const auto made = provision(request("dev-k", "KNOWNFP1"));
    ASSERT_TRUE(made.has_value());
    ASSERT_TRUE(made->connection_id.has_value());
    EventWatch watch{test_db_.url()};
    ASSERT_TRUE(watch.listening());
    const auto again = check_or_provision(request("dev-k", "KNOWNFP1"));
    EXPECT_FALSE(again.provisioned.has_value());
    ASSERT_TRUE(again.check.certificate.has_value());
    ASSERT_TRUE(again.check.certificate->device.has_value());
    EXPECT_EQ(again.check.certificate->device->id, made->device_id);
    ASSERT_TRUE(again.check.connection_id.has_value());
    EXPECT_NE(*again.check.connection_id, *made->connection_id);
    // A known device's connection closes its older sessions on every node: it NOTIFYs.
    const nlohmann::json event = watch.first_event();
    ASSERT_TRUE(event.is_object()) << "no notification arrived";
    EXPECT_EQ(event.value("kind", ""), "device_connected");
    EXPECT_EQ(event.value("device_id", std::int64_t{0}), made->device_id);
    EXPECT_EQ(event.value("connection_id", std::int64_t{0}), *again.check.connection_id);
    EXPECT_EQ(count("SELECT count(*) FROM devices WHERE identifier = 'dev-k'"), 1);
    EXPECT_EQ(count("SELECT count(*) FROM device_connections WHERE certificate_fingerprint = "
                    "'KNOWNFP1' AND status = 'connected'"),
              2);
}

TEST_F(Provisioning, TheGenericPlanMadeOnNearlyEmptyTablesScansNoDeviceTableWhole) {
    // A pooled connection keeps the generic plan made at a statement's sixth execution; made on
    // nearly empty tables, an unfenced plan scans devices or their certificates whole for every
    // batch, however large the fleet has grown since. A known certificate (its connection and
    // device updated) and a new device (JITP), in one statement, with the generic plan.
    const auto made = provision(request("dev-plan", "PLANFP1"));
    ASSERT_TRUE(made.has_value());
    db_.run([&](Tx& tx) {
        tx->exec0("SET LOCAL plan_cache_mode = force_generic_plan");
        const std::string scans =
            "SELECT pg_stat_get_xact_numscans('devices'::regclass) + "
            "pg_stat_get_xact_numscans('device_certificates'::regclass) + "
            "pg_stat_get_xact_numscans('device_connections'::regclass)";
        const auto before = tx->exec1(scans)[0].as<std::int64_t>();
        const auto out = devices::check_open_or_provision(
            tx, {request("dev-plan", "PLANFP1"), request("dev-plan-new", "PLANFP2")}, "node-b",
            R"({"kind":"device_connected","node_id":"node-b"})");
        EXPECT_EQ(tx->exec1(scans)[0].as<std::int64_t>(), before) << "sequential scans";
        ASSERT_EQ(out.size(), 2u);
        EXPECT_TRUE(out[0].check.connection_id.has_value());
        EXPECT_TRUE(out[1].provisioned.has_value());
        EXPECT_EQ(tx->exec_params1("SELECT connected_at >= now() FROM devices WHERE id = $1",
                                   made->device_id)[0]
                      .as<bool>(),
                  true)
            << "the known device's row was updated";
    });
}

TEST_F(Provisioning, ProvisionsExactlyWhenTheCrlRuleAdmits) {
    // Every CRL state the rule reads, on the JITP CA: a new device is created only when
    // crl_refusal (C++) finds nothing to refuse in the state the statement read.
    int provisioned = 0;
    int refused = 0;
    int n = 0;
    for (const std::string policy : {"accept", "refuse"}) {
        for (const std::string crl_state : {"none", "current", "expired"}) {
            for (const std::string serial : {"77", "78"}) {
                set_crl_state(jitp_ca_, policy, crl_state);
                const auto what = policy + "/" + crl_state + "/serial " + serial;
                const auto id = "crl-" + std::to_string(++n);
                auto p = request(id, "CRLFP" + std::to_string(n));
                p.certificate.serial = serial;
                const auto got = check_or_provision(p);
                const auto refusal = managed_ca::crl_refusal(got.check.crl);
                EXPECT_FALSE(got.check.certificate.has_value()) << what;
                EXPECT_FALSE(got.check.connection_id.has_value()) << what;
                EXPECT_EQ(got.provisioned.has_value(), !refusal.has_value()) << what;
                EXPECT_EQ(count("SELECT count(*) FROM devices WHERE identifier = '" + id + "'"),
                          refusal ? 0 : 1)
                    << what;
                (refusal ? refused : provisioned) += 1;
            }
        }
    }
    // As CheckAndOpenAgreesWithCrlRefusalOnEveryCrlState: 5 admitted, 7 refused.
    EXPECT_EQ(provisioned, 5);
    EXPECT_EQ(refused, 7);
}

TEST_F(Provisioning, OneStatementDecidesEveryAttemptOfABatchInOrder) {
    // dev-1 (DEVFP, CA ca_) is known; dev-2 has a revoked certificate; dev-3 exists without
    // certificates (not plain: the transaction's case).
    std::int64_t revoked_device = 0;
    db_.run([&](Tx& tx) {
        revoked_device = devices::create_if_missing(tx, org_, product_, "dev-2", "", {}).id;
        tx->exec_params0(
            "INSERT INTO device_certificates (org_id, device_id, serial, not_before, not_after, "
            "fingerprint, public_key_fingerprint, der, revoked_at) VALUES ($1, $2, '88', now(), "
            "now() + interval '1 day', 'REVFP', 'KEY:REVFP', '\\x3000', now())",
            org_, revoked_device);
        devices::create_if_missing(tx, org_, product_, "dev-3", "", {});
    });
    auto known = request("dev-1", "DEVFP", ca_);
    known.certificate.serial = "77";
    auto revoked = request("dev-2", "REVFP", ca_);
    const auto fresh = request("dev-new-1", "BATCHFP1");
    const auto registered = request("dev-3", "BATCHFP3");
    auto no_jitp = request("dev-new-2", "BATCHFP2");
    no_jitp.jitp = false;
    const auto fresh2 = request("dev-new-4", "BATCHFP4");
    EventWatch watch{test_db_.url()};
    ASSERT_TRUE(watch.listening());

    const auto out = batch({known, revoked, fresh, registered, no_jitp, fresh2});
    ASSERT_EQ(out.size(), 6u);
    // Known: opened, with its NOTIFY.
    ASSERT_TRUE(out[0].check.certificate.has_value());
    EXPECT_EQ(out[0].check.certificate->device->id, device_);
    ASSERT_TRUE(out[0].check.connection_id.has_value());
    EXPECT_FALSE(out[0].provisioned.has_value());
    // Revoked: found, not opened.
    ASSERT_TRUE(out[1].check.certificate.has_value());
    EXPECT_TRUE(out[1].check.certificate->revoked);
    EXPECT_FALSE(out[1].check.connection_id.has_value());
    EXPECT_FALSE(out[1].provisioned.has_value());
    // New devices: provisioned, each with its own connection.
    for (const std::size_t n : {std::size_t{2}, std::size_t{5}}) {
        ASSERT_TRUE(out[n].provisioned.has_value()) << n;
        EXPECT_FALSE(out[n].check.certificate.has_value()) << n;
        ASSERT_TRUE(out[n].provisioned->connection_id.has_value()) << n;
        EXPECT_EQ(out[n].provisioned->product_id, product_) << n;
    }
    EXPECT_EQ(out[2].provisioned->identifier, "dev-new-1");
    EXPECT_EQ(out[5].provisioned->identifier, "dev-new-4");
    EXPECT_NE(out[2].provisioned->device_id, out[5].provisioned->device_id);
    EXPECT_NE(*out[2].provisioned->connection_id, *out[5].provisioned->connection_id);
    // A registered device without certificates, and an attempt not to provision: left to the
    // caller.
    for (const std::size_t n : {std::size_t{3}, std::size_t{4}}) {
        EXPECT_FALSE(out[n].provisioned.has_value()) << n;
        EXPECT_FALSE(out[n].check.certificate.has_value()) << n;
        EXPECT_FALSE(out[n].check.connection_id.has_value()) << n;
    }
    EXPECT_EQ(count("SELECT count(*) FROM devices WHERE identifier = 'dev-new-2'"), 0);
    // Each connection row belongs to its attempt's device and certificate.
    db_.autocommit([&](Tx& tx) {
        for (const auto& [id, device, fingerprint] :
             {std::tuple{*out[0].check.connection_id, device_, std::string("DEVFP")},
              std::tuple{*out[2].provisioned->connection_id, out[2].provisioned->device_id,
                         std::string("BATCHFP1")},
              std::tuple{*out[5].provisioned->connection_id, out[5].provisioned->device_id,
                         std::string("BATCHFP4")}}) {
            const auto row = tx->exec_params1(
                "SELECT device_id, certificate_fingerprint, node_id FROM device_connections "
                "WHERE id = $1",
                id);
            EXPECT_EQ(row[0].as<std::int64_t>(), device) << fingerprint;
            EXPECT_EQ(row[1].as<std::string>(), fingerprint);
            EXPECT_EQ(row[2].as<std::string>(), "node-b");
        }
    });
    EXPECT_EQ(count("SELECT count(*) FROM device_connections"), 3);
    EXPECT_EQ(count("SELECT count(*) FROM audit_logs WHERE action = 'device.provisioned'"), 2);
    // Only the known certificate's connection NOTIFYs.
    const nlohmann::json event = watch.first_event();
    ASSERT_TRUE(event.is_object()) << "no notification arrived";
    EXPECT_EQ(event.value("device_id", std::int64_t{0}), device_);
    db_.autocommit([&](Tx& tx) {
        tx->exec_params1("SELECT pg_notify($1, '{\"kind\":\"after\"}')",
                         std::string(kEventChannel));
    });
    EXPECT_EQ(watch.events_until("after"), 1u);
}

using testing::JobThreads;

/// Submits `attempt`; the future holds its answer or the statement's failure.
std::future<devices::CheckOrProvision> submit(ConnectionBatcher& batcher,
                                              devices::ConnectionAttempt attempt) {
    return testing::submit_to(batcher, std::move(attempt));
}

TEST_F(Provisioning, TheBatcherSharesAStatementAmongAttemptsThatArriveTogether) {
    JobThreads pool;
    ConnectionBatcher batcher{db_, "node-b", R"({"kind":"device_connected","node_id":"node-b"})",
                              pool.post()};
    // A connection that has inserted dev-block and not committed: the first batch (dev-block)
    // waits for it, and the attempts arriving meanwhile queue for the next batch.
    hold_dev_block();
    std::vector<devices::ConnectionAttempt> attempts;
    attempts.push_back(request("dev-block", "BLOCKFP"));
    for (int i = 1; i <= 6; ++i) {
        attempts.push_back(request("dev-q" + std::to_string(i), "QFP" + std::to_string(i)));
    }
    // Two attempts with the same fingerprints as others: never in the same batch as those.
    attempts.push_back(request("dev-q1", "QFP1"));
    attempts.push_back(request("dev-q2", "QFP2"));
    std::vector<std::future<devices::CheckOrProvision>> answers;
    answers.push_back(submit(batcher, attempts[0]));
    for (int i = 0; i < 100 && batcher.statements() == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(batcher.statements(), 1u);
    for (std::size_t i = 1; i < attempts.size(); ++i)
        answers.push_back(submit(batcher, attempts[i]));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(batcher.statements(), 1u) << "the others wait for the batch in flight";
    EXPECT_EQ(pool.jobs(), 1u) << "waiting attempts hold no worker thread";
    blocker_->commit();
    std::vector<devices::CheckOrProvision> got;
    for (auto& a : answers) got.push_back(a.get());
    pool.join();

    // dev-block lost to the committed insert; six new devices went in one statement, and the
    // two attempts repeating a fingerprint (whichever of a pair queued second) in a third, where
    // they found their certificates stored and were opened. One job ran the three statements.
    EXPECT_EQ(batcher.statements(), 3u);
    EXPECT_EQ(batcher.attempts(), 9u);
    EXPECT_EQ(pool.jobs(), 1u);
    EXPECT_FALSE(got[0].provisioned.has_value());
    std::set<std::int64_t> devices_made;
    int provisioned = 0;
    for (std::size_t i = 1; i <= 8; ++i) {
        if (!got[i].provisioned) continue;
        ++provisioned;
        EXPECT_EQ(got[i].provisioned->identifier, attempts[i].identifier);
        EXPECT_TRUE(got[i].provisioned->connection_id.has_value()) << i;
        devices_made.insert(got[i].provisioned->device_id);
    }
    EXPECT_EQ(provisioned, 6);
    EXPECT_EQ(devices_made.size(), 6u);
    for (const auto& [first, second] : {std::pair{1, 7}, std::pair{2, 8}}) {
        const auto& a = got[first];
        const auto& b = got[second];
        ASSERT_NE(a.provisioned.has_value(), b.provisioned.has_value()) << first;
        const auto& made = a.provisioned ? a : b;
        const auto& known = a.provisioned ? b : a;
        ASSERT_TRUE(known.check.certificate.has_value()) << first;
        EXPECT_EQ(known.check.certificate->device->id, made.provisioned->device_id);
        EXPECT_TRUE(known.check.connection_id.has_value()) << first;
    }
    EXPECT_EQ(count("SELECT count(*) FROM devices WHERE identifier LIKE 'dev-q%'"), 6);

    // Once the queue is empty the job ends; the next attempt starts another.
    auto later = submit(batcher, request("dev-later", "LATERFP"));
    EXPECT_TRUE(later.get().provisioned.has_value());
    EXPECT_EQ(pool.jobs(), 2u);
    EXPECT_EQ(batcher.statements(), 4u);
}

TEST_F(Provisioning, TheBatcherFailsOnlyTheAttemptAtFault) {
    JobThreads pool;
    ConnectionBatcher batcher{db_, "node-b", R"({"kind":"device_connected","node_id":"node-b"})",
                              pool.post()};
    hold_dev_block();
    auto broken = request("dev-broken", "BROKENFP");
    broken.certificate.fingerprint.clear();  // the statement cannot take it
    const std::vector<devices::ConnectionAttempt> attempts = {request("dev-block", "BLOCKFP"),
                                                              request("dev-ok-1", "OKFP1"), broken,
                                                              request("dev-ok-2", "OKFP2")};
    std::vector<std::future<devices::CheckOrProvision>> answers;
    answers.push_back(submit(batcher, attempts[0]));
    for (int i = 0; i < 100 && batcher.statements() == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (std::size_t i = 1; i < attempts.size(); ++i)
        answers.push_back(submit(batcher, attempts[i]));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    blocker_->commit();
    std::vector<std::optional<devices::CheckOrProvision>> got(attempts.size());
    std::vector<std::string> errors(attempts.size());
    for (std::size_t i = 0; i < answers.size(); ++i) {
        try {
            got[i] = answers[i].get();
        } catch (const std::exception& e) {
            errors[i] = e.what();
        }
    }
    EXPECT_EQ(batcher.statements(), 2u);
    EXPECT_TRUE(errors[0].empty() && errors[1].empty() && errors[3].empty());
    EXPECT_NE(errors[2], "");
    for (const std::size_t i : {std::size_t{1}, std::size_t{3}}) {
        ASSERT_TRUE(got[i].has_value() && got[i]->provisioned.has_value()) << i;
        EXPECT_TRUE(got[i]->provisioned->connection_id.has_value()) << i;
    }
    EXPECT_EQ(count("SELECT count(*) FROM devices WHERE identifier LIKE 'dev-ok-%'"), 2);
    EXPECT_EQ(count("SELECT count(*) FROM devices WHERE identifier = 'dev-broken'"), 0);
}

TEST_F(Provisioning, ABatcherWhosePoolRefusedAJobStillStartsTheNext) {
    JobThreads pool;
    int posts = 0;
    ConnectionBatcher batcher{db_, "node-b", R"({"kind":"device_connected","node_id":"node-b"})",
                              [&](std::function<void()> job) {
                                  if (++posts == 1) throw std::bad_alloc();
                                  pool.post()(std::move(job));
                              }};
    bool called = false;
    EXPECT_THROW(batcher.submit(request("dev-refused", "REFUSEDFP"),
                                [&](std::exception_ptr, std::optional<devices::CheckOrProvision>) {
                                    called = true;
                                }),
                 std::bad_alloc);
    auto next = submit(batcher, request("dev-next", "NEXTFP"));
    ASSERT_EQ(next.wait_for(std::chrono::seconds(10)), std::future_status::ready)
        << "no job was started for the next attempt";
    const auto answer = next.get();
    pool.join();
    EXPECT_FALSE(called) << "the refused attempt was not queued";
    ASSERT_TRUE(answer.provisioned.has_value());
    EXPECT_EQ(answer.provisioned->identifier, "dev-next");
    EXPECT_EQ(batcher.attempts(), 1u);
    EXPECT_EQ(count("SELECT count(*) FROM devices WHERE identifier = 'dev-refused'"), 0);
}

TEST_F(Provisioning, LosesToAConcurrentFirstConnectionOfTheSameDevice) {
    // Another connection has inserted dev-race and not committed yet: the statement waits for
    // it, then creates nothing.
    pqxx::connection other{test_db_.url()};
    pqxx::work tx{other};
    tx.exec_params0(
        "INSERT INTO devices (org_id, product_id, identifier) VALUES ($1, $2, 'dev-race')", org_,
        product_);
    std::optional<devices::Provisioned> made{devices::Provisioned{}};
    std::thread racer([&] { made = provision(request("dev-race", "RACEFP1")); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    tx.commit();
    racer.join();
    EXPECT_FALSE(made.has_value());
    EXPECT_EQ(count("SELECT count(*) FROM devices WHERE identifier = 'dev-race'"), 1);
    EXPECT_EQ(count("SELECT count(*) FROM audit_logs WHERE action = 'device.provisioned'"), 0);
}

TEST_F(Provisioning, KeepsTheDeviceWhenAConcurrentConnectionStoredTheCertificateFirst) {
    // Another connection has stored the same certificate (for dev-1) and not committed yet:
    // the device is created, the certificate is not, and no connection is opened.
    pqxx::connection other{test_db_.url()};
    pqxx::work tx{other};
    tx.exec_params0(
        "INSERT INTO device_certificates (org_id, device_id, serial, not_before, not_after, "
        "fingerprint, public_key_fingerprint, der) VALUES ($1, $2, '99', now(), "
        "now() + interval '1 day', 'RACEFP2', 'KEY:OTHER', '\\x3000')",
        org_, device_);
    std::optional<devices::Provisioned> made;
    std::thread racer([&] { made = provision(request("dev-late", "RACEFP2")); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    tx.commit();
    racer.join();
    ASSERT_TRUE(made.has_value());
    EXPECT_FALSE(made->connection_id.has_value());
    EXPECT_EQ(count("SELECT count(*) FROM devices WHERE identifier = 'dev-late'"), 1);
    EXPECT_EQ(count("SELECT count(*) FROM device_certificates WHERE fingerprint = 'RACEFP2'"), 1);
    EXPECT_EQ(count("SELECT count(*) FROM device_connections"), 0);
}

TEST_F(Provisioning, CreateIfMissingTellsWhetherItInsertedTheDevice) {
    // The transaction path's JITP audits only when it inserted the row itself: two connections
    // racing through it must not both record device.provisioned.
    bool created = false;
    std::int64_t id = 0;
    db_.run([&](Tx& tx) {
        id = devices::create_if_missing(tx, org_, product_, "dev-once", "", {}, &created).id;
    });
    EXPECT_TRUE(created);
    db_.run([&](Tx& tx) {
        EXPECT_EQ(devices::create_if_missing(tx, org_, product_, "dev-once", "", {}, &created).id,
                  id);
    });
    EXPECT_FALSE(created);

    // A concurrent connection inserted it and commits while this one waits on the key.
    pqxx::connection other{test_db_.url()};
    pqxx::work tx{other};
    tx.exec_params0(
        "INSERT INTO devices (org_id, product_id, identifier) VALUES ($1, $2, 'dev-twice')", org_,
        product_);
    created = true;
    std::int64_t seen = 0;
    std::thread racer([&] {
        db_.run([&](Tx& t) {
            seen = devices::create_if_missing(t, org_, product_, "dev-twice", "", {}, &created).id;
        });
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    tx.commit();
    racer.join();
    EXPECT_FALSE(created);
    EXPECT_GT(seen, 0);
}

}  // namespace
}  // namespace otahub::db
