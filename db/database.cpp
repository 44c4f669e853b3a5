#include "db/database.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <pqxx/pqxx>
#include <thread>

#include "db/tx.hpp"

namespace otahub::db {
namespace {

constexpr auto kAcquireTimeout = std::chrono::seconds(10);

std::string constraint_message(const pqxx::unique_violation& e) {
    // PostgreSQL's detail reads `Key (lower(name))=(x) already exists.`: name the key columns.
    const std::string message = e.what();
    const auto start = message.find("Key (");
    if (start == std::string::npos) return "already exists";
    const auto end = message.find(")=", start);
    if (end == std::string::npos) return "already exists";
    std::string key = message.substr(start + 5, end - start - 5);
    for (std::size_t at; (at = key.find("lower(")) != std::string::npos;) {
        const auto close = key.find(')', at);
        if (close == std::string::npos) break;
        key = key.substr(0, at) + key.substr(at + 6, close - at - 6) + key.substr(close + 1);
    }
    return "already exists: " + key;
}

[[noreturn]] void rethrow_sql_error(const pqxx::sql_error& e) {
    const std::string& state = e.sqlstate();
    // Class 08: connection exception; 57P: operator intervention (shutdown, crash recovery).
    if (state.rfind("08", 0) == 0 || state.rfind("57P", 0) == 0) {
        throw Unavailable(std::string("database unavailable: ") + e.what());
    }
    if (state == "23503") throw ApiError(ErrorCode::kConflict, "still referenced by other records");
    if (state == "22P02" || state == "22003" || state == "22001" || state == "22021" ||
        state == "22P05") {
        throw ApiError(ErrorCode::kUnprocessable, "invalid value");
    }
    spdlog::error("database error sqlstate={} what={}", state, e.what());
    throw ApiError(ErrorCode::kInternal, "internal database error");
}

/// A pooled connection and the statements prepared on it so far.
class PooledConnection : public pqxx::connection {
  public:
    PooledConnection(const std::string& url, bool prepare)
        : pqxx::connection(url), prepared(prepare) {}
    PreparedStatements prepared;
};

}  // namespace

struct Database::Impl {
    using Clock = std::chrono::steady_clock;
    using Connection = std::unique_ptr<PooledConnection>;

    std::string configured_url;  // as given (logs)
    std::string url;             // with the connect timeout
    std::size_t pool_size;
    Timeouts timeouts;
    bool prepare_statements = true;
    mutable std::mutex mutex;
    std::condition_variable available;
    std::vector<Connection> idle;
    std::size_t open = 0;
    bool unreachable = false;  // see the class comment
    bool probing = false;      // a caller is trying a new connection while unreachable
    std::chrono::nanoseconds wait_total{0};
    std::function<void(double)> on_wait;
    std::function<void(double)> on_transaction;

    // The deadline watchdog: a thread that shuts down the socket of a connection whose
    // transaction overran. shutdown() (not close()) leaves the descriptor to libpq, which then
    // sees the link end, fails the statement it is blocked in, and closes it as usual.
    struct Watch {
        int socket;
        Clock::time_point deadline;
        bool fired = false;
    };
    std::mutex watch_mutex;
    std::condition_variable watch_wake;
    std::map<std::uint64_t, Watch> watches;
    std::uint64_t next_watch_id = 0;
    Clock::time_point watch_next = Clock::time_point::max();
    bool watch_stopping = false;
    std::thread watchdog;

    ~Impl() {
        {
            std::lock_guard lock{watch_mutex};
            watch_stopping = true;
        }
        watch_wake.notify_all();
        if (watchdog.joinable()) watchdog.join();
    }

    std::uint64_t watch(int socket, std::chrono::milliseconds limit) {
        const auto deadline = Clock::now() + limit;
        std::lock_guard lock{watch_mutex};
        if (!watchdog.joinable()) watchdog = std::thread([this] { watch_loop(); });
        const auto id = next_watch_id++;
        watches.emplace(id, Watch{socket, deadline});
        if (deadline < watch_next) {
            watch_next = deadline;
            watch_wake.notify_one();
        }
        return id;
    }

    /// Forgets watch `id`; true when its deadline had fired.
    bool unwatch(std::uint64_t id) {
        std::lock_guard lock{watch_mutex};
        const auto found = watches.find(id);
        if (found == watches.end()) return false;
        const bool fired = found->second.fired;
        watches.erase(found);
        return fired;
    }

    void watch_loop() {
        std::unique_lock lock{watch_mutex};
        while (!watch_stopping) {
            const auto now = Clock::now();
            auto next = Clock::time_point::max();
            std::size_t fired = 0;
            for (auto& [id, watch] : watches) {
                if (watch.fired) continue;
                if (watch.deadline <= now) {
                    ::shutdown(watch.socket, SHUT_RDWR);
                    watch.fired = true;
                    ++fired;
                } else {
                    next = std::min(next, watch.deadline);
                }
            }
            watch_next = next;
            if (fired > 0) {
                // Counted as unreachable before the watch lock is released: a caller that learns
                // from unwatch() that its deadline fired then already sees the pool unreachable.
                auto dropped = set_unreachable("no answer within the transaction deadline");
                lock.unlock();
                dropped.clear();  // closes them outside both locks
                lock.lock();
                continue;
            }
            if (next == Clock::time_point::max()) {
                watch_wake.wait(lock);
            } else {
                watch_wake.wait_until(lock, next);
            }
        }
    }

