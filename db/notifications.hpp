#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "db/database.hpp"

namespace otahub::db {

/// The PostgreSQL channel every otahub node listens on.
inline constexpr const char* kEventChannel = "otahub_events";

/// Largest payload PostgreSQL accepts for NOTIFY (8000 bytes minus a margin).
inline constexpr std::size_t kMaxNotifyPayload = 7900;

/// Queues `payload` on the event channel inside `tx`: PostgreSQL delivers it to every listener
/// when (and only when) the transaction commits. Throws ApiError for an oversized payload.
void notify(Tx& tx, const std::string& payload);

/// Options of a `NotificationListener`.
struct ListenerOptions {
    /// libpq URI of the database.
    std::string url{};
    /// Channel to LISTEN on.
    std::string channel{kEventChannel};
    /// Called on the listener thread for each notification payload; keep it cheap. Exceptions
    /// are logged and dropped.
    std::function<void(const std::string& payload)> on_notification{};
    /// Called on the listener thread after every (re)connection, once LISTEN is active:
    /// notifications sent while disconnected are lost, so state derived from them is reloaded.
    std::function<void(bool first)> on_connected{};
    /// First reconnection delay; doubles up to `max_backoff`.
    std::chrono::milliseconds min_backoff{100};
    /// Longest reconnection delay.
    std::chrono::milliseconds max_backoff{5000};
    /// After this long without a notification the listener asks the server something (`SELECT
    /// 1`): a black-holed or half-open link never wakes a connection that only waits, and
    /// notifications would stop without anything noticing. Zero: never.
    std::chrono::milliseconds probe_interval{std::chrono::seconds(10)};
    /// How long that question may go unanswered before the connection is dropped and made again
    /// (reloading state through `on_connected`). Zero: no limit.
    std::chrono::milliseconds probe_timeout{std::chrono::seconds(15)};
};

/// A dedicated PostgreSQL connection doing LISTEN on its own thread, reconnecting with backoff.
/// Thread-safe start/stop; callbacks run on the listener thread.
class NotificationListener {
  public:
    explicit NotificationListener(ListenerOptions options);
    ~NotificationListener();
    NotificationListener(const NotificationListener&) = delete;
    NotificationListener& operator=(const NotificationListener&) = delete;

    /// Starts the thread (idempotent).
    void start();
    /// Stops and joins the thread within about 250 ms (idempotent).
    void stop();
    /// Whether LISTEN is active right now.
    bool connected() const;

    struct Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace otahub::db
