#include "db/notifications.hpp"

#include <spdlog/spdlog.h>

#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "db/tx.hpp"

namespace otahub::db {

void notify(Tx& tx, const std::string& payload) {
    if (payload.size() > kMaxNotifyPayload) {
        throw ApiError(ErrorCode::kInternal, "event payload too large for NOTIFY");
    }
    tx->exec_params("SELECT pg_notify($1, $2)", std::string(kEventChannel), payload);
}

namespace {

class Receiver final : public pqxx::notification_receiver {
  public:
    Receiver(pqxx::connection_base& conn, const std::string& channel,
             const std::function<void(const std::string&)>& callback)
        : pqxx::notification_receiver(conn, channel), callback_(callback) {}

    void operator()(const std::string& payload, int /*backend_pid*/) override {
        if (!callback_) return;
        try {
            callback_(payload);
        } catch (const std::exception& e) {
            spdlog::warn("event handler failed: {}", e.what());
        }
    }

  private:
    const std::function<void(const std::string&)>& callback_;
};

// Runs `SELECT 1` on `conn`; when no answer comes within `timeout`, shuts the socket down (not
// close(): the descriptor stays libpq's) so that the query fails instead of waiting forever.
void probe(pqxx::connection& conn, std::chrono::milliseconds timeout) {
    std::mutex mutex;
    std::condition_variable answered;
    bool done = false;
    std::atomic<bool> fired{false};
    std::thread watchdog;
    if (timeout.count() > 0) {
        watchdog = std::thread([&, socket = conn.sock()] {
            std::unique_lock lock{mutex};
            if (!answered.wait_for(lock, timeout, [&] { return done; })) {
                fired = true;
                ::shutdown(socket, SHUT_RDWR);
            }
        });
    }
    const auto finish = [&] {
        {
            const std::lock_guard lock{mutex};
            done = true;
        }
        answered.notify_all();
        if (watchdog.joinable()) watchdog.join();
    };
    try {
        pqxx::nontransaction tx{conn};
        tx.exec("SELECT 1");
    } catch (...) {
        finish();
        if (fired) {
            throw pqxx::broken_connection("no answer to the liveness probe within " +
                                          std::to_string(timeout.count()) + " ms");
        }
        throw;
    }
    finish();
}

}  // namespace

struct NotificationListener::Impl {
    ListenerOptions options;
    std::thread thread;
    std::atomic<bool> stopping{false};
    std::atomic<bool> connected{false};
    std::mutex mutex;
    std::condition_variable wake;
    bool started = false;

    void sleep_for(std::chrono::milliseconds delay) {
        std::unique_lock lock{mutex};
        wake.wait_for(lock, delay, [this] { return stopping.load(); });
    }

    void run() {
        auto backoff = options.min_backoff;
        bool first = true;
        while (!stopping) {
            try {
                pqxx::connection conn{options.url};
                Receiver receiver{conn, options.channel, options.on_notification};
                // The receiver's LISTEN is issued lazily; a trivial query makes it take effect
                // before on_connected reloads state, so nothing published after the reload is
                // missed.
                {
                    pqxx::nontransaction tx{conn};
                    tx.exec("SET application_name = 'otahub_listener'");
                }
                conn.get_notifs();
                connected = true;
                backoff = options.min_backoff;
                if (!first) spdlog::info("event listener reconnected");
                if (options.on_connected) {
                    try {
                        options.on_connected(first);
                    } catch (const std::exception& e) {
                        spdlog::warn("event listener on_connected failed: {}", e.what());
                    }
                }
                first = false;
                auto heard = std::chrono::steady_clock::now();
                while (!stopping) {
                    if (conn.await_notification(0, 250'000) > 0) {
                        heard = std::chrono::steady_clock::now();
                    }
                    if (!conn.is_open()) throw pqxx::broken_connection("connection lost");
                    if (options.probe_interval.count() > 0 &&
                        std::chrono::steady_clock::now() - heard >= options.probe_interval) {
                        probe(conn, options.probe_timeout);
                        heard = std::chrono::steady_clock::now();
                    }
                }
            } catch (const std::exception& e) {
                connected = false;
                if (stopping) break;
                spdlog::warn("event listener disconnected ({}); retrying in {} ms", e.what(),
                             backoff.count());
                sleep_for(backoff);
                backoff = std::min(backoff * 2, options.max_backoff);
            }
        }
        connected = false;
    }
};

NotificationListener::NotificationListener(ListenerOptions options)
    : impl_(std::make_unique<Impl>()) {
    impl_->options = std::move(options);
}

NotificationListener::~NotificationListener() { stop(); }

void NotificationListener::start() {
    std::lock_guard lock{impl_->mutex};
    if (impl_->started) return;
    impl_->started = true;
    impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

void NotificationListener::stop() {
    {
        std::lock_guard lock{impl_->mutex};
        impl_->stopping = true;
    }
    impl_->wake.notify_all();
    if (impl_->thread.joinable()) impl_->thread.join();
}

bool NotificationListener::connected() const { return impl_->connected; }

}  // namespace otahub::db
