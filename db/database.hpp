#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

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

class Tx;  // a transaction; defined in db/tx.hpp, used only by repositories

/// Client-side deadlines. libpq has none by default, so a database link that stays open but
/// never answers (a network partition, a hung server) would hold every caller for ever.
struct Timeouts {
    /// Connection set-up: libpq's connect_timeout (whole seconds, at least 2), added to the URL
    /// unless it names one. 0: none.
    std::chrono::seconds connect{5};
    /// A transaction still running after this long is abandoned: its connection is shut down,
    /// the caller gets Unavailable, and the pool treats the database as unreachable until a new
    /// connection succeeds. 0: none.
    std::chrono::milliseconds transaction{15000};
};

/// `url` with libpq's connect_timeout set to `seconds` (URI or keyword form), unless it already
/// names one or `seconds` is 0.
std::string with_connect_timeout(std::string url, std::chrono::seconds seconds);

/// A fixed-size pool of PostgreSQL connections with blocking, transactional access.
/// Thread-safe; call only from database worker threads, never from I/O threads.
///
/// Once a connection attempt fails or a transaction overruns its deadline, the pool counts the
/// database as unreachable: its idle connections are dropped, one caller at a time tries a new
/// connection and every other caller gets Unavailable at once (no queue of callers each waiting
/// out its own timeout), until a connection succeeds.
class Database {
  public:
    /// `prepare_statements`: every parameterised statement is prepared on each pooled connection
    /// the first time it runs there and executed by name afterwards (PostgreSQL then parses and
    /// plans it once per connection). Off for a pooler that cannot keep named statements (e.g.
    /// PgBouncer in transaction mode before 1.21).
    Database(std::string url, std::size_t pool_size, Timeouts timeouts = {},
             bool prepare_statements = true);
    ~Database();
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;

    /// Runs `fn` in a transaction and commits; retries once on a serialization failure;
    /// translates driver errors into Unavailable / Conflict / ApiError.
    void run(const std::function<void(Tx&)>& fn);

    /// Runs `fn` without a transaction block: every statement commits on its own, which saves
    /// the BEGIN and COMMIT round trips. Only for work that needs no atomicity across statements:
    /// reads that take no locks (under READ COMMITTED each statement sees its own snapshot
    /// anyway), or a single write. Errors as run(), without its retry.
    void autocommit(const std::function<void(Tx&)>& fn);

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
    /// True when a trivial query succeeds on a new connection within the deadlines.
    bool ping();
    /// True while the pool counts the database as unreachable (see the class comment).
    bool unreachable() const;

    /// The configured connection string without the password, for logs.
    std::string redacted_url() const;
    /// The connection string in use (with connect_timeout).
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
