#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "server/device/session_info.hpp"

namespace otahub::device {

/// What the registry needs from a live session; implemented by the websocket session.
class SessionHandle {
  public:
    virtual ~SessionHandle() = default;
    /// Who the session is.
    virtual const SessionInfo& info() const = 0;
    /// Closes the websocket with `code` and `reason`; thread-safe, idempotent.
    virtual void close(std::uint16_t code, std::string reason) = 0;
    /// Sends a fast-laned push `[null, null, "device", event, payload]`; thread-safe. Dropped
    /// when the device has not joined `device` or the session is closing.
    virtual void push(std::string event, nlohmann::json payload) = 0;
    /// Sends an already encoded push frame (one encoding shared by many sessions); same rules.
    virtual void push_frame(std::shared_ptr<const std::string> frame, std::string event) = 0;
};

/// Which sessions to close: every given field must match.
struct SessionFilter {
    std::optional<std::int64_t> device_id{};
    std::optional<std::string> fingerprint{};
    std::optional<std::int64_t> ca_id{};
    /// Only sessions older (smaller connection id) than this one.
    std::optional<std::int64_t> older_than{};
};

/// The live device sessions of this node, one per device. Thread-safe.
class SessionRegistry {
  public:
    /// Adds a session. An older session of the same device is closed (1000, "replaced by a
    /// newer connection"); if the registered one is newer, `session` itself is closed instead.
    void add(const std::shared_ptr<SessionHandle>& session);
    /// Removes `session` if it is the registered one for its device.
    void remove(const SessionHandle& session);
    /// Closes the sessions matching `filter`; returns how many.
    std::size_t close_matching(const SessionFilter& filter, std::uint16_t code,
                               const std::string& reason);
    /// Closes every session (shutdown); returns how many.
    std::size_t close_all(std::uint16_t code, const std::string& reason);
    /// Pushes an event to the device's session; false when it has none here.
    bool push(std::int64_t device_id, std::string event, nlohmann::json payload);
    /// Sends an encoded push frame to the device's session; false when it has none here.
    bool push_frame(std::int64_t device_id, std::shared_ptr<const std::string> frame,
                    std::string event);
    /// Whether the device has a session on this node.
    bool has(std::int64_t device_id) const;
    /// Number of sessions.
    std::size_t size() const;
    /// A copy of the current sessions (e.g. to re-check them against new trust).
    std::vector<std::shared_ptr<SessionHandle>> snapshot() const;

  private:
    mutable std::mutex mutex_;
    std::unordered_map<std::int64_t, std::weak_ptr<SessionHandle>> by_device_;
};

}  // namespace otahub::device
