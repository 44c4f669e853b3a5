#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>
#include <string>
#include <utility>
#include <vector>

#include "server/common/api_error.hpp"

namespace otahub::db {

/// Raised when PostgreSQL cannot be reached (maps to 503).
class Unavailable : public ApiError {
public:
    explicit Unavailable(std::string detail) : ApiError(ErrorCode::kUnavailable, std::move(detail)) {}
};

/// Raised on a unique-constraint violation (maps to 409).
class Conflict : public ApiError {
public:
    explicit Conflict(std::string detail) : ApiError(ErrorCode::kConflict, std::move(detail)) {}
};

/// A prepared statement every pooled connection knows.
struct Statement {
    std::string name;
    std::string sql;
};

/// A fixed-size pool of libpqxx connections with blocking, transactional access.
/// Thread-safe; call only from database worker threads, never from I/O threads.
class Database {
public:
    Database(std::string url, std::size_t pool_size);
    ~Database();
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;

    /// Registers statements prepared on every connection (call before the first query).
    static void register_statements(const std::vector<Statement>& statements);

    /// Runs `fn(pqxx::work&)` in a transaction and commits; retries once on a serialization
    /// failure; translates pqxx errors into Unavailable / Conflict / ApiError(500).
    template <class F>
    auto transact(F&& fn) -> decltype(fn(std::declval<pqxx::work&>())) {
        using Result = decltype(fn(std::declval<pqxx::work&>()));
        for (int attempt = 0;; ++attempt) {
            Lease lease = acquire();
            try {
                pqxx::work tx{*lease.conn};
                if constexpr (std::is_void_v<Result>) {
                    fn(tx);
                    tx.commit();
                    return;
                } else {
                    Result result = fn(tx);
                    tx.commit();
                    return result;
                }
            } catch (const pqxx::serialization_failure&) {
                if (attempt >= 1) throw Unavailable("database serialization conflict, retry later");
            } catch (const pqxx::deadlock_detected&) {
                if (attempt >= 1) throw Unavailable("database deadlock, retry later");
            } catch (const pqxx::broken_connection& e) {
                lease.broken = true;
                throw Unavailable(std::string("database unavailable: ") + e.what());
            } catch (const pqxx::unique_violation& e) {
                throw Conflict(constraint_message(e));
            } catch (const pqxx::sql_error& e) {
                check_connection(lease);
                rethrow_sql_error(e);
            }
        }
    }

    /// Runs `fn(pqxx::connection&)` outside a transaction (LISTEN, migrations, admin work).
    void with_connection(const std::function<void(pqxx::connection&)>& fn);

    /// Connection string without the password, for logs.
    std::string redacted_url() const;
    const std::string& url() const { return url_; }
    /// Time callers spent waiting for a free connection, total (for metrics).
    std::chrono::nanoseconds total_wait() const;

    /// Opens a new connection with the registered statements prepared.
    std::unique_ptr<pqxx::connection> connect() const;

private:
    struct Lease {
        Database* owner = nullptr;
        std::unique_ptr<pqxx::connection> conn;
        bool broken = false;
        Lease() = default;
        Lease(Lease&&) = default;
        Lease& operator=(Lease&&) = delete;
        Lease(const Lease&) = delete;
        ~Lease();
    };

    Lease acquire();
    void release(std::unique_ptr<pqxx::connection> conn, bool broken);
    static void check_connection(Lease& lease);
    static std::string constraint_message(const pqxx::unique_violation& e);
    [[noreturn]] static void rethrow_sql_error(const pqxx::sql_error& e);

    std::string url_;
    std::size_t pool_size_;
    mutable std::mutex mutex_;
    std::condition_variable available_;
    std::vector<std::unique_ptr<pqxx::connection>> idle_;
    std::size_t open_ = 0;
    std::chrono::nanoseconds wait_total_{0};
};

}  // namespace otahub::db