    /// Counts the database as unreachable and drops the idle connections (on a hung link they
    /// would each hang their next caller).
    void mark_unreachable(const std::string& why) {
        auto dropped = set_unreachable(why);  // closed on return, outside the lock
    }

    /// mark_unreachable() without closing: returns the dropped idle connections.
    [[nodiscard]] std::vector<Connection> set_unreachable(const std::string& why) {
        std::vector<Connection> dropped;
        std::lock_guard lock{mutex};
        if (!unreachable) {
            spdlog::warn(
                "database unreachable ({}); callers get 503 until a connection "
                "succeeds",
                why);
        }
        unreachable = true;
        dropped.swap(idle);
        open -= dropped.size();
        available.notify_all();
        return dropped;
    }

    std::string deadline_message() const {
        return "database did not answer within " + std::to_string(timeouts.transaction.count()) +
               " ms";
    }

    void mark_reachable() {
        std::lock_guard lock{mutex};
        if (unreachable) spdlog::info("database reachable again");
        unreachable = false;
    }

    Connection connect() {
        Connection conn;
        try {
            conn = std::make_unique<PooledConnection>(url, prepare_statements);
        } catch (const pqxx::broken_connection& e) {
            mark_unreachable(e.what());
            throw Unavailable(std::string("database unavailable: ") + e.what());
        }
        return conn;
    }

    Connection acquire() {
        auto started = Clock::now();
        std::unique_lock lock{mutex};
        const auto fail_fast = [&] { return unreachable && probing; };
        if (!available.wait_for(lock, kAcquireTimeout,
                                [&] { return !idle.empty() || open < pool_size || fail_fast(); })) {
            throw Unavailable("database pool exhausted");
        }
        if (fail_fast()) throw Unavailable("database unreachable");
        const auto waited = Clock::now() - started;
        wait_total += waited;
        if (on_wait) on_wait(std::chrono::duration<double>(waited).count());
        if (!idle.empty()) {
            auto conn = std::move(idle.back());
            idle.pop_back();
            if (conn->is_open()) return conn;
            --open;
        }
        const bool probe = unreachable;
        if (probe) probing = true;
        ++open;
        lock.unlock();
        try {
            auto conn = connect();
            if (probe) {
                std::lock_guard relock{mutex};
                probing = false;
            }
            mark_reachable();
            return conn;
        } catch (...) {
            if (probe) {
                std::lock_guard relock{mutex};
                probing = false;
            }
            release(nullptr);
            throw;
        }
    }

