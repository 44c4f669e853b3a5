#include "server/device/device_channel.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

namespace otahub::device {
namespace {

namespace phx = phoenix;

constexpr std::size_t kMaxMetadataKeys = 128;
constexpr std::size_t kMaxMetadataString = 1024;
constexpr std::string_view kFwPrefix = "nerves_fw_";
/// Progress is written at most this often per device (NervesHub: 10 s), except 100 % and
/// stage changes.
constexpr auto kProgressWriteInterval = std::chrono::seconds(10);

nlohmann::json bounded(const nlohmann::json& value) {
    if (value.is_string()) {
        const auto& text = value.get_ref<const std::string&>();
        if (text.size() <= kMaxMetadataString) return value;
        // Cut on a UTF-8 character boundary.
        std::size_t cut = kMaxMetadataString;
        while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
        return text.substr(0, cut);
    }
    if (value.is_number() || value.is_boolean() || value.is_null()) return value;
    return nullptr;  // nested values are not kept, except `meta` (below)
}

std::optional<std::string> string_of(const nlohmann::json& object, const char* key) {
    auto it = object.find(key);
    if (it == object.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
        return std::nullopt;
    }
    return it->get<std::string>();
}

phx::Message error_reply(const phx::Message& request, const char* reason) {
    return phx::reply(request, "error", {{"reason", reason}});
}

void run_hooks(const char* what, const SessionInfo& info, const std::function<void()>& fn) {
    try {
        fn();
    } catch (const std::exception& e) {
        spdlog::warn("device={} hook {} failed: {}", info.identifier, what, e.what());
    }
}

bool database_unavailable(const ApiError& e) { return e.code() == ErrorCode::kUnavailable; }

}  // namespace

// ---- EventRecorder ----

bool EventRecorder::run(Entry& entry) {
    for (; entry.done < entry.steps.size(); ++entry.done) {
        try {
            entry.steps[entry.done]();
        } catch (const ApiError& e) {
            if (database_unavailable(e)) return false;
            spdlog::warn("device event {} failed: {}", entry.what, e.what());
        } catch (const std::exception& e) {
            spdlog::warn("device event {} failed: {}", entry.what, e.what());
        }
    }
    return true;
}

bool EventRecorder::record(std::int64_t device_id, std::vector<Step> steps, bool droppable,
                           const std::string& what) {
    const std::lock_guard lock{mutex_};
    auto& queue = queues_[device_id];
    const std::size_t bound = droppable ? kMaxPerDevice : 2 * kMaxPerDevice;
    if (queue.entries.size() >= bound || pending_.load() >= kMaxTotal) {
        if (dropped_++ % 1000 == 0) {
            spdlog::warn("dropping device {}: {} events wait for the database ({} dropped)", what,
                         pending_.load(), dropped_);
        }
        if (queue.entries.empty() && !queue.busy) queues_.erase(device_id);
        return false;
    }
    queue.entries.push_back(Entry{std::move(steps), 0, droppable, what});
    ++pending_;
    if (unavailable_.load()) ++kept_;
    if (queue.busy) return false;
    // While the database is unavailable, retry() writes the queues back, not every new event.
    if (unavailable_.load()) {
        stalled_.store(true);
        return false;
    }
    queue.busy = true;
    return true;
}

void EventRecorder::flush(std::int64_t device_id) {
    for (;;) {
        Entry* entry = nullptr;
        {
            const std::lock_guard lock{mutex_};
            auto it = queues_.find(device_id);
            if (it == queues_.end()) return;
            if (it->second.entries.empty()) {
                queues_.erase(it);
                return;
            }
            // Only the busy flusher removes entries, and push_back keeps references valid.
            entry = &it->second.entries.front();
        }
        const bool written = run(*entry);
        const std::lock_guard lock{mutex_};
        auto& queue = queues_[device_id];
        if (!written) {
            queue.busy = false;
            stalled_.store(true);
            last_failure_ = std::chrono::steady_clock::now();
            if (!unavailable_.exchange(true)) {
                kept_ = pending_.load();
                spdlog::warn("database unavailable: keeping device events until it returns");
            }
            return;
        }
        queue.entries.pop_front();
        --pending_;
        unavailable_.store(false);
    }
}

bool EventRecorder::retry_due() {
    if (!stalled_.load() || retrying_.load()) return false;
    const auto now = std::chrono::steady_clock::now();
    const std::lock_guard lock{mutex_};
    if (now - last_failure_ < kRetryInterval) return false;
    // Claim this slot: other frames in the same interval do not schedule another retry.
    last_failure_ = now;
    return true;
}

void EventRecorder::retry() {
    bool expected = false;
    if (!retrying_.compare_exchange_strong(expected, true)) return;
    std::uint64_t kept = 0;
    {
        const std::lock_guard lock{mutex_};
        kept = kept_;
    }
    // Probe with one device first; once it is written, the rest go too.
    unavailable_.store(false);
    for (;;) {
        std::optional<std::int64_t> next;
        {
            const std::lock_guard lock{mutex_};
            for (auto& [device_id, queue] : queues_) {
                if (!queue.busy && !queue.entries.empty()) {
                    queue.busy = true;
                    next = device_id;
                    break;
                }
            }
        }
        if (!next) {
            // Every queue is written or being written by its own flush.
            stalled_.store(false);
            break;
        }
        flush(*next);
        if (unavailable_.load()) break;
    }
    retrying_.store(false);
    if (!unavailable_.load() && kept > 0) {
        {
            const std::lock_guard lock{mutex_};
            kept_ = 0;
        }
        spdlog::info(
            "database available: wrote back {} device events kept during the outage ({} "
            "still queued)",
            kept, pending_.load());
    }
}

// ---- DeviceChannel ----

db::FirmwareReport firmware_report_from_join(const nlohmann::json& payload) {
    db::FirmwareReport report;
    if (!payload.is_object()) return report;
    auto& metadata = report.metadata;
    for (const auto& [key, value] : payload.items()) {
        if (metadata.size() >= kMaxMetadataKeys) break;
        if (key.starts_with(kFwPrefix) && key.size() > kFwPrefix.size()) {
            metadata[key.substr(kFwPrefix.size())] = bounded(value);
        } else if (key == "fwup_version" || key == "device_api_version" ||
                   key == "console_version" || key == "currently_downloading_uuid") {
            metadata[key] = bounded(value);
        } else if (key == "meta" && value.is_object()) {
            nlohmann::json meta = nlohmann::json::object();
            for (const auto& [meta_key, meta_value] : value.items()) {
                if (meta.size() >= 32) break;
                meta[meta_key] = bounded(meta_value);
            }
            metadata["meta"] = std::move(meta);
        }
    }
    report.uuid = string_of(metadata, "uuid");
    report.version = string_of(metadata, "version");
    report.platform = string_of(metadata, "platform");
    report.architecture = string_of(metadata, "architecture");
    report.product = string_of(metadata, "product");
    report.device_api_version = string_of(metadata, "device_api_version");
    report.currently_downloading_uuid = string_of(metadata, "currently_downloading_uuid");
    if (auto meta = metadata.find("meta"); meta != metadata.end() && meta->is_object()) {
        if (auto v = meta->find("firmware_validated"); v != meta->end() && v->is_boolean()) {
            report.validation_status = v->get<bool>() ? "validated" : "not_validated";
        }
        if (auto v = meta->find("firmware_auto_revert_detected");
            v != meta->end() && v->is_boolean()) {
            report.auto_revert_detected = v->get<bool>();
        }
    }
    return report;
}

DeviceChannel::DeviceChannel(const SessionInfo& info, db::Database& db, const DeviceHooks& hooks)
    : info_(info), db_(db), hooks_(hooks) {}

ChannelStep DeviceChannel::handle(const phx::Message& message) {
    ChannelStep step = dispatch(message);
    // Events kept during a database outage are retried from the traffic of any device (each
    // device heartbeats at least every 30 s), at most once per EventRecorder::kRetryInterval.
    if (hooks_.recorder->retry_due()) {
        step.after = [after = std::move(step.after), recorder = hooks_.recorder] {
            if (after) after();
            recorder->retry();
        };
    }
    return step;
}

ChannelStep DeviceChannel::dispatch(const phx::Message& message) {
    ChannelStep step;
    if (message.topic == phx::kPhoenixTopic) {
        if (message.event == phx::kHeartbeat) {
            step.replies.push_back(phx::reply(message, "ok", nlohmann::json::object()));
        }
        return step;
    }
    if (message.event == phx::kPhxJoin) {
        if (message.topic == "device") return join(message);
        step.replies.push_back(error_reply(message, "unmatched topic"));
        return step;
    }
    if (message.topic == "device" && joined_) {
        if (message.event == phx::kPhxLeave) {
            joined_ = false;
            join_ref_.reset();
            step.replies.push_back(phx::reply(message, "ok", nlohmann::json::object()));
            step.replies.push_back(phx::close_message("device", message.join_ref));
            return step;
        }
        return device_event(message);
    }
    // A frame for a topic that is not joined: Phoenix answers "unmatched topic".
    if (message.ref) step.replies.push_back(error_reply(message, "unmatched topic"));
    return step;
}

ChannelStep DeviceChannel::join(const phx::Message& message) {
    ChannelStep step;
    if (!message.payload.is_object()) {
        step.replies.push_back(phx::reply(message, "error", {{"error", "could not connect"}}));
        return step;
    }
    joined_ = true;
    join_ref_ = message.join_ref;
    auto report =
        std::make_shared<const db::FirmwareReport>(firmware_report_from_join(message.payload));
    auto facts = std::make_shared<db::devices::JoinFacts>();
    // Stored with the joins that arrive together, by one statement that also reads what the
    // observers below start from (update in flight, rotation work).
    step.join = std::make_unique<JoinStep>(
        JoinStep{{info_.device_id, report, info_.fingerprint, info_.ca_id}, facts});
    if (!hooks_.on_join.empty()) {
        step.after = [&hooks = hooks_, info = info_, report, facts] {
            for (const auto& hook : hooks.on_join) {
                run_hooks("on_join", info, [&] { hook(info, *report, *facts); });
            }
        };
    }
    step.replies.push_back(phx::reply(message, "ok", nlohmann::json::object()));
    step.on_failure.push_back(phx::reply(message, "error", {{"error", "could not connect"}}));
    return step;
}

ChannelStep DeviceChannel::device_event(const phx::Message& message) {
    // NervesHub never replies to device events; unknown ones are ignored.
    ChannelStep step;
    const auto& event = message.event;
    const auto& payload = message.payload;
    std::function<void(db::Tx&)> write;
    const std::int64_t device_id = info_.device_id;

    if (event == "fwup_progress" || event == "update_progress") {
        auto value = payload.is_object() ? payload.find("value") : payload.end();
        if (!payload.is_object() || value == payload.end() || !value->is_number()) return step;
        const int percent = static_cast<int>(std::clamp(value->get<double>(), 0.0, 100.0));
        std::optional<std::string> stage = string_of(payload, "stage");
        const auto now = std::chrono::steady_clock::now();
        const bool due = !last_progress_write_ ||
                         now - *last_progress_write_ >= kProgressWriteInterval || percent == 100 ||
                         stage != last_stage_;
        if (due) {
            last_progress_write_ = now;
            last_stage_ = stage;
            write = [device_id, percent, stage](db::Tx& tx) {
                db::devices::record_progress(tx, device_id, percent, stage);
            };
        }
    } else if (event == "status_update") {
        auto status = payload.is_object() ? string_of(payload, "status") : std::nullopt;
        if (!status) return step;
        if (status->find("fwup error") != std::string::npos) *status = "failed";
        std::optional<std::string> reason;
        if (auto r = payload.find("reason"); r != payload.end() && !r->is_null()) {
            reason = r->is_string() ? r->get<std::string>() : r->dump();
            if (reason->size() > 1024) reason->resize(1024);
        }
        std::optional<std::int64_t> delay;
        if (*status == "rescheduled") {
            // NervesHubLink sends delay_for in minutes (NervesHub adds it as milliseconds).
            if (auto d = payload.find("delay_for"); d != payload.end() && d->is_number()) {
                delay = static_cast<std::int64_t>(std::clamp(d->get<double>(), 0.0, 525600.0));
            }
        }
        if (status->size() > 64) status->resize(64);
        write = [device_id, status = *status, reason, delay](db::Tx& tx) {
            db::devices::record_status(tx, device_id, status, reason, delay);
        };
    } else if (event == "connection_types") {
        std::vector<std::string> types;
        const nlohmann::json* values = nullptr;
        if (payload.is_object()) {
            if (auto v = payload.find("values"); v != payload.end())
                values = &*v;
            else if (auto v1 = payload.find("value"); v1 != payload.end())
                values = &*v1;
        }
        if (values == nullptr || !values->is_array()) return step;
        for (const auto& v : *values) {
            if (v.is_string() && types.size() < 16) types.push_back(bounded(v).get<std::string>());
        }
        write = [device_id, types](db::Tx& tx) {
            db::devices::record_connection_types(tx, device_id, types);
        };
    } else if (event == "firmware_validated") {
        write = [device_id](db::Tx& tx) { db::devices::record_firmware_validated(tx, device_id); };
    } else if (event == "report_network_interface") {
        auto name = payload.is_object() ? string_of(payload, "interface") : std::nullopt;
        if (!name) return step;
        if (name->size() > 64) name->resize(64);
        write = [device_id, name = *name](db::Tx& tx) {
            db::devices::record_network_interface(tx, device_id, name);
        };
    } else if (event != "rebooting") {
        spdlog::debug("device={} ignored event {}", info_.identifier, event);
    }
    if (!write && hooks_.on_event.empty()) return step;

    // The write, then the observers (the rollout engine ends updates on status_update), kept in
    // order for this device while the database is unavailable.
    std::vector<EventRecorder::Step> steps;
    if (write) {
        steps.emplace_back([&db = db_, write = std::move(write)] { db.run(write); });
    }
    for (const auto& hook : hooks_.on_event) {
        steps.emplace_back([&hook, info = info_, event, payload] { hook(info, event, payload); });
    }
    const bool droppable = event != "status_update" && event != "firmware_validated";
    if (hooks_.recorder->record(device_id, std::move(steps), droppable,
                                event + " of " + info_.identifier)) {
        step.after = [recorder = hooks_.recorder, device_id] { recorder->flush(device_id); };
    }
    return step;
}

}  // namespace otahub::device
