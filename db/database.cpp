#include "db/database.hpp"

#include <spdlog/spdlog.h>

#include <regex>

namespace otahub::db {
namespace {

std::mutex g_statements_mutex;
std::vector<Statement>& statements() {
    static std::vector<Statement> all;
    return all;
}

constexpr auto kAcquireTimeout = std::chrono::seconds(10);

}  // namespace

Database::Database(std::string url, std::size_t pool_size)
    : url_(std::move(url)), pool_size_(pool_size == 0 ? 1 : pool_size) {}

Database::~Database() = default;

void Database::register_statements(const std::vector<Statement>& list) {
    std::lock_guard lock{g_statements_mutex};
    for (const auto& statement : list) {
        bool known = false;
        for (const auto& existing : statements()) {
            if (existing.name == statement.name) known = true;
        }
        if (!known) statements().push_back(statement);
    }
}

std::unique_ptr<pqxx::connection> Database::connect() const {
    try {
        auto conn = std::make_unique<pqxx::connection>(url_);
        std::vector<Statement> copy;
        {
            std::lock_guard lock{g_statements_mutex};
            copy = statements();
        }
        for (const auto& statement : copy) {
            conn->prepare(statement.name, statement.sql);
        }
        return conn;
    } catch (const pqxx::broken_connection& e) {
        throw Unavailable(std::string("database unavailable: ") + e.what());
    }
}

Database::Lease::~Lease() {
    if (owner != nullptr) owner->release(std::move(conn), broken);
}

Database::Lease Database::acquire() {
    auto started = std::chrono::steady_clock::now();
    std::unique_lock lock{mutex_};
    bool open_new = false;
    if (!available_.wait_for(lock, kAcquireTimeout,
                             [&] { return !idle_.empty() || open_ < pool_size_; })) {
        throw Unavailable("database pool exhausted");
    }
    Lease lease;
    lease.owner = this;
    if (!idle_.empty()) {
        lease.conn = std::move(idle_.back());
        idle_.pop_back();
    } else {
        ++open_;
        open_new = true;
    }
    wait_total_ += std::chrono::steady_clock::now() - started;
    lock.unlock();
    if (open_new) {
        try {
            lease.conn = connect();
        } catch (...) {
            lease.owner = nullptr;
            release(nullptr, true);
            throw;
        }
    } else if (!lease.conn->is_open()) {
        lease.conn = connect();
    }
    return lease;
}

void Database::release(std::unique_ptr<pqxx::connection> conn, bool broken) {
    std::lock_guard lock{mutex_};
    if (broken || !conn || !conn->is_open()) {
        --open_;
    } else {
        idle_.push_back(std::move(conn));
    }
    available_.notify_one();
}

void Database::check_connection(Lease& lease) {
    if (lease.conn && !lease.conn->is_open()) lease.broken = true;
}

void Database::with_connection(const std::function<void(pqxx::connection&)>& fn) {
    Lease lease = acquire();
    try {
        fn(*lease.conn);
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

std::string Database::constraint_message(const pqxx::unique_violation& e) {
    // The constraint names of our migrations end in the column that collided, e.g. products_org_id_name_key.
    std::string message = e.what();
    std::smatch m;
    static const std::regex kKey{R"(Key \(([^)]*)\)=)"};
    if (std::regex_search(message, m, kKey)) {
        return "already exists: " + m[1].str();
    }
    return "already exists";
}

void Database::rethrow_sql_error(const pqxx::sql_error& e) {
    const std::string& state = e.sqlstate();
    // Class 08: connection exception; 57P: operator intervention (admin shutdown, crash recovery).
    if (state.rfind("08", 0) == 0 || state.rfind("57P", 0) == 0) {
        throw Unavailable(std::string("database unavailable: ") + e.what());
    }
    if (state == "23503") {
        throw ApiError(ErrorCode::kConflict, "still referenced by other records");
    }
    if (state == "22P02" || state == "22003" || state == "22001") {
        throw ApiError(ErrorCode::kUnprocessable, "invalid value");
    }
    spdlog::error("database error sqlstate={} query={} what={}", state, e.query(), e.what());
    throw ApiError(ErrorCode::kInternal, "internal database error");
}

std::string Database::redacted_url() const {
    static const std::regex kPassword{R"((://[^:/@]*:)[^@]*@)"};
    std::string redacted = std::regex_replace(url_, kPassword, "$1***@");
    static const std::regex kPasswordParam{R"(password=[^ &]*)"};
    return std::regex_replace(redacted, kPasswordParam, "password=***");
}

std::chrono::nanoseconds Database::total_wait() const {
    std::lock_guard lock{mutex_};
    return wait_total_;
}

}  // namespace otahub::db
