#include "server/device/trust_sync.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "db/repositories/ca_certificates_repository.hpp"

namespace otahub::device {

namespace {

/// Distinct samples kept per key in memory (the table keeps as many).
constexpr std::size_t kMaxSamples = static_cast<std::size_t>(db::handshake_refusals::kMaxSamples);

void add_sample(std::vector<std::string>& samples, const std::string& value) {
    if (value.empty() || samples.size() >= kMaxSamples) return;
    if (std::find(samples.begin(), samples.end(), value) != samples.end()) return;
    samples.push_back(value.size() > 256 ? value.substr(0, 256) : value);
}

}  // namespace

void RefusalCounter::add(std::int64_t ca_id, std::int64_t org_id, const std::string& reason,
                         const std::string& stage, const std::string& common_name,
                         const std::string& serial, std::chrono::system_clock::time_point now) {
    const auto seconds =
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    Value value;
    value.org_id = org_id;
    value.count = 1;
    add_sample(value.common_names, common_name);
    add_sample(value.serials, serial);
    value.first = seconds;
    value.last = seconds;
    merge(Key{seconds - seconds % 3600, ca_id, reason, stage}, value);
}

void RefusalCounter::merge(const Key& key, const Value& value) {
    const std::lock_guard lock{mutex_};
    auto [it, inserted] = counts_.try_emplace(key, value);
    if (inserted) return;
    auto& held = it->second;
    held.count += value.count;
    if (held.org_id == 0) held.org_id = value.org_id;
    for (const auto& cn : value.common_names) add_sample(held.common_names, cn);
    for (const auto& serial : value.serials) add_sample(held.serials, serial);
    held.first = std::min(held.first, value.first);
    held.last = std::max(held.last, value.last);
}

std::vector<db::RefusalCount> RefusalCounter::take() {
    std::map<Key, Value> taken;
    {
        const std::lock_guard lock{mutex_};
        taken.swap(counts_);
    }
    std::vector<db::RefusalCount> out;
    out.reserve(taken.size());
    for (auto& [key, value] : taken) {
        db::RefusalCount c;
        std::tie(c.hour_epoch, c.ca_id, c.reason, c.stage) = key;
        if (value.org_id != 0) c.org_id = value.org_id;
        c.count = value.count;
        c.common_names = std::move(value.common_names);
        c.serials = std::move(value.serials);
        c.first_epoch = value.first;
        c.last_epoch = value.last;
        out.push_back(std::move(c));
    }
    return out;
}

void RefusalCounter::restore(const std::vector<db::RefusalCount>& counts) {
    for (const auto& c : counts) {
        merge(Key{c.hour_epoch, c.ca_id, c.reason, c.stage},
              Value{c.org_id.value_or(0), c.count, c.common_names, c.serials, c.first_epoch,
                    c.last_epoch});
    }
}

RefusalCounter& refusal_counter() {
    static RefusalCounter counter;
    return counter;
}

TrustSync::TrustSync(db::Database& db, pki::TrustStore& store, net::asio::thread_pool& workers,
                     int refusal_retention_days, std::size_t verify_cache_entries)
    : db_(db),
      store_(store),
      workers_(workers),
      refusal_retention_days_(refusal_retention_days),
      verify_cache_entries_(verify_cache_entries) {
    store_.set_refusal_observer([](const pki::Refusal& refusal) {
        refusal_counter().add(refusal.ca_id, refusal.org_id,
                              std::string(pki::to_string(refusal.reason)), "tls",
                              refusal.common_name, refusal.serial);
    });
    flusher_ = std::thread([this] { run_flusher(); });
}

TrustSync::~TrustSync() {
    store_.set_refusal_observer(nullptr);
    {
        const std::lock_guard lock{flusher_mutex_};
        stopping_ = true;
    }
    flusher_wake_.notify_all();
    if (flusher_.joinable()) flusher_.join();
}

void TrustSync::flush_refusals() {
    auto counts = refusal_counter().take();
    if (counts.empty()) return;
    try {
        db_.run([&](db::Tx& tx) { db::handshake_refusals::upsert(tx, counts); });
    } catch (const std::exception& e) {
        spdlog::warn("trust: writing {} refusal count(s) failed, keeping them: {}", counts.size(),
                     e.what());
        refusal_counter().restore(counts);
    }
}

std::int64_t TrustSync::prune_refusals() {
    if (refusal_retention_days_ <= 0) return 0;
    std::int64_t deleted = 0;
    db_.run(
        [&](db::Tx& tx) { deleted = db::handshake_refusals::prune(tx, refusal_retention_days_); });
    if (deleted > 0) {
        spdlog::info("trust: deleted {} refusal count row(s) older than {} days", deleted,
                     refusal_retention_days_);
    }
    return deleted;
}

void TrustSync::run_flusher() {
    std::unique_lock lock{flusher_mutex_};
    // First prune on the first tick (a node restarted more often than hourly still prunes;
    // deleting again is harmless), then hourly.
    auto next_prune = std::chrono::steady_clock::now();
    while (!stopping_) {
        flusher_wake_.wait_for(lock, kRefusalFlushInterval, [this] { return stopping_; });
        lock.unlock();
        flush_refusals();
        if (std::chrono::steady_clock::now() >= next_prune) {
            next_prune = std::chrono::steady_clock::now() + kRefusalPruneInterval;
            try {
                prune_refusals();
            } catch (const std::exception& e) {
                spdlog::warn("trust: deleting old refusal counts failed: {}", e.what());
            }
        }
        lock.lock();
    }
}

void TrustSync::reload() {
    const auto started = std::chrono::steady_clock::now();
    auto inputs =
        db_.transact([](db::Tx& tx) { return db::ca_certificates::load_trust_inputs(tx); });
    auto snapshot = pki::TrustSnapshot::build(inputs, verify_cache_entries_);
    for (const auto id : snapshot->skipped_ca_ids()) {
        spdlog::warn("trust: CA id={} has an unreadable certificate and is not trusted", id);
    }
    const auto trusted = snapshot->trusted_ca_count();
    store_.replace(std::move(snapshot));
    ++generation_;
    spdlog::debug("trust: {} CA(s) trusted, {} revoked certificate(s), reloaded in {} ms", trusted,
                  inputs.revoked_fingerprints.size(),
                  std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - started)
                      .count());
}

void TrustSync::request_reload() {
    {
        const std::lock_guard lock{mutex_};
        if (running_) {
            pending_ = true;
            return;
        }
        running_ = true;
        pending_ = false;
    }
    net::asio::post(workers_, [this] { run_pending(); });
}

void TrustSync::run_pending() {
    for (;;) {
        try {
            reload();
        } catch (const std::exception& e) {
            spdlog::warn("trust: reload failed, keeping the previous snapshot: {}", e.what());
        }
        const std::lock_guard lock{mutex_};
        if (!pending_) {
            running_ = false;
            return;
        }
        pending_ = false;
    }
}

}  // namespace otahub::device
