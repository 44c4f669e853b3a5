#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "db/database.hpp"
#include "db/repositories/devices_repository.hpp"
#include "db/repositories/firmwares_repository.hpp"
#include "db/repositories/rollouts_repository.hpp"
#include "server/app/config.hpp"
#include "server/device/registry.hpp"
#include "server/device/session_info.hpp"
#include "server/domain/resolution.hpp"
#include "server/net/asio.hpp"

/// Deployments in motion: which connected device gets which `update`, when, and how many at
/// once. One engine per node acts for the devices connected to that node; PostgreSQL is the
/// shared truth (in-flight slots are taken under the deployment's row lock, so
/// `concurrent_updates` holds across nodes) and NOTIFY wakes the other nodes.
namespace otahub::rollout {

/// Bus event: a deployment of a product was created, changed or deleted:
/// `{"product_id", "deployment_id"}`. Every node re-evaluates its devices of the product.
inline constexpr std::string_view kDeploymentChanged = "deployment_changed";
/// Bus event: an update slot of a product's deployment was freed, or a penalty ended:
/// `{"product_id"}`. Every node re-evaluates its waiting devices of the product.
inline constexpr std::string_view kRolloutWake = "rollout_wake";
/// Bus event: push the device's in-flight update now (manual upgrade): `{"device_id"}`.
inline constexpr std::string_view kRolloutPush = "rollout_push";

/// NervesHub's `update` payload for `firmware` (checksums upper-case hex, URL signed).
nlohmann::json update_payload(const Config& config, const db::FirmwareRow& firmware,
                              std::optional<std::int64_t> deployment_id,
                              std::chrono::system_clock::time_point now);

/// Publishes on the bus, inside `tx`, that a freed slot or an ended penalty may let a waiting
/// device of `product_id` update.
void publish_wake(db::Tx& tx, std::int64_t product_id);

/// The rollout engine of one node. Thread-safe; hook and bus entry points return quickly or
/// run on the caller's (worker) thread.
class RolloutEngine {
  public:
    RolloutEngine(db::Database& db, const Config& config, device::SessionRegistry& sessions,
                  net::asio::thread_pool& workers);
    ~RolloutEngine();
    RolloutEngine(const RolloutEngine&) = delete;
    RolloutEngine& operator=(const RolloutEngine&) = delete;

    /// A device joined topic `device` on this node (worker thread; the join reply is queued):
    /// settles its in-flight update against the firmware it reports, then resolves it.
    /// `in_flight`: whether the join's own statement found an update in flight
    /// (devices::record_joins).
    void on_join(const device::SessionInfo& info, const db::FirmwareReport& report, bool in_flight);
    /// A device event (`status_update`): ends the in-flight update on failure, ignore or
    /// reschedule, with the penalty box and fleet pause rules.
    void on_event(const device::SessionInfo& info, const std::string& event,
                  const nlohmann::json& payload);
    /// A session of this node ended.
    void on_disconnect(const device::SessionInfo& info);

    /// Re-evaluates every device of `product_id` connected here, with its deployments read again
    /// (bus: deployment changed, wake).
    void product_changed(std::int64_t product_id);
    /// Re-evaluates one device if it is connected here (bus: device changed).
    void device_changed(std::int64_t device_id);
    /// Pushes the device's in-flight update if it is connected here (bus: manual upgrade).
    void push_in_flight(std::int64_t device_id);

    /// Starts the sweep thread: every `interval`, expires in-flight updates and re-evaluates
    /// every device connected here (so a lost notification only delays an update).
    void start(std::chrono::milliseconds interval);
    /// Stops the sweep thread and waits for queued evaluations. Idempotent.
    void stop();
    /// One sweep (blocking): also reads every product's deployments again.
    void sweep();
    /// Devices joined on this node.
    std::size_t local_devices() const;

  private:
    struct Local {
        std::int64_t product_id = 0;
        std::int64_t connection_id = 0;
    };
    /// A product's active deployments in resolution order, compiled once for many devices.
    struct ActiveDeployments {
        std::vector<db::DeploymentRow> rows;
        std::vector<resolution::CompiledDeployment> compiled;
    };
    struct Pending {
        bool running = false;
        bool all = false;
        std::set<std::int64_t> ids;
    };

    void schedule(std::int64_t product_id, std::optional<std::int64_t> device_id);
    void drain(std::int64_t product_id);
    void evaluate(std::int64_t product_id, const std::vector<std::int64_t>& device_ids);
    /// The product's active deployments: read in `tx` and kept until forget_deployments (every
    /// change to a deployment publishes deployment_changed, and the sweep forgets them all, so
    /// a lost notification only delays an update as before). A join is then resolved with one
    /// statement, not two.
    std::shared_ptr<const ActiveDeployments> active_deployments(db::Tx& tx,
                                                                std::int64_t product_id);
    /// Forgets the kept deployments of `product_id`, or of every product.
    void forget_deployments(std::optional<std::int64_t> product_id);
    /// Records and sends `deployment`'s update to `devices` (resolved to it) in chunks, each in
    /// its own transaction under the deployment's row lock: the first devices get their frame
    /// while the in-flight rows of the others are still being written.
    void start_updates(const db::DeploymentRow& deployment,
                       const std::vector<std::int64_t>& devices);
    void end_update(std::int64_t device_id, const std::string& status,
                    const std::optional<std::string>& reason, bool failure);
    void push(std::int64_t device_id, const db::FirmwareRow& firmware,
              std::optional<std::int64_t> deployment_id);
    void run_sweeps();
    /// Re-evaluates the device when its penalty or reschedule delay ends.
    void wake_at(std::int64_t device_id, std::int64_t product_id,
                 std::chrono::system_clock::time_point when);

    db::Database& db_;
    const Config& config_;
    device::SessionRegistry& sessions_;
    net::asio::thread_pool& workers_;

    mutable std::mutex mutex_;
    std::unordered_map<std::int64_t, Local> local_;
    std::unordered_map<std::int64_t, Pending> pending_;
    std::size_t running_ = 0;
    bool stopped_ = false;
    std::condition_variable idle_;
    std::unordered_map<std::int64_t, std::shared_ptr<net::asio::system_timer>> timers_;
    std::unordered_map<std::int64_t, std::shared_ptr<const ActiveDeployments>> deployments_;
    /// Bumped by every forget_deployments: a read that began before it is not kept.
    std::uint64_t deployments_epoch_ = 0;

    std::mutex sweep_mutex_;
    std::condition_variable sweep_cv_;
    bool stopping_ = false;
    std::chrono::milliseconds interval_{15000};
    std::thread sweeper_;
};

}  // namespace otahub::rollout
