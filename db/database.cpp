#include "db/database.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <mutex>
#include <pqxx/pqxx>

#include "db/tx.hpp"

namespace otahub::db {
namespace {

std::mutex g_statements_mutex;
std::vector<Statement>& registered_statements() {
    static std::vector<Statement> all;
    return all;
}

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

}  // namespace

struct Database::Impl {
    std::string url;
    std::size_t pool_size;
    std::mutex mutex;
    std::condition_variable available;
    std::vector<std::unique_ptr<pqxx::connection>> idle;
    std::size_t open = 0;
    std::chrono::nanoseconds wait_total{0};
    std::function<void(double)> on_wait;
    std::function<void(double)> on_transaction;

    std::unique_ptr<pqxx::connection> connect() const {
        try {
            auto conn = std::make_unique<pqxx::connection>(url);
            std::vector<Statement> copy;
            {
                std::lock_guard lock{g_statements_mutex};
                copy = registered_statements();
            }
            for (const auto& statement : copy) conn->prepare(statement.name, statement.sql);
            return conn;
        } catch (const pqxx::broken_connection& e) {
            throw Unavailable(std::string("database unavailable: ") + e.what());
        }
    }

    std::unique_ptr<pqxx::connection> acquire() {
        auto started = std::chrono::steady_clock::now();
        std::unique_lock lock{mutex};
        if (!available.wait_for(lock, kAcquireTimeout,
                                [&] { return !idle.empty() || open < pool_size; })) {
            throw Unavailable("database pool exhausted");
        }
        const auto waited = std::chrono::steady_clock::now() - started;
        wait_total += waited;
        if (on_wait) on_wait(std::chrono::duration<double>(waited).count());
        if (!idle.empty()) {
            auto conn = std::move(idle.back());
            idle.pop_back();
            if (conn->is_open()) return conn;
            --open;
        }
        ++open;
        lock.unlock();
        try {
            return connect();
        } catch (...) {
            release(nullptr);
            throw;
        }
    }

    void release(std::unique_ptr<pqxx::connection> conn) {
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
    pqxx::connection& operator*() { return *conn_; }
    void mark_broken() { broken_ = true; }

  private:
    Database::Impl& pool_;
    std::unique_ptr<pqxx::connection> conn_;
    bool broken_ = false;
};

}  // namespace

Database::Database(std::string url, std::size_t pool_size) : impl_(std::make_unique<Impl>()) {
    impl_->url = std::move(url);
    impl_->pool_size = pool_size == 0 ? 1 : pool_size;
}

Database::~Database() = default;

void Database::register_statements(const std::vector<Statement>& list) {
    std::lock_guard lock{g_statements_mutex};
    for (const auto& statement : list) {
        bool known = false;
        for (const auto& existing : registered_statements()) {
            if (existing.name == statement.name) known = true;
        }
        if (!known) registered_statements().push_back(statement);
    }
}

void Database::run(const std::function<void(Tx&)>& fn) {
    for (int attempt = 0;; ++attempt) {
        Lease lease{*impl_};
        try {
            const auto started = std::chrono::steady_clock::now();
            pqxx::work work{*lease};
            Tx tx{work};
            fn(tx);
            work.commit();
            if (impl_->on_transaction) {
                impl_->on_transaction(
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
                        .count());
            }
            return;
        } catch (const pqxx::serialization_failure&) {
            if (attempt >= 1) throw Unavailable("database serialization conflict, retry later");
        } catch (const pqxx::deadlock_detected&) {
            if (attempt >= 1) throw Unavailable("database deadlock, retry later");
        } catch (const pqxx::broken_connection& e) {
            lease.mark_broken();
            throw Unavailable(std::string("database unavailable: ") + e.what());
        } catch (const pqxx::in_doubt_error& e) {
            lease.mark_broken();
            throw Unavailable(std::string("database commit in doubt: ") + e.what());
        } catch (const pqxx::unique_violation& e) {
            throw Conflict(constraint_message(e));
        } catch (const pqxx::sql_error& e) {
            if (!(*lease).is_open()) lease.mark_broken();
            rethrow_sql_error(e);
        }
    }
}

void Database::execute_script(const std::string& sql) {
    run([&](Tx& tx) { tx->exec(sql); });
}

bool Database::ping() {
    try {
        auto conn = impl_->connect();
        pqxx::nontransaction tx{*conn};
        tx.exec("SELECT 1");
        return true;
    } catch (const std::exception&) {
        return false;
    }
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

std::string Database::redacted_url() const { return redact_database_url(impl_->url); }

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
