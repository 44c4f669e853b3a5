// The LISTEN connection's liveness probe (db/notifications.cpp): a listener that only waits is
// never woken by a black-holed link, so after `probe_interval` without a notification it asks the
// server something and drops the connection when no answer comes within `probe_timeout`. Runs the
// listener through an in-process TCP proxy that can stop forwarding (connections stay open,
// nothing is delivered), as a dead link or a hung server would.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "db/notifications.hpp"
#include "tests/db/test_database.hpp"

namespace otahub::db {
namespace {

using namespace std::chrono_literals;

/// A TCP proxy on 127.0.0.1 forwarding to 127.0.0.1:`target_port` on one thread. While black-holed
/// it accepts and connects new connections but forwards nothing in either direction.
class BlackholeProxy {
  public:
    explicit BlackholeProxy(int target_port) : target_port_(target_port) {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in address = loopback(0);
        socklen_t length = sizeof address;
        if (listen_fd_ < 0 ||
            ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
            ::listen(listen_fd_, 16) != 0 ||
            ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
            throw std::runtime_error("cannot listen on 127.0.0.1");
        }
        port_ = ntohs(address.sin_port);
        thread_ = std::thread([this] { run(); });
    }
    ~BlackholeProxy() {
        stopping_ = true;
        thread_.join();
        for (const auto& [a, b] : pairs_) {
            ::close(a);
            ::close(b);
        }
        ::close(listen_fd_);
    }
    BlackholeProxy(const BlackholeProxy&) = delete;
    BlackholeProxy& operator=(const BlackholeProxy&) = delete;

    int port() const { return port_; }
    /// Returns once the proxy thread works in the new mode (nothing in flight is forwarded after).
    void set_blackhole(bool on) {
        blackhole_ = on;
        const std::uint64_t asked = ++generation_;
        while (applied_.load() < asked) std::this_thread::sleep_for(1ms);
    }

  private:
    static sockaddr_in loopback(int port) {
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address.sin_port = htons(static_cast<std::uint16_t>(port));
        return address;
    }

    void run() {
        while (!stopping_) {
            const std::uint64_t generation = generation_.load();
            const bool forwarding = !blackhole_;
            applied_ = generation;
            std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
            if (forwarding) {
                for (const auto& [a, b] : pairs_) {
                    fds.push_back({a, POLLIN, 0});
                    fds.push_back({b, POLLIN, 0});
                }
            }
            if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
            if (fds[0].revents & POLLIN) accept_one();
            if (!forwarding) continue;
            std::vector<std::size_t> dead;
            for (std::size_t i = 1; i < fds.size(); ++i) {
                if (fds[i].revents == 0) continue;
                const std::size_t pair = (i - 1) / 2;
                const auto [a, b] = pairs_[pair];
                const int from = (i % 2 == 1) ? a : b;
                const int to = from == a ? b : a;
                char buffer[65536];
                const ssize_t got = ::read(from, buffer, sizeof buffer);
                if (got <= 0 || !write_all(to, buffer, static_cast<std::size_t>(got))) {
                    dead.push_back(pair);
                }
            }
            for (auto it = dead.rbegin(); it != dead.rend(); ++it) {
                if (*it >= pairs_.size()) continue;
                ::close(pairs_[*it].first);
                ::close(pairs_[*it].second);
                pairs_.erase(pairs_.begin() + static_cast<long>(*it));
            }
        }
    }

    void accept_one() {
        const int client = ::accept(listen_fd_, nullptr, nullptr);
        if (client < 0) return;
        const int server = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in target = loopback(target_port_);
        if (server < 0 ||
            ::connect(server, reinterpret_cast<sockaddr*>(&target), sizeof target) != 0) {
            ::close(client);
            if (server >= 0) ::close(server);
            return;
        }
        pairs_.emplace_back(client, server);
    }

    static bool write_all(int fd, const char* data, std::size_t size) {
        while (size > 0) {
            const ssize_t sent = ::write(fd, data, size);
            if (sent <= 0) return false;
            data += sent;
            size -= static_cast<std::size_t>(sent);
        }
        return true;
    }

