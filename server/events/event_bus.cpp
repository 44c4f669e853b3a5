#include "server/events/event_bus.hpp"

#include <spdlog/spdlog.h>

#include "db/notifications.hpp"

namespace otahub::events {

std::string payload(std::string_view kind, nlohmann::json data) {
    if (!data.is_object()) data = nlohmann::json::object();
    data["kind"] = std::string(kind);
    return data.dump();
}

void publish(db::Tx& tx, std::string_view kind, nlohmann::json data) {
    db::notify(tx, payload(kind, std::move(data)));
}

EventBus::EventBus(std::string database_url, std::chrono::milliseconds probe_timeout)
    : url_(std::move(database_url)), probe_timeout_(probe_timeout) {}

EventBus::~EventBus() { stop(); }

void EventBus::subscribe(std::string kind, Handler handler) {
    handlers_.emplace(std::move(kind), std::move(handler));
}

void EventBus::on_connected(std::function<void(bool first)> callback) {
    connected_callbacks_.push_back(std::move(callback));
}

void EventBus::start() {
    if (listener_) return;
    db::ListenerOptions options;
    options.url = url_;
    options.probe_timeout = probe_timeout_;
    options.on_notification = [this](const std::string& payload) { dispatch(payload); };
    options.on_connected = [this](bool first) {
        for (const auto& callback : connected_callbacks_) {
            try {
                callback(first);
            } catch (const std::exception& e) {
                spdlog::warn("event bus reconnect handler failed: {}", e.what());
            }
        }
    };
    listener_ = std::make_unique<db::NotificationListener>(std::move(options));
    listener_->start();
}

void EventBus::stop() {
    if (listener_) listener_->stop();
}

bool EventBus::connected() const { return listener_ && listener_->connected(); }

void EventBus::dispatch(const std::string& payload) const {
    auto event = nlohmann::json::parse(payload, nullptr, false);
    if (event.is_discarded() || !event.is_object() || !event.contains("kind") ||
        !event["kind"].is_string()) {
        spdlog::warn("event bus: ignoring malformed payload ({} bytes)", payload.size());
        return;
    }
    const auto kind = event["kind"].get<std::string>();
    auto [begin, end] = handlers_.equal_range(kind);
    if (begin == end) {
        spdlog::debug("event bus: no handler for kind {}", kind);
        return;
    }
    for (auto it = begin; it != end; ++it) {
        try {
            it->second(event);
        } catch (const std::exception& e) {
            spdlog::warn("event bus: handler for {} failed: {}", kind, e.what());
        }
    }
}

}  // namespace otahub::events
