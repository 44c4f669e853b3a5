#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "db/database.hpp"
#include "db/repositories/devices_repository.hpp"
#include "server/device/phoenix.hpp"
#include "server/device/session_info.hpp"

namespace otahub::device {

/// Observers of device activity, for other subsystems (deployments, metrics). Each runs on the
/// worker pool after the channel's own database writes; exceptions are logged and dropped.
struct DeviceHooks {
    /// After a successful `device` join (firmware metadata stored, join reply queued).
    std::vector<std::function<void(const SessionInfo&, const db::FirmwareReport&)>> on_join{};
    /// After a device event on topic `device` (`status_update`, `fwup_progress`, ...).
    std::vector<std::function<void(const SessionInfo&, const std::string& event,
                                   const nlohmann::json& payload)>>
        on_event{};
    /// After a session ended (connection row closed).
    std::vector<std::function<void(const SessionInfo&)>> on_disconnect{};
};

/// What to do for one inbound frame: optional blocking work (database writes, hooks) to run on
/// the worker pool first, then the frames to send. If the work throws, `on_failure` is sent
/// instead of `replies`.
struct ChannelStep {
    std::function<void()> work{};
    std::vector<phoenix::Message> replies{};
    std::vector<phoenix::Message> on_failure{};
    /// Blocking work run on the worker pool after the replies were queued (and only if `work`
    /// succeeded): observers whose pushes must follow the reply, e.g. an `update` after a join.
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
    DeviceChannel(SessionInfo info, db::Database& db, const DeviceHooks& hooks);

    /// Decides what to do with one decoded frame.
    ChannelStep handle(const phoenix::Message& message);
    /// Whether topic `device` is joined.
    bool joined() const { return joined_; }
    /// The join_ref of the `device` join (for pushes that carry it).
    const std::optional<std::string>& join_ref() const { return join_ref_; }

  private:
    ChannelStep join(const phoenix::Message& message);
    ChannelStep device_event(const phoenix::Message& message);

    SessionInfo info_;
    db::Database& db_;
    const DeviceHooks& hooks_;
    bool joined_ = false;
    std::optional<std::string> join_ref_{};
    std::optional<std::chrono::steady_clock::time_point> last_progress_write_{};
    std::optional<std::string> last_stage_{};
};

}  // namespace otahub::device