    int target_port_;
    int listen_fd_ = -1;
    int port_ = 0;
    std::atomic<bool> stopping_{false};
    std::atomic<bool> blackhole_{false};
    std::atomic<std::uint64_t> generation_{0};  // mode changes asked for
    std::atomic<std::uint64_t> applied_{0};     // mode changes the proxy thread works with
    std::vector<std::pair<int, int>> pairs_;    // (client, server), used on the proxy thread only
    std::thread thread_;
};

/// The test database's URL with its host and port replaced by the proxy's, and a connect timeout
/// so that reconnection attempts through the black hole end.
std::string through(const std::string& url, int port) {
    const auto at = url.find('@');
    const auto host_start = at == std::string::npos ? url.find("://") + 3 : at + 1;
    const auto path = url.find('/', host_start);
    const auto query = url.find('?', path);
    return url.substr(0, host_start) + "127.0.0.1:" + std::to_string(port) +
           url.substr(path, query == std::string::npos ? std::string::npos : query - path) +
           "?connect_timeout=2";
}

int port_of(const std::string& url) {
    const auto at = url.find('@');
    const auto host_start = at == std::string::npos ? url.find("://") + 3 : at + 1;
    const auto colon = url.find(':', host_start);
    const auto path = url.find('/', host_start);
    if (colon == std::string::npos || colon > path) return 5432;
    return std::stoi(url.substr(colon + 1, path - colon - 1));
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
        if (condition()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return condition();
}

class DbNotificationListener : public ::testing::Test {
  protected:
    testing::TestDatabase test_db_;
    BlackholeProxy proxy_{port_of(test_db_.url())};
    const std::string channel_ = "otahub_probe_test";
    std::atomic<int> connections_{0};
    std::mutex mutex_;
    std::vector<std::string> payloads_;

    ListenerOptions options(std::chrono::milliseconds interval, std::chrono::milliseconds timeout) {
        ListenerOptions o;
        o.url = through(test_db_.url(), proxy_.port());
        o.channel = channel_;
        o.min_backoff = 50ms;
        o.max_backoff = 200ms;
        o.probe_interval = interval;
        o.probe_timeout = timeout;
        o.on_connected = [this](bool) { ++connections_; };
        o.on_notification = [this](const std::string& payload) {
            const std::lock_guard lock{mutex_};
            payloads_.push_back(payload);
        };
        return o;
    }

    // NOTIFY straight to the database (not through the proxy).
    void notify(const std::string& payload) {
        pqxx::connection conn{test_db_.url()};
        pqxx::nontransaction tx{conn};
        tx.exec("SELECT pg_notify(" + tx.quote(channel_) + ", " + tx.quote(payload) + ")");
    }

    bool received(const std::string& payload) {
        const std::lock_guard lock{mutex_};
        for (const auto& p : payloads_) {
            if (p == payload) return true;
        }
        return false;
    }
};

TEST_F(DbNotificationListener, HealthyLinkIsProbedWithoutReconnecting) {
    NotificationListener listener{options(100ms, 2s)};
    listener.start();
    ASSERT_TRUE(wait_until([&] { return connections_ == 1; }, 10s));
    std::this_thread::sleep_for(1s);  // about ten probes
    EXPECT_TRUE(listener.connected());
    EXPECT_EQ(connections_, 1);
    notify("after probes");
    EXPECT_TRUE(wait_until([&] { return received("after probes"); }, 5s));
}

TEST_F(DbNotificationListener, BlackHoledLinkIsDroppedAndMadeAgain) {
    NotificationListener listener{options(200ms, 500ms)};
    listener.start();
    ASSERT_TRUE(wait_until([&] { return connections_ == 1 && listener.connected(); }, 10s));

    proxy_.set_blackhole(true);
    // Probe after 200 ms of quiet, no answer in 500 ms: the connection is given up.
    EXPECT_TRUE(wait_until([&] { return !listener.connected(); }, 5s))
        << "the listener did not notice the black hole";
    notify("during the black hole");  // lost for this listener: on_connected reloads instead
    proxy_.set_blackhole(false);

    ASSERT_TRUE(wait_until([&] { return connections_ == 2 && listener.connected(); }, 15s))
        << "the listener did not reconnect once the link was back";
    notify("after the black hole");
    EXPECT_TRUE(wait_until([&] { return received("after the black hole"); }, 5s));
}

TEST_F(DbNotificationListener, WithoutTheProbeABlackHoleGoesUnnoticed) {
    // Why the probe exists: a listener that only waits sees nothing wrong.
    NotificationListener listener{options(0ms, 0ms)};
    listener.start();
    ASSERT_TRUE(wait_until([&] { return connections_ == 1 && listener.connected(); }, 10s));
    proxy_.set_blackhole(true);
    notify("unheard");
    std::this_thread::sleep_for(1500ms);
    EXPECT_TRUE(listener.connected());
    EXPECT_FALSE(received("unheard"));
    proxy_.set_blackhole(false);
    // The link is back and the connection never broke: the held notification arrives late.
    EXPECT_TRUE(wait_until([&] { return received("unheard"); }, 5s));
    EXPECT_EQ(connections_, 1);
}

}  // namespace
}  // namespace otahub::db
