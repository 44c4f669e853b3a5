#pragma once

#include <atomic>
#include <mutex>

#include "db/database.hpp"
#include "server/domain/pki/trust_store.hpp"
#include "server/net/asio.hpp"

namespace otahub::device {

/// Keeps a TrustStore equal to the database: CAs (active or not, JITP flags) and revoked
/// certificate fingerprints. Reloads are whole and coalesced. Thread-safe.
class TrustSync {
  public:
    TrustSync(db::Database& db, pki::TrustStore& store, net::asio::thread_pool& workers);

    /// Loads the trust inputs and replaces the snapshot now; blocking, throws on database errors.
    void reload();
    /// Schedules a reload on the worker pool; requests made while one runs coalesce into one
    /// more run. Errors are logged (the previous snapshot stays in force).
    void request_reload();
    /// Completed reloads so far (for tests and metrics).
    std::uint64_t generation() const { return generation_; }

  private:
    void run_pending();

    db::Database& db_;
    pki::TrustStore& store_;
    net::asio::thread_pool& workers_;
    std::mutex mutex_;
    bool running_ = false;
    bool pending_ = false;
    std::atomic<std::uint64_t> generation_{0};
};

}  // namespace otahub::device
