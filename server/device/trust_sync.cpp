#include "server/device/trust_sync.hpp"

#include <spdlog/spdlog.h>

#include "db/repositories/ca_certificates_repository.hpp"

namespace otahub::device {

TrustSync::TrustSync(db::Database& db, pki::TrustStore& store, net::asio::thread_pool& workers)
    : db_(db), store_(store), workers_(workers) {}

void TrustSync::reload() {
    const auto started = std::chrono::steady_clock::now();
    auto inputs =
        db_.transact([](db::Tx& tx) { return db::ca_certificates::load_trust_inputs(tx); });
    auto snapshot = pki::TrustSnapshot::build(inputs);
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
