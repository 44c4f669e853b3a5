#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "db/database.hpp"
#include "db/repositories/devices_repository.hpp"
#include "server/device/phoenix.hpp"
#include "server/device/session_info.hpp"

namespace otahub::device {

/// The device event writes of one node (repository write, then observers), run on the worker
/// pool in order per device, without holding up the device's socket (its heartbeats are answered
/// whatever the database does). While the database is unavailable they are kept, in order per
/// device, and written back when it returns, so no status or update outcome reported during an
/// outage is lost. A step that throws an `ApiError` 503 (`db::Unavailable`) is kept with
/// everything queued behind it; any other exception is logged and that step dropped.
/// Thread-safe.
class EventRecorder {
  public:
    /// One step of an event; throws to report failure.
    using Step = std::function<void()>;

    /// Most events kept for one device; beyond it, progress-like events are dropped.
    static constexpr std::size_t kMaxPerDevice = 256;
    /// Most events kept in all (a few hundred bytes each).
    static constexpr std::size_t kMaxTotal = 100'000;
    /// Least time between two retries while the database is unavailable.
    static constexpr std::chrono::milliseconds kRetryInterval{1000};

    /// Queues the event's steps behind the device's earlier events (cheap, never blocks).
    /// Returns true when the caller must run flush(device_id) on the worker pool. `droppable`
    /// events (progress, interface reports) go first when the bounds are reached; beyond
    /// twice the bound, any event is dropped (and logged).
    bool record(std::int64_t device_id, std::vector<Step> steps, bool droppable,
                const std::string& what);
    /// Runs the device's queued events in order until none is left or the database is
    /// unavailable. Blocking: call on the worker pool.
    void flush(std::int64_t device_id);
    /// Whether events wait for the database with no flush running and a retry is due (claims
    /// it; cheap).
    bool retry_due();
    /// Writes back the waiting events, device by device, until none is left or the database is
    /// still unavailable. At most one caller at a time. Blocking: call on the worker pool.
    void retry();
    /// Events queued and not yet written.
    std::size_t pending() const { return pending_.load(); }

  private:
    struct Entry {
        std::vector<Step> steps;
        std::size_t done = 0;
        bool droppable = false;
        std::string what;
    };
    struct Queue {
        std::deque<Entry> entries;
        /// A flush of this queue is scheduled or running.
        bool busy = false;
    };
    /// Runs `entry`'s remaining steps; false when the database is unavailable.
    static bool run(Entry& entry);

    mutable std::mutex mutex_;
    std::unordered_map<std::int64_t, Queue> queues_;
    std::atomic<std::size_t> pending_{0};
    std::atomic<bool> unavailable_{false};
    /// Some queue has events and no flush: retry() must run.
    std::atomic<bool> stalled_{false};
    std::atomic<bool> retrying_{false};
    std::chrono::steady_clock::time_point last_failure_{};
    std::uint64_t dropped_ = 0;
    std::uint64_t kept_ = 0;
};

/// Observers of device activity, for other subsystems (deployments, metrics). Each runs on the
/// worker pool after the channel's own database writes; exceptions are logged and dropped.
struct DeviceHooks {
    /// After a successful `device` join (firmware metadata stored, join reply queued), with the
    /// facts read by the statement that stored it.
    std::vector<std::function<void(const SessionInfo&, const db::FirmwareReport&,
                                   const db::devices::JoinFacts&)>>
        on_join{};
    /// After a device event on topic `device` (`status_update`, `fwup_progress`, ...).
    std::vector<std::function<void(const SessionInfo&, const std::string& event,
                                   const nlohmann::json& payload)>>
        on_event{};
    /// After a session ended, on its strand (the row's close is queued: Presence).
    std::vector<std::function<void(const SessionInfo&)>> on_disconnect{};
    /// Where device events are written (and kept during a database outage); one per node.
    std::shared_ptr<EventRecorder> recorder = std::make_shared<EventRecorder>();
};

/// A join to store through the session's db::JoinBatcher; its facts go to `facts` before the
/// step's `after` runs.
struct JoinStep {
    db::devices::JoinRecord record{};
    std::shared_ptr<db::devices::JoinFacts> facts{};
};

/// What to do for one inbound frame: optional blocking work (database writes, hooks) to run on
/// the worker pool first, or a join to store, then the frames to send. If the work or the join
/// fails, `on_failure` is sent instead of `replies`.
struct ChannelStep {
    std::function<void()> work{};
    /// Instead of `work`. A pointer: a session's read loop holds its step across the wait.
    std::unique_ptr<JoinStep> join{};
    std::vector<phoenix::Message> replies{};
    std::vector<phoenix::Message> on_failure{};
    /// Blocking work run on the worker pool after the replies were queued (and only if `work` or
    /// `join` succeeded): observers whose pushes must follow the reply, e.g. an `update` after a
    /// join.
    std::function<void()> after{};
};

/// Reads the firmware facts of a NervesHubLink join payload (`nerves_fw_*`, `fwup_version`,
/// `device_api_version`, `meta`, `currently_downloading_uuid`). Bounded: at most 128 keys are
/// kept and strings are cut to 1 KiB.
db::FirmwareReport firmware_report_from_join(const nlohmann::json& payload);

/// The Phoenix channel logic of one device socket (topics `phoenix` and `device`). Not
/// thread-safe: use from the session's strand only.
class DeviceChannel {
  public:
    /// `info` is the session's own (not copied: one copy per connection is enough); it must
    /// outlive the channel.
    DeviceChannel(const SessionInfo& info, db::Database& db, const DeviceHooks& hooks);

    /// Decides what to do with one decoded frame.
    ChannelStep handle(const phoenix::Message& message);
    /// Whether topic `device` is joined.
    bool joined() const { return joined_; }
    /// The join_ref of the `device` join (for pushes that carry it).
    const std::optional<std::string>& join_ref() const { return join_ref_; }

  private:
    ChannelStep dispatch(const phoenix::Message& message);
    ChannelStep join(const phoenix::Message& message);
    ChannelStep device_event(const phoenix::Message& message);

    const SessionInfo& info_;
    db::Database& db_;
    const DeviceHooks& hooks_;
    bool joined_ = false;
    std::optional<std::string> join_ref_{};
    std::optional<std::chrono::steady_clock::time_point> last_progress_write_{};
    std::optional<std::string> last_stage_{};
};

}  // namespace otahub::device