    void release(Connection conn) {
        std::lock_guard lock{mutex};
        if (conn && conn->is_open()) {
            idle.push_back(std::move(conn));
        } else {
            --open;
        }
        available.notify_one();
    }
};

namespace {

/// Returns the connection to the pool when the scope ends (dropping it when broken).
class Lease {
  public:
    explicit Lease(Database::Impl& pool) : pool_(pool), conn_(pool.acquire()) {}
    ~Lease() { pool_.release(broken_ ? nullptr : std::move(conn_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    PooledConnection& operator*() { return *conn_; }
    void mark_broken() { broken_ = true; }

    /// Watches the connection against the transaction deadline (no-op when there is none).
    class Deadline {
      public:
        Deadline(Lease& lease, std::chrono::milliseconds limit) : lease_(lease) {
            if (limit.count() > 0) id_ = lease.pool_.watch((*lease).sock(), limit);
        }
        ~Deadline() { fired(); }
        Deadline(const Deadline&) = delete;
        Deadline& operator=(const Deadline&) = delete;
        /// Stops watching; true when the deadline fired (the connection is then unusable).
        bool fired() {
            if (id_) {
                fired_ = lease_.pool_.unwatch(*id_);
                id_.reset();
                if (fired_) lease_.mark_broken();
            }
            return fired_;
        }

      private:
        Lease& lease_;
        std::optional<std::uint64_t> id_;
        bool fired_ = false;
    };

  private:
    Database::Impl& pool_;
    std::unique_ptr<PooledConnection> conn_;
    bool broken_ = false;
};

}  // namespace

Database::Database(std::string url, std::size_t pool_size, Timeouts timeouts,
                   bool prepare_statements)
    : impl_(std::make_unique<Impl>()) {
    impl_->prepare_statements = prepare_statements;
    impl_->url = with_connect_timeout(url, timeouts.connect);
    impl_->configured_url = std::move(url);
    impl_->pool_size = pool_size == 0 ? 1 : pool_size;
    impl_->timeouts = timeouts;
}

Database::~Database() = default;

namespace {

/// One attempt of `fn` on a pooled connection, inside `Transaction` (pqxx::work: BEGIN … COMMIT;
/// pqxx::nontransaction: each statement commits on its own), under the transaction deadline.
/// Translates driver errors into Unavailable / Conflict / ApiError. Returns false after a
/// serialization failure or deadlock when `may_retry`.
template <class Transaction>
bool attempt(Database::Impl& pool, const std::function<void(Tx&)>& fn, bool may_retry) {
    Lease lease{pool};
    Lease::Deadline deadline{lease, pool.timeouts.transaction};
    try {
        const auto started = std::chrono::steady_clock::now();
        Transaction work{*lease};
        Tx tx{work, &(*lease).prepared};
        fn(tx);
        work.commit();
        deadline.fired();  // finished in time or not, the connection is dropped if it fired
        if (pool.on_transaction) {
            pool.on_transaction(
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
        }
        return true;
    } catch (const pqxx::serialization_failure&) {
        if (!may_retry) throw Unavailable("database serialization conflict, retry later");
    } catch (const pqxx::deadlock_detected&) {
        if (!may_retry) throw Unavailable("database deadlock, retry later");
    } catch (const pqxx::broken_connection& e) {
        lease.mark_broken();
        if (deadline.fired()) throw Unavailable(pool.deadline_message());
        throw Unavailable(std::string("database unavailable: ") + e.what());
    } catch (const pqxx::in_doubt_error& e) {
        lease.mark_broken();
        if (deadline.fired()) throw Unavailable(pool.deadline_message() + " (commit in doubt)");
        throw Unavailable(std::string("database commit in doubt: ") + e.what());
    } catch (const pqxx::unique_violation& e) {
        throw Conflict(constraint_message(e));
    } catch (const pqxx::sql_error& e) {
        if (!(*lease).is_open()) lease.mark_broken();
        if (deadline.fired()) throw Unavailable(pool.deadline_message());
        rethrow_sql_error(e);
    }
    return false;
}

}  // namespace

void Database::run(const std::function<void(Tx&)>& fn) {
    // A serialization failure or deadlock is retried once.
    for (int tries = 0; !attempt<pqxx::work>(*impl_, fn, tries == 0); ++tries) {
    }
}

void Database::autocommit(const std::function<void(Tx&)>& fn) {
    attempt<pqxx::nontransaction>(*impl_, fn, false);
}

void Database::execute_script(const std::string& sql) {
    run([&](Tx& tx) { tx->exec(sql); });
}

bool Database::ping() {
    try {
        auto conn = impl_->connect();
        const auto limit = impl_->timeouts.connect.count() > 0
                               ? std::chrono::milliseconds(impl_->timeouts.connect)
                               : impl_->timeouts.transaction;
        std::optional<std::uint64_t> id;
        if (limit.count() > 0) id = impl_->watch(conn->sock(), limit);
        try {
            pqxx::nontransaction tx{*conn};
            tx.exec("SELECT 1");
        } catch (const std::exception&) {
            if (id) impl_->unwatch(*id);
            throw;
        }
        if (id && impl_->unwatch(*id)) return false;
        impl_->mark_reachable();
        return true;
    } catch (const std::exception&) {
        return false;
    }
}

bool Database::unreachable() const {
    std::lock_guard lock{impl_->mutex};
    return impl_->unreachable;
}

namespace {

std::string redact_database_url(std::string url) {
    // URI form: the password between `user:` (a user without ':', '/' or '@') and the next '@'.
    if (const auto scheme = url.find("://"); scheme != std::string::npos) {
        const auto colon = url.find_first_of(":/@", scheme + 3);
        if (colon != std::string::npos && url[colon] == ':') {
            const auto at = url.find('@', colon + 1);
            if (at != std::string::npos) url.replace(colon + 1, at - colon - 1, "***");
        }
    }
    // Keyword form (`password=…`) and URI query parameters.
    for (std::size_t at = url.find("password="); at != std::string::npos;
         at = url.find("password=", at + 1)) {
        const auto value = at + 9;
        const auto end = url.find_first_of(" &", value);
        url.replace(value, (end == std::string::npos ? url.size() : end) - value, "***");
    }
    return url;
}

}  // namespace

std::string with_connect_timeout(std::string url, std::chrono::seconds seconds) {
    if (seconds.count() <= 0 || url.find("connect_timeout") != std::string::npos) return url;
    const auto value = std::to_string(std::max<std::chrono::seconds::rep>(2, seconds.count()));
    if (url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0) {
        return url + (url.find('?') == std::string::npos ? "?" : "&") + "connect_timeout=" + value;
    }
    return url + (url.empty() ? "" : " ") + "connect_timeout=" + value;
}

std::string Database::redacted_url() const { return redact_database_url(impl_->configured_url); }

const std::string& Database::url() const { return impl_->url; }

void Database::set_observers(std::function<void(double)> on_wait,
                             std::function<void(double)> on_transaction) {
    impl_->on_wait = std::move(on_wait);
    impl_->on_transaction = std::move(on_transaction);
}

std::chrono::nanoseconds Database::total_wait() const {
    std::lock_guard lock{impl_->mutex};
    return impl_->wait_total;
}

}  // namespace otahub::db
