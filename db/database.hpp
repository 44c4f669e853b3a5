#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "server/common/api_error.hpp"

namespace otahub::db {

/// Raised when PostgreSQL cannot be reached (maps to 503).
class Unavailable : public ApiError {
  public:
    explicit Unavailable(std::string detail)
        : ApiError(ErrorCode::kUnavailable, std::move(detail)) {}
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

class Tx;  // a transaction; defined in db/tx.hpp, used only by repositories

/// A fixed-size pool of PostgreSQL connections with blocking, transactional access.
/// Thread-safe; call only from database worker threads, never from I/O threads.
class Database {
  public:
    Database(std::string url, std::size_t pool_size);
    ~Database();
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;

    /// Registers statements prepared on every new connection (call before the first query).
    static void register_statements(const std::vector<Statement>& statements);

    /// Runs `fn` in a transaction and commits; retries once on a serialization failure;
    /// translates driver errors into Unavailable / Conflict / ApiError.
    void run(const std::function<void(Tx&)>& fn);

    /// Like run(), returning fn's result.
    template <class F>
    auto transact(F&& fn) -> std::invoke_result_t<F, Tx&> {
        using Result = std::invoke_result_t<F, Tx&>;
        if constexpr (std::is_void_v<Result>) {
            run(std::forward<F>(fn));
        } else {
            std::optional<Result> result;
            run([&](Tx& tx) { result.emplace(fn(tx)); });
            return std::move(*result);
        }
    }

    /// Runs a plain SQL script outside the pool's statement cache (tests, admin tools).
    void execute_script(const std::string& sql);
    /// True when a trivial query succeeds within a short time.
    bool ping();

    /// Connection string without the password, for logs.
    std::string redacted_url() const;
    const std::string& url() const;
    /// Time callers spent waiting for a free connection, in total.
    std::chrono::nanoseconds total_wait() const;
    /// Observers of pool waits and transaction durations, in seconds (metrics). Set before the
    /// first query; called on the querying thread.
    void set_observers(std::function<void(double)> on_wait,
                       std::function<void(double)> on_transaction);

    struct Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace otahub::db
