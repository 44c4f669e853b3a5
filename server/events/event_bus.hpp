#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {
class NotificationListener;
}  // namespace otahub::db

/// The cluster event bus: PostgreSQL LISTEN/NOTIFY on one channel, JSON payloads
/// `{"kind": "...", ...}`. Publishing happens inside the database transaction that makes the
/// change, so an event is delivered to every node (the publisher's too) exactly when the change
/// is visible, and never for a rolled-back change. Events sent while a node's listener is
/// reconnecting are lost; subscribers reload their state in `on_connected` instead.
namespace otahub::events {

/// Registered CAs or revocations changed: every node rebuilds its TLS trust snapshot.
inline constexpr std::string_view kTrustChanged = "trust_changed";
/// Close live sessions: `{"device_id"?, "fingerprint"?, "ca_id"?, "reason"}` (all given keys
/// must match).
inline constexpr std::string_view kSessionClose = "session_close";
/// A device connected: `{"device_id", "connection_id", "node_id"}`; nodes close that device's
/// older sessions.
inline constexpr std::string_view kDeviceConnected = "device_connected";
/// A device's settings or group changed: `{"device_id", "org_id", "product_id", "action"}`.
inline constexpr std::string_view kDeviceChanged = "device_changed";
/// Send an event to a device's live session: `{"device_id", "event", "payload"}` (delivered by
/// the node holding the session, dropped when the device is offline).
inline constexpr std::string_view kDevicePush = "device_push";

/// Queues the event `kind` with `data` (a JSON object; `kind` is added) on the bus inside `tx`.
/// Throws ApiError when the payload exceeds PostgreSQL's NOTIFY limit.
void publish(db::Tx& tx, std::string_view kind, nlohmann::json data = nlohmann::json::object());
/// The NOTIFY payload publish() sends: `data` (an object) with `kind` added, as JSON text. For
/// statements that send their NOTIFY themselves (devices::open_connection_and_notify).
std::string payload(std::string_view kind, nlohmann::json data);

/// Handler of one event kind; gets the whole payload object. Runs on the listener thread:
/// keep it cheap (post heavy work to a pool). Exceptions are logged and dropped.
using Handler = std::function<void(const nlohmann::json& event)>;

/// The receiving side on one node: one LISTEN connection, handlers by kind.
class EventBus {
  public:
    /// A bus listening on the database at `database_url`. Its connection is probed after 10 s
    /// without a notification and made again when the probe has no answer within
    /// `probe_timeout` (zero: no limit), so a half-open link does not silence the bus.
    explicit EventBus(std::string database_url,
                      std::chrono::milliseconds probe_timeout = std::chrono::seconds(15));
    ~EventBus();
    EventBus(const EventBus&) = delete;
    EventBus& operator=(const EventBus&) = delete;

    /// Adds a handler for `kind` (several per kind allowed). Call before `start`.
    void subscribe(std::string kind, Handler handler);
    /// Adds a callback run after every (re)connection of the listener (`first` on the first
    /// one), before any event received on that connection is handled. Call before `start`.
    void on_connected(std::function<void(bool first)> callback);
    /// Starts listening (returns at once; the connection is made on the listener thread).
    void start();
    /// Stops listening and joins the listener thread.
    void stop();
    /// Whether LISTEN is active.
    bool connected() const;
    /// Dispatches a raw payload as if it came from PostgreSQL (used by the listener; tests).
    void dispatch(const std::string& payload) const;

  private:
    std::string url_;
    std::chrono::milliseconds probe_timeout_;
    std::multimap<std::string, Handler> handlers_;
    std::vector<std::function<void(bool)>> connected_callbacks_;
    std::unique_ptr<db::NotificationListener> listener_;
};

}  // namespace otahub::events
