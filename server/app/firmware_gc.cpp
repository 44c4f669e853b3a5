#include "server/app/firmware_gc.hpp"

#include <spdlog/spdlog.h>

#include "db/repositories/firmwares_repository.hpp"

namespace otahub {
namespace {

constexpr int kBatch = 100;

}  // namespace

FirmwareGc::FirmwareGc(db::Database& db, std::shared_ptr<storage::FirmwareStore> store,
                       std::chrono::seconds interval)
    : db_(db), store_(std::move(store)), interval_(interval) {}

FirmwareGc::~FirmwareGc() { stop(); }

void FirmwareGc::start() {
    std::lock_guard lock{mutex_};
    if (thread_.joinable() || stopping_) return;
    thread_ = std::thread([this] { run(); });
}

void FirmwareGc::stop() {
    {
        std::lock_guard lock{mutex_};
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void FirmwareGc::run() {
    std::unique_lock lock{mutex_};
    for (;;) {
        if (wake_.wait_for(lock, interval_, [this] { return stopping_; })) return;
        lock.unlock();
        try {
            collect(db_, *store_, std::chrono::system_clock::now());
        } catch (const std::exception& e) {
            // The database may be down or migrations pending; the next pass retries.
            spdlog::warn("firmware TTL pass failed: {}", e.what());
        }
        lock.lock();
    }
}

std::size_t FirmwareGc::collect(db::Database& db, storage::FirmwareStore& store,
                                std::chrono::system_clock::time_point now) {
    std::size_t total = 0;
    for (;;) {
        auto expired =
            db.transact([&](db::Tx& tx) { return db::firmwares::delete_expired(tx, now, kBatch); });
        for (const auto& f : expired) {
            try {
                store.remove(f.storage_key);
            } catch (const std::exception& e) {
                spdlog::warn("firmware {} of org {} expired; its file was not removed: {}", f.uuid,
                             f.org_id, e.what());
            }
            spdlog::info("firmware {} of org {} deleted: its TTL ran out", f.uuid, f.org_id);
        }
        total += expired.size();
        if (expired.size() < static_cast<std::size_t>(kBatch)) return total;
    }
}

}  // namespace otahub
