#include "server/device/presence.hpp"

#include <spdlog/spdlog.h>

#include "db/repositories/devices_repository.hpp"

namespace otahub::device {

Presence::Presence(net::asio::io_context& io, net::asio::thread_pool& workers, db::Database& db,
                   std::string node_id)
    : io_(io), workers_(workers), db_(db), node_id_(std::move(node_id)), timer_(io) {}

void Presence::start_blocking() {
    db_.run([&](db::Tx& tx) {
        const auto stale = db::devices::disconnect_node(tx, node_id_, "node restarted");
        db::devices::heartbeat_node(tx, node_id_);
        const auto swept = db::devices::sweep_dead_nodes(tx);
        if (stale + swept > 0) {
            spdlog::info(
                "presence: marked {} stale session(s) of this node and {} of dead nodes "
                "disconnected",
                stale, swept);
        }
    });
}

void Presence::start() {
    net::asio::co_spawn(timer_.get_executor(), loop(), [](std::exception_ptr error) {
        if (!error) return;
        try {
            std::rethrow_exception(error);
        } catch (const std::exception& e) {
            spdlog::error("presence loop ended: {}", e.what());
        }
    });
}

void Presence::stop() {
    stopped_ = true;
    net::asio::post(timer_.get_executor(), [this] { timer_.cancel(); });
}

void Presence::shutdown_blocking() {
    try {
        flush();
        db_.run([&](db::Tx& tx) { db::devices::disconnect_node(tx, node_id_, "node stopped"); });
    } catch (const std::exception& e) {
        spdlog::warn("presence: shutdown bookkeeping failed: {}", e.what());
    }
}

void Presence::mark_seen(std::int64_t device_id) {
    const std::lock_guard lock{mutex_};
    seen_.insert(device_id);
}

void Presence::flush() {
    std::vector<std::int64_t> ids;
    {
        const std::lock_guard lock{mutex_};
        ids.assign(seen_.begin(), seen_.end());
        seen_.clear();
    }
    if (ids.empty()) return;
    db_.run([&](db::Tx& tx) { db::devices::touch_last_seen(tx, ids); });
}

void Presence::tick(std::uint64_t n) {
    db_.run([&](db::Tx& tx) { db::devices::heartbeat_node(tx, node_id_); });
    if (n % 2 == 0) flush();
    if (n % 3 == 0) {
        const auto swept =
            db_.transact([](db::Tx& tx) { return db::devices::sweep_dead_nodes(tx); });
        if (swept > 0) {
            spdlog::info("presence: marked {} session(s) of dead nodes disconnected", swept);
        }
    }
}

net::awaitable<void> Presence::loop() {
    for (std::uint64_t n = 1; !stopped_; ++n) {
        timer_.expires_after(kNodeHeartbeatInterval);
        auto [ec] = co_await timer_.async_wait(net::kAsTuple);
        if (stopped_ || ec == net::asio::error::operation_aborted) break;
        try {
            auto work = [this, n] { tick(n); };
            co_await net::run_blocking(workers_, std::move(work));
        } catch (const std::exception& e) {
            spdlog::warn("presence: heartbeat failed: {}", e.what());
        }
    }
}

}  // namespace otahub::device
