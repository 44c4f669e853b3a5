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
        write_closes();
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

void Presence::connection_closed(std::int64_t connection_id, std::string reason) {
    // Text the database takes as is: no NUL (jsonb refuses \u0000), bounded.
    std::erase(reason, '\0');
    if (reason.size() > kMaxCloseReasonBytes) reason.resize(kMaxCloseReasonBytes);
    {
        const std::lock_guard lock{mutex_};
        closes_.push({connection_id, std::move(reason), std::chrono::system_clock::now()});
    }
    start_closing(false);
}

std::size_t Presence::pending_closes() const {
    const std::lock_guard lock{mutex_};
    return closes_.size();
}

void Presence::start_closing(bool retry) {
    {
        const std::lock_guard lock{mutex_};
        if (closing_ || closes_.empty() || (close_failed_ && !retry)) return;
        closing_ = true;
        close_failed_ = false;
    }
    net::asio::post(workers_, [this] { drain_closes(); });
}

void Presence::drain_closes() {
    bool written = true;
    for (;;) {
        if (written) written = write_close_batch();
        const std::lock_guard lock{mutex_};
        if (!written || closes_.empty()) {
            closing_ = false;
            return;
        }
    }
}

bool Presence::write_closes() {
    for (;;) {
        {
            const std::lock_guard lock{mutex_};
            if (closes_.empty()) return true;
        }
        if (!write_close_batch()) return false;
    }
}

bool Presence::write_close_batch() {
    std::vector<db::devices::ConnectionClose> batch;
    std::size_t dropped = 0;
    {
        const std::lock_guard lock{mutex_};
        batch = closes_.take(kCloseBatch);
        dropped = closes_.take_dropped();
    }
    if (dropped > 0) {
        spdlog::warn(
            "presence: dropped the {} oldest session end(s) kept while the database did not "
            "answer (at most {} are kept)",
            dropped, kMaxPendingCloses);
    }
    if (batch.empty()) return true;
    try {
        // One statement, atomic on its own: no BEGIN and COMMIT round trips. A deadlock or a
        // serialization failure comes back as Unavailable: the batch is kept for the next try.
        db_.autocommit([&](db::Tx& tx) { db::devices::close_connections(tx, batch); });
        return true;
    } catch (const db::Unavailable& e) {
        spdlog::warn("presence: could not record {} session end(s), kept for the next try: {}",
                     batch.size(), e.what());
        const std::lock_guard lock{mutex_};
        closes_.put_back(std::move(batch));
        close_failed_ = true;
        return false;
    } catch (const std::exception& e) {
        // Not the link: trying again would fail the same way and hold up the ends behind them.
        spdlog::error("presence: could not record {} session end(s), dropped: {}", batch.size(),
                      e.what());
        return true;
    }
}

void Presence::tick(std::uint64_t n) {
    start_closing(true);
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
