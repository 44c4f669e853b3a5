#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "server/net/asio.hpp"
#include "server/sim/identity.hpp"
#include "server/sim/options.hpp"
#include "server/sim/reporter.hpp"

/// One simulated NervesHubLink device: connect, join, heartbeat, take updates, reconnect.
namespace otahub::sim {

/// Spaces new connections of all devices `1/rate` apart; thread-safe.
class Pacer {
  public:
    /// At most `per_second` connection attempts per second (<= 0: unlimited).
    explicit Pacer(double per_second);
    /// When the caller may start its attempt (reserves that slot).
    std::chrono::steady_clock::time_point next_slot();

  private:
    std::mutex mutex_;
    std::chrono::steady_clock::duration step_;
    std::chrono::steady_clock::time_point next_{};
};

/// What all devices of a run share, read-only once the run starts (Pacer and Reporter are
/// thread-safe).
struct Shared {
    const Options& options;
    Reporter& reporter;
    net::ssl::context& device_tls;    ///< verifies the hub; the client cert is set per SSL
    net::ssl::context& download_tls;  ///< verifies the firmware server
    std::vector<net::tcp::endpoint> endpoints;    ///< the device endpoint, resolved once
    std::vector<net::asio::ip::address> sources;  ///< local addresses, round-robin
    Pacer pacer;
    std::atomic<bool> stopping{false};
};

struct Connection;

/// A simulated device. Everything it does runs on its own strand; start() and stop() may be
/// called from any thread.
class SimDevice : public std::enable_shared_from_this<SimDevice> {
  public:
    /// Device number `index` of the run, with its identity (which must outlive it).
    SimDevice(Shared& shared, const Identity& identity, std::size_t index,
              net::asio::any_io_executor executor);
    /// Starts the connect/join/reconnect loop; `done` is called on the strand when it ends.
    void start(std::function<void()> done);
    /// Leaves: closes the session (with a websocket close) and ends the loop.
    void stop();

  private:
    friend struct Connection;

    net::awaitable<void> run();
    net::awaitable<bool> session(std::shared_ptr<Connection> conn);
    net::awaitable<void> connect(Connection& conn);
    net::awaitable<void> reader(std::shared_ptr<Connection> conn);
    net::awaitable<void> writer(std::shared_ptr<Connection> conn);
    net::awaitable<void> heartbeat(std::shared_ptr<Connection> conn);
    net::awaitable<void> update(nlohmann::json payload);
    net::awaitable<void> sleep(std::chrono::steady_clock::duration delay);
    void on_message(Connection& conn, std::string_view text);
    void send_device(std::string event, nlohmann::json payload);
    nlohmann::json join_payload() const;
    std::chrono::milliseconds jitter();

    Shared& shared_;
    const Identity& identity_;
    std::size_t index_;
    net::asio::strand<net::asio::any_io_executor> strand_;
    net::asio::steady_timer timer_;
    std::shared_ptr<Connection> current_;
    std::minstd_rand random_;
    std::string fw_uuid_;
    std::string fw_version_;
    std::optional<std::string> downloading_uuid_;
    bool updating_ = false;
    bool reconnect_soon_ = false;  // the last session ended by our choice (update, reboot)
    std::string end_reason_;
};

}  // namespace otahub::sim
