#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "db/database.hpp"
#include "db/repositories/handshake_refusals_repository.hpp"
#include "server/domain/pki/trust_store.hpp"
#include "server/net/asio.hpp"

namespace otahub::device {

/// Refused device connections counted in memory per (hour, CA, reason, stage) until flushed as
/// one upsert per key, so a flood of bad handshakes costs memory bounded by the number of CAs
/// and reasons, not one database write per attempt. Thread-safe.
class RefusalCounter {
  public:
    /// Counts one refusal (`ca_id` 0 and `org_id` 0 when the CA is unknown).
    void add(std::int64_t ca_id, std::int64_t org_id, const std::string& reason,
             const std::string& stage, const std::string& common_name, const std::string& serial,
             std::chrono::system_clock::time_point now = std::chrono::system_clock::now());
    /// Takes the counts gathered since the last call.
    std::vector<db::RefusalCount> take();
    /// Puts counts back (a flush that failed), merged with those gathered since.
    void restore(const std::vector<db::RefusalCount>& counts);

  private:
    using Key = std::tuple<std::int64_t, std::int64_t, std::string, std::string>;
    struct Value {
        std::int64_t org_id = 0;
        std::int64_t count = 0;
        std::vector<std::string> common_names;
        std::vector<std::string> serials;
        std::int64_t first = 0;
        std::int64_t last = 0;
    };
    void merge(const Key& key, const Value& value);

    std::mutex mutex_;
    std::map<Key, Value> counts_;
};

/// The process's refusal counter (TLS refusals through the TrustStore observer, upgrade refusals
/// from the authenticator); TrustSync flushes it.
RefusalCounter& refusal_counter();

/// Keeps a TrustStore equal to the database: CAs (active or not, JITP flags) and revoked
/// certificate fingerprints. Reloads are whole and coalesced. Thread-safe.
class TrustSync {
  public:
    /// `refusal_retention_days`: refusal rows older than that are deleted (checked hourly by the
    /// flusher); 0 keeps them. Each snapshot remembers up to `verify_cache_entries` accepted
    /// certificates (pki::TrustSnapshot::build).
    TrustSync(db::Database& db, pki::TrustStore& store, net::asio::thread_pool& workers,
              int refusal_retention_days = 90,
              std::size_t verify_cache_entries = pki::kDefaultVerifyCacheEntries);
    /// Stops the refusal flusher after a last flush.
    ~TrustSync();
    TrustSync(const TrustSync&) = delete;
    TrustSync& operator=(const TrustSync&) = delete;

    /// Loads the trust inputs and replaces the snapshot now; blocking, throws on database errors.
    void reload();
    /// Schedules a reload on the worker pool; requests made while one runs coalesce into one
    /// more run. Errors are logged (the previous snapshot stays in force).
    void request_reload();
    /// Completed reloads so far (for tests and metrics).
    std::uint64_t generation() const { return generation_; }
    /// Writes the refusal counts gathered so far (also done every kRefusalFlushInterval).
    void flush_refusals();

    /// Deletes refusal rows past the retention now (0 days: none); returns how many.
    std::int64_t prune_refusals();

    /// How often refusal counts are written.
    static constexpr std::chrono::seconds kRefusalFlushInterval{2};
    /// How often rows past the retention are deleted.
    static constexpr std::chrono::hours kRefusalPruneInterval{1};

  private:
    void run_pending();
    void run_flusher();

    db::Database& db_;
    pki::TrustStore& store_;
    net::asio::thread_pool& workers_;
    int refusal_retention_days_;
    std::size_t verify_cache_entries_;
    std::mutex mutex_;
    bool running_ = false;
    bool pending_ = false;
    std::atomic<std::uint64_t> generation_{0};
    std::mutex flusher_mutex_;
    std::condition_variable flusher_wake_;
    bool stopping_ = false;
    std::thread flusher_;
};

}  // namespace otahub::device
