// The pool's client-side deadlines (issue 5, Faults): a database that accepts connections but
// never answers, or a transaction that gets no answer, ends in Unavailable (503) in bounded
// time; while the database is unreachable one caller probes and the others fail at once; the
// pool recovers by itself.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <thread>

#include "db/database.hpp"
#include "db/tx.hpp"
#include "tests/db/test_database.hpp"

namespace otahub::db {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

/// A TCP listener on 127.0.0.1 that never accepts: the kernel completes handshakes into the
/// backlog, so a client connects, sends its startup packet and never hears back (a hung server).
class SilentServer {
  public:
    SilentServer() {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t length = sizeof address;
        if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
            ::listen(fd_, 16) != 0 ||
            ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
            throw std::runtime_error("cannot listen on 127.0.0.1");
        }
        port_ = ntohs(address.sin_port);
    }
    ~SilentServer() { ::close(fd_); }
    SilentServer(const SilentServer&) = delete;
    SilentServer& operator=(const SilentServer&) = delete;

    std::string url() const {
        return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/none";
    }

  private:
    int fd_ = -1;
    int port_ = 0;
};

std::string unavailable_message(Database& db, const std::string& sql) {
    try {
        db.run([&](Tx& tx) { tx->exec(sql); });
    } catch (const Unavailable& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(DbDatabase, ConnectTimeoutIsAddedToTheUrlUnlessItNamesOne) {
    EXPECT_EQ(with_connect_timeout("postgresql://u@h/db", 5s),
              "postgresql://u@h/db?connect_timeout=5");
    EXPECT_EQ(with_connect_timeout("postgres://u@h/db?sslmode=require", 7s),
              "postgres://u@h/db?sslmode=require&connect_timeout=7");
    EXPECT_EQ(with_connect_timeout("host=h dbname=d", 5s), "host=h dbname=d connect_timeout=5");
    EXPECT_EQ(with_connect_timeout("", 5s), "connect_timeout=5");
    // libpq treats 1 as 2; say what it does.
    EXPECT_EQ(with_connect_timeout("host=h", 1s), "host=h connect_timeout=2");
    EXPECT_EQ(with_connect_timeout("postgresql://u@h/db?connect_timeout=30", 5s),
              "postgresql://u@h/db?connect_timeout=30");
    EXPECT_EQ(with_connect_timeout("host=h", 0s), "host=h");
    EXPECT_EQ(Database("postgresql://u@h/db", 1, Timeouts{3s, 1000ms}).url(),
              "postgresql://u@h/db?connect_timeout=3");
}

TEST(DbDatabase, TransactionPastItsDeadlineIsUnavailableAndThePoolRecovers) {
    testing::TestDatabase database;
    Database db{database.url(), 2, Timeouts{5s, 1000ms}};
    db.run([](Tx& tx) { tx->exec("SELECT 1"); });
    EXPECT_FALSE(db.unreachable());

    const auto started = SteadyClock::now();
    const auto message = unavailable_message(db, "SELECT pg_sleep(30)");
    const auto took = SteadyClock::now() - started;
    EXPECT_EQ(message, "database did not answer within 1000 ms");
    EXPECT_LT(took, 20s) << "the caller waited for the statement instead of its deadline";
    EXPECT_TRUE(db.unreachable());

    // The next caller probes with a new connection, which works: the pool is back.
    const auto value = db.transact([](Tx& tx) { return tx->exec1("SELECT 41 + 1")[0].as<int>(); });
    EXPECT_EQ(value, 42);
    EXPECT_FALSE(db.unreachable());
    EXPECT_TRUE(db.ping());
}

TEST(DbDatabase, TransactionsWithinTheDeadlineAreUntouched) {
    testing::TestDatabase database;
    Database db{database.url(), 2, Timeouts{5s, 3000ms}};
    for (int i = 0; i < 50; ++i) db.run([](Tx& tx) { tx->exec("SELECT pg_sleep(0.001)"); });
    EXPECT_FALSE(db.unreachable());
    EXPECT_EQ(db.transact([](Tx& tx) { return tx->exec1("SELECT 7")[0].as<int>(); }), 7);
}

TEST(DbDatabase, SilentServerFailsInTimeAndOneCallerProbesWhileOthersFailAtOnce) {
    SilentServer server;
    Database db{server.url(), 4, Timeouts{2s, 1000ms}};

    const auto started = SteadyClock::now();
    EXPECT_THROW(db.run([](Tx& tx) { tx->exec("SELECT 1"); }), Unavailable);
    EXPECT_LT(SteadyClock::now() - started, 20s) << "connect_timeout did not bound the attempt";
    EXPECT_TRUE(db.unreachable());

    // One caller probes (a new connection attempt, bounded by connect_timeout)...
    auto probe =
        std::async(std::launch::async, [&] { return unavailable_message(db, "SELECT 1"); });
    std::this_thread::sleep_for(300ms);  // the probe's head start (it then waits 2 s)
    while (probe.wait_for(10ms) == std::future_status::timeout) {
        // ...and while it runs, another caller is refused at once instead of waiting its turn.
        const auto message = unavailable_message(db, "SELECT 1");
        if (message == "database unreachable") break;
    }
    EXPECT_EQ(probe.wait_for(0s), std::future_status::timeout)
        << "no caller was refused at once while the probe was under way";
    EXPECT_NE(probe.get().find("database unavailable"), std::string::npos);
    EXPECT_FALSE(db.ping());
}

}  // namespace
}  // namespace otahub::db
