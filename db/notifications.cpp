#include "db/notifications.hpp"

#include <spdlog/spdlog.h>

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
                while (!stopping) {
                    conn.await_notification(0, 250'000);
                    if (!conn.is_open()) throw pqxx::broken_connection("connection lost");
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
