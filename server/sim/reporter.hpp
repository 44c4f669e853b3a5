#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>

/// Counters of a simulator run and its machine-readable event stream.
namespace otahub::sim {

/// Totals over all devices; every member is safe to update from any thread.
struct Stats {
    std::atomic<std::uint64_t> connects{0};           ///< websocket joins that succeeded
    std::atomic<std::uint64_t> connect_failures{0};   ///< connection or join attempts that failed
    std::atomic<std::uint64_t> disconnects{0};        ///< sessions that ended
    std::atomic<std::int64_t> connected{0};           ///< sessions joined right now
    std::atomic<std::uint64_t> updates_received{0};   ///< `update` pushes acted on
    std::atomic<std::uint64_t> updates_succeeded{0};  ///< reported `completed`
    std::atomic<std::uint64_t> updates_failed{0};     ///< reported `failed`
    std::atomic<std::uint64_t> heartbeats{0};         ///< heartbeats the hub answered
    std::atomic<std::uint64_t> bytes_downloaded{0};   ///< firmware bytes received
};

/// Writes one JSON object per line to stdout when enabled (`--json-status`), so a test can
/// follow the run; thread-safe, each line flushed whole.
class Reporter {
  public:
    /// Enabled or silent.
    explicit Reporter(bool enabled) : enabled_(enabled) {}
    /// Whether lines are written.
    bool enabled() const { return enabled_; }
    /// Writes `{"event": event, "device": device, ...fields, "ts": <unix ms>}` when enabled.
    void emit(std::string_view event, std::string_view device, nlohmann::json fields = {});

    /// The run's counters.
    Stats stats;

  private:
    bool enabled_;
    std::mutex mutex_;
};

}  // namespace otahub::sim
