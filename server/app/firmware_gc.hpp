#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <thread>

#include "db/database.hpp"
#include "server/domain/storage/firmware_store.hpp"

namespace otahub {

/// The firmware TTL job: every `interval`, deletes firmware whose TTL ran out while no
/// deployment referenced it (rows first, then files). Safe with several hub nodes running it at
/// once (rows are claimed with FOR UPDATE SKIP LOCKED). Runs on its own thread.
class FirmwareGc {
  public:
    FirmwareGc(db::Database& db, std::shared_ptr<storage::FirmwareStore> store,
               std::chrono::seconds interval);
    ~FirmwareGc();
    FirmwareGc(const FirmwareGc&) = delete;
    FirmwareGc& operator=(const FirmwareGc&) = delete;

    /// Starts the periodic thread (the first pass runs after one interval).
    void start();
    /// Stops and joins the thread; a pass in progress finishes first. Idempotent.
    void stop();

    /// One pass at time `now`: deletes every expired firmware, in batches; returns how many.
    /// Blocking; thread-safe.
    static std::size_t collect(db::Database& db, storage::FirmwareStore& store,
                               std::chrono::system_clock::time_point now);

  private:
    void run();

    db::Database& db_;
    std::shared_ptr<storage::FirmwareStore> store_;
    std::chrono::seconds interval_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace otahub
