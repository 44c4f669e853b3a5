#include "server/rollout/rollout_engine.hpp"

#include <spdlog/spdlog.h>
#include <algorithm>
#include <cctype>
#include <map>

#include "db/repositories/audit_repository.hpp"
#include "server/api/firmware_url.hpp"
#include "server/app/metrics.hpp"
#include "server/device/phoenix.hpp"
#include "server/events/event_bus.hpp"
#include "server/rollout/facts.hpp"

namespace otahub::rollout {
namespace {

using Clock = std::chrono::system_clock;

std::string upper(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return text;
}

nlohmann::json text_or_null(const std::string& text) {
    return text.empty() ? nlohmann::json(nullptr) : nlohmann::json(text);
}

/// How long engine shutdown waits for evaluations in progress.
constexpr auto kStopWait = std::chrono::seconds(5);

}  // namespace

nlohmann::json update_payload(const Config& config, const db::FirmwareRow& firmware,
                              std::optional<std::int64_t> deployment_id, Clock::time_point now) {
    nlohmann::json partials = nlohmann::json::array();
    for (const auto& sum : firmware.partial_sha256) partials.push_back(upper(sum));
    return {{"update_available", true},
            {"firmware_url", api::signed_firmware_url(config, firmware.org_id, firmware.uuid, now)},
            {"firmware_meta",
             {{"architecture", firmware.architecture},
              {"author", text_or_null(firmware.author)},
              {"description", text_or_null(firmware.description)},
              {"misc", text_or_null(firmware.misc)},
              {"platform", firmware.platform},
              {"product", firmware.product},
              {"uuid", firmware.uuid},
              {"vcs_identifier", text_or_null(firmware.vcs_identifier)},
              {"version", firmware.version}}},
            {"size", firmware.size},
            {"checksum", upper(firmware.sha256)},
            {"partials_checksums", partials},
            {"deployment_id", deployment_id ? nlohmann::json(*deployment_id) : nullptr}};
}

void publish_wake(db::Tx& tx, std::int64_t product_id) {
    events::publish(tx, kRolloutWake, {{"product_id", product_id}});
}

RolloutEngine::RolloutEngine(db::Database& db, const Config& config,
                             device::SessionRegistry& sessions, net::asio::thread_pool& workers)
    : db_(db), config_(config), sessions_(sessions), workers_(workers) {}

RolloutEngine::~RolloutEngine() { stop(); }

// ---- device hooks ----

void RolloutEngine::on_join(const device::SessionInfo& info, const db::FirmwareReport& report,
                            bool in_flight) {
    {
        const std::lock_guard lock{mutex_};
        local_[info.device_id] = Local{info.product_id, info.connection_id};
    }
    std::optional<db::FirmwareRow> resend;
    std::optional<std::int64_t> resend_deployment;
    // Most joins have no update in flight, as the join's own statement found out; the
    // transaction below re-reads it when there is one.
    if (in_flight) {
        db_.run([&](db::Tx& tx) {
            auto current = db::rollouts::in_flight(tx, info.device_id);
            if (!current) return;
            if (report.uuid && *report.uuid == current->firmware_uuid) {
                // Reconnected running the firmware it was sent: the update succeeded.
                db::rollouts::finish(tx, info.device_id, "succeeded", std::nullopt);
                metrics::update_outcome("succeeded");
                if (current->deployment_id) publish_wake(tx, info.product_id);
                spdlog::info("device={} updated to {} ({})", info.identifier,
                             current->firmware_uuid, current->deployment_name.value_or("manual"));
                return;
            }
            // Still on another firmware: send the same update again (the download resumes).
            std::optional<db::FirmwareRow> firmware;
            if (current->firmware_id)
                firmware = db::firmwares::find_by_id(tx, *current->firmware_id);
            if (!firmware) {
                db::rollouts::finish(tx, info.device_id, "cancelled",
                                     std::string("the firmware was deleted"));
                if (current->deployment_id) publish_wake(tx, info.product_id);
                return;
            }
            resend = std::move(firmware);
            resend_deployment = current->deployment_id;
        });
    }
    if (resend) {
        push(info.device_id, *resend, resend_deployment);
        return;
    }
    schedule(info.product_id, info.device_id);
}

void RolloutEngine::on_event(const device::SessionInfo& info, const std::string& event,
                             const nlohmann::json& payload) {
    if (event != "status_update" || !payload.is_object()) return;
    auto it = payload.find("status");
    if (it == payload.end() || !it->is_string()) return;
    const auto status = it->get<std::string>();
    std::optional<std::string> reason;
    if (auto r = payload.find("reason"); r != payload.end() && !r->is_null()) {
        reason = r->is_string() ? r->get<std::string>() : r->dump();
        if (reason->size() > 1024) reason->resize(1024);
    }
    if (status == "failed" || status.find("fwup error") != std::string::npos) {
        end_update(info.device_id, "failed", reason ? reason : std::optional<std::string>(status),
                   true);
    } else if (status == "ignored") {
        end_update(info.device_id, "failed",
                   "ignored by the device" + (reason ? ": " + *reason : ""), true);
    } else if (status == "rescheduled") {
        end_update(info.device_id, "rescheduled", reason, false);
    }
}

void RolloutEngine::wake_at(std::int64_t device_id, std::int64_t product_id,
                            Clock::time_point when) {
    auto timer = std::make_shared<net::asio::system_timer>(workers_, when);
    {
        const std::lock_guard lock{mutex_};
        if (stopped_) return;
        auto& slot = timers_[device_id];
        if (slot) slot->cancel();
        slot = timer;
    }
    timer->async_wait([this, timer, device_id, product_id](const boost::system::error_code& ec) {
        if (ec) return;
        {
            const std::lock_guard lock{mutex_};
            auto it = timers_.find(device_id);
            if (it != timers_.end() && it->second == timer) timers_.erase(it);
            if (!local_.contains(device_id)) return;
        }
        schedule(product_id, device_id);
    });
}

void RolloutEngine::on_disconnect(const device::SessionInfo& info) {
    const std::lock_guard lock{mutex_};
    auto it = local_.find(info.device_id);
    if (it != local_.end() && it->second.connection_id == info.connection_id) local_.erase(it);
}

void RolloutEngine::end_update(std::int64_t device_id, const std::string& status,
                               const std::optional<std::string>& reason, bool failure) {
    std::optional<std::string> penalty_until;
    std::optional<std::int64_t> blocked_until;
    std::int64_t product_id = 0;
    db_.transact([&](db::Tx& tx) {
        auto ended = db::rollouts::finish(tx, device_id, status, reason);
        if (!ended) return 0;
        metrics::update_outcome(status);
        product_id = ended->product_id;
        blocked_until.reset();
        if (failure) {
            auto outcome = db::rollouts::record_failure(tx, *ended, true);
            penalty_until = outcome.penalty_until;
            if (outcome.paused_reason && ended->deployment_id) {
                db::AuditEntry entry;
                entry.org_id = ended->org_id;
                entry.actor = "rollout";
                entry.action = "deployment.paused";
                entry.resource_type = "deployment";
                entry.resource = ended->deployment_name.value_or("");
                entry.details = {{"reason", *outcome.paused_reason},
                                 {"deployment_id", *ended->deployment_id}};
                db::audit::record(tx, entry);
                events::publish(
                    tx, kDeploymentChanged,
                    {{"product_id", ended->product_id}, {"deployment_id", *ended->deployment_id}});
                spdlog::warn("deployment {} paused: {}", entry.resource, *outcome.paused_reason);
            }
        }
        if (ended->deployment_id) publish_wake(tx, ended->product_id);
        blocked_until = db::rollouts::blocked_until(tx, device_id);
        return 0;
    });
    if (penalty_until) {
        spdlog::info("device_id={} in the penalty box until {}", device_id, *penalty_until);
    }
    if (blocked_until) {
        wake_at(device_id, product_id, Clock::time_point{std::chrono::seconds{*blocked_until}});
    }
}

// ---- evaluation ----

void RolloutEngine::product_changed(std::int64_t product_id) {
    forget_deployments(product_id);
    schedule(product_id, std::nullopt);
}

std::shared_ptr<const RolloutEngine::ActiveDeployments> RolloutEngine::active_deployments(
    db::Tx& tx, std::int64_t product_id) {
    std::uint64_t epoch = 0;
    {
        const std::lock_guard lock{mutex_};
        if (auto it = deployments_.find(product_id); it != deployments_.end()) return it->second;
        epoch = deployments_epoch_;
    }
    auto loaded = std::make_shared<ActiveDeployments>();
    loaded->rows = db::rollouts::active_deployments(tx, product_id);
    loaded->compiled.reserve(loaded->rows.size());
    for (const auto& d : loaded->rows) loaded->compiled.emplace_back(facts_of(d));
    {
        const std::lock_guard lock{mutex_};
        if (epoch == deployments_epoch_) deployments_[product_id] = loaded;
    }
    return loaded;
}

void RolloutEngine::forget_deployments(std::optional<std::int64_t> product_id) {
    const std::lock_guard lock{mutex_};
    ++deployments_epoch_;
    if (product_id) {
        deployments_.erase(*product_id);
    } else {
        deployments_.clear();
    }
}

void RolloutEngine::device_changed(std::int64_t device_id) {
    std::int64_t product_id = 0;
    {
        const std::lock_guard lock{mutex_};
        auto it = local_.find(device_id);
        if (it == local_.end()) return;
        product_id = it->second.product_id;
    }
    schedule(product_id, device_id);
}

void RolloutEngine::push_in_flight(std::int64_t device_id) {
    {
        const std::lock_guard lock{mutex_};
        if (!local_.contains(device_id)) return;
    }
    net::asio::post(workers_, [this, device_id] {
        try {
            std::optional<db::FirmwareRow> firmware;
            std::optional<std::int64_t> deployment_id;
            db_.transact([&](db::Tx& tx) {
                auto current = db::rollouts::in_flight(tx, device_id);
                if (current && current->firmware_id) {
                    firmware = db::firmwares::find_by_id(tx, *current->firmware_id);
                    deployment_id = current->deployment_id;
                }
                return 0;
            });
            if (firmware) push(device_id, *firmware, deployment_id);
        } catch (const std::exception& e) {
            spdlog::warn("pushing the update of device_id={} failed: {}", device_id, e.what());
        }
    });
}

void RolloutEngine::schedule(std::int64_t product_id, std::optional<std::int64_t> device_id) {
    {
        const std::lock_guard lock{mutex_};
        auto& pending = pending_[product_id];
        if (device_id) {
            pending.ids.insert(*device_id);
        } else {
            pending.all = true;
        }
        if (pending.running) return;
        if (stopped_) return;
        pending.running = true;
        ++running_;
    }
    net::asio::post(workers_, [this, product_id] { drain(product_id); });
}

void RolloutEngine::drain(std::int64_t product_id) {
    for (;;) {
        std::vector<std::int64_t> ids;
        {
            std::unique_lock lock{mutex_};
            auto& pending = pending_[product_id];
            if (!pending.all && pending.ids.empty()) {
                pending_.erase(product_id);
                --running_;
                idle_.notify_all();
                return;
            }
            if (pending.all) {
                for (const auto& [id, local] : local_) {
                    if (local.product_id == product_id) ids.push_back(id);
                }
            } else {
                for (auto id : pending.ids) {
                    auto it = local_.find(id);
                    if (it != local_.end() && it->second.product_id == product_id) {
                        ids.push_back(id);
                    }
                }
            }
            pending.all = false;
            pending.ids.clear();
        }
        try {
            evaluate(product_id, ids);
        } catch (const std::exception& e) {
            spdlog::warn("rollout evaluation of product_id={} failed: {}", product_id, e.what());
        }
    }
}

void RolloutEngine::evaluate(std::int64_t product_id, const std::vector<std::int64_t>& device_ids) {
    if (device_ids.empty()) return;
    struct Wanted {
        db::DeploymentRow deployment;
        std::vector<std::int64_t> devices;
    };
    std::vector<Wanted> wanted;
    // Reads only, no locks: no transaction block (start_updates re-checks under the deployment's
    // lock before it takes any slot).
    db_.autocommit([&](db::Tx& tx) {
        wanted.clear();
        const auto active = active_deployments(tx, product_id);
        if (active->rows.empty()) return;

        // Which deployment each free device resolves to, when that is new firmware for it.
        std::map<std::size_t, std::vector<std::int64_t>> chosen_by;
        for (const auto& candidate : db::rollouts::candidates(tx, product_id, device_ids)) {
            auto chosen = resolution::choose(facts_of(candidate, product_id), active->compiled);
            if (!chosen) continue;
            if (active->rows[*chosen].firmware_uuid == candidate.firmware_uuid) continue;
            chosen_by[*chosen].push_back(candidate.id);
        }
        for (auto& [index, devices] : chosen_by) {
            wanted.push_back(Wanted{active->rows[index], std::move(devices)});
        }
    });
    for (const auto& w : wanted) start_updates(w.deployment, w.devices);
}

void RolloutEngine::start_updates(const db::DeploymentRow& deployment,
                                  const std::vector<std::int64_t>& devices) {
    // A small first chunk gets the first frames out quickly; larger ones then keep the number
    // of transactions low. Each chunk re-takes the slots under the deployment's row lock, so
    // the concurrency limit stays exact across nodes, and stops if the deployment was switched
    // off or moved to another firmware in the meantime.
    constexpr std::size_t kFirstChunk = 250;
    constexpr std::size_t kChunk = 1000;
    std::optional<db::FirmwareRow> firmware;
    std::shared_ptr<const std::string> frame;
    std::size_t sent = 0;
    for (std::size_t offset = 0; offset < devices.size();) {
        const std::size_t size =
            std::min(devices.size() - offset, offset == 0 ? kFirstChunk : kChunk);
        const std::vector<std::int64_t> chunk(
            devices.begin() + static_cast<std::ptrdiff_t>(offset),
            devices.begin() + static_cast<std::ptrdiff_t>(offset + size));
        offset += size;
        std::vector<std::int64_t> got;
        bool exhausted = false;
        db_.transact([&](db::Tx& tx) {
            got.clear();
            exhausted = false;
            const auto slots = db::rollouts::lock_slots(tx, deployment.id, deployment.firmware_id);
            if (!slots || *slots <= 0) {
                exhausted = true;
                return 0;
            }
            if (!firmware) firmware = db::firmwares::find_by_id(tx, deployment.firmware_id);
            if (!firmware) {
                exhausted = true;
                return 0;
            }
            auto take = chunk;
            if (static_cast<std::int64_t>(take.size()) > *slots) {
                take.resize(static_cast<std::size_t>(*slots));
                exhausted = true;
            }
            got = db::rollouts::start(tx, deployment, take);
            return 0;
        });
        if (!got.empty()) {
            // One encoding for the whole rollout: the frame is the same for every device.
            namespace phx = device::phoenix;
            if (!frame) {
                frame = std::make_shared<const std::string>(phx::encode(
                    phx::push("device", "update",
                              update_payload(config_, *firmware, deployment.id, Clock::now()))));
            }
            for (auto device_id : got) {
                metrics::update_outcome("sent");
                if (!sessions_.push_frame(device_id, frame, "update")) {
                    spdlog::debug(
                        "device_id={} left before its update was sent; it gets it "
                        "again on its next join",
                        device_id);
                }
            }
            sent += got.size();
        }
        if (exhausted) break;
    }
    if (sent > 0) {
        spdlog::info("deployment_id={} sent firmware {} to {} device(s)", deployment.id,
                     firmware->uuid, sent);
    }
}

void RolloutEngine::push(std::int64_t device_id, const db::FirmwareRow& firmware,
                         std::optional<std::int64_t> deployment_id) {
    sessions_.push(device_id, "update",
                   update_payload(config_, firmware, deployment_id, Clock::now()));
}

// ---- sweep ----

void RolloutEngine::sweep() {
    // Expired in-flight updates count as device failures and free their slots.
    std::set<std::int64_t> woken;
    for (;;) {
        std::size_t batch = 0;
        db_.transact([&](db::Tx& tx) {
            const auto expired = db::rollouts::expire(tx, 500);
            batch = expired.size();
            for (const auto& update : expired) {
                metrics::update_outcome("expired");
                db::rollouts::record_failure(tx, update, false);
                if (update.deployment_id) {
                    publish_wake(tx, update.product_id);
                    woken.insert(update.product_id);
                }
            }
            return 0;
        });
        if (batch < 500) break;
    }
    if (!woken.empty()) spdlog::info("expired in-flight updates of {} product(s)", woken.size());
    // Every device connected here is re-evaluated, with deployments read again: penalties that
    // ended, notifications lost.
    forget_deployments(std::nullopt);
    std::set<std::int64_t> products;
    {
        const std::lock_guard lock{mutex_};
        for (const auto& [id, local] : local_) products.insert(local.product_id);
    }
    for (auto product_id : products) schedule(product_id, std::nullopt);
}

void RolloutEngine::start(std::chrono::milliseconds interval) {
    interval_ = interval;
    sweeper_ = std::thread([this] { run_sweeps(); });
}

void RolloutEngine::run_sweeps() {
    std::unique_lock lock{sweep_mutex_};
    while (!stopping_) {
        if (sweep_cv_.wait_for(lock, interval_, [this] { return stopping_; })) break;
        lock.unlock();
        try {
            sweep();
        } catch (const std::exception& e) {
            spdlog::warn("rollout sweep failed: {}", e.what());
        }
        lock.lock();
    }
}

void RolloutEngine::stop() {
    {
        const std::lock_guard lock{sweep_mutex_};
        if (stopping_) return;
        stopping_ = true;
    }
    sweep_cv_.notify_all();
    if (sweeper_.joinable()) sweeper_.join();
    std::unique_lock lock{mutex_};
    stopped_ = true;
    // Pending wake-ups would keep the worker pool from joining.
    for (auto& [id, timer] : timers_) timer->cancel();
    timers_.clear();
    idle_.wait_for(lock, kStopWait, [this] { return running_ == 0; });
}

std::size_t RolloutEngine::local_devices() const {
    const std::lock_guard lock{mutex_};
    return local_.size();
}

}  // namespace otahub::rollout
