#include "server/app/app.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "db/database.hpp"
#include "db/migrator.hpp"
#include "db/repositories/devices_repository.hpp"
#include "db/repositories/rollouts_repository.hpp"
#include "server/api/context.hpp"
#include "server/api/firmware_url.hpp"
#include "server/api/firmwares.hpp"
#include "server/app/firmware_gc.hpp"
#include "server/app/metrics.hpp"
#include "server/common/allocator.hpp"
#include "server/device/device_server.hpp"
#include "server/device/presence.hpp"
#include "server/device/registry.hpp"
#include "server/device/rotation.hpp"
#include "server/device/trust_sync.hpp"
#include "server/domain/pki/ec_keys.hpp"
#include "server/domain/pki/trust_store.hpp"
#include "server/events/event_bus.hpp"
#include "server/net/asio.hpp"
#include "server/net/http_server.hpp"
#include "server/net/tls.hpp"
#include "server/rollout/rollout_engine.hpp"

namespace otahub {

struct App::Impl {
    Config config;
    net::asio::io_context io;
    std::optional<net::asio::executor_work_guard<net::asio::io_context::executor_type>> work;
    net::asio::thread_pool workers;
    db::Database db;
    http::Router router;
    api::ApiContext api_ctx;
    std::optional<net::ssl::context> api_tls;
    std::unique_ptr<net::HttpServer> api_server;
    std::unique_ptr<FirmwareGc> firmware_gc;
    // Device endpoint: trust kept current through the event bus, live sessions, presence.
    pki::TrustStore trust;
    device::TrustSync trust_sync;
    events::EventBus bus;
    device::SessionRegistry sessions;
    device::DeviceHooks device_hooks;
    device::Presence presence;
    rollout::RolloutEngine rollouts;
    std::optional<net::ssl::context> device_tls;
    std::unique_ptr<device::DeviceServer> device_server;
    std::unique_ptr<device::CertificateRotation> rotation;
    std::vector<std::thread> threads;
    std::uint16_t api_port = 0;
    std::uint16_t device_port = 0;
    std::mutex stop_mutex;
    bool stopped = false;
    std::atomic<bool> migrations_current{false};

    explicit Impl(Config c)
        : config(std::move(c)),
          workers(static_cast<std::size_t>(config.db_threads)),
          db(config.database_url, static_cast<std::size_t>(config.db_pool_size),
             db::Timeouts{std::chrono::seconds(config.db_connect_timeout_s),
                          std::chrono::seconds(config.db_transaction_timeout_s)},
             config.db_prepared_statements),
          api_ctx{db, config, {}},
          trust_sync(db, trust, workers, config.refusal_retention_days, config.tls_verify_cache),
          // The listener's liveness probe shares the transaction deadline (0: none).
          bus(db.url(), std::chrono::seconds(config.db_transaction_timeout_s)),
          presence(io, workers, db, config.node_id),
          rollouts(db, config, sessions, workers) {}

    void subscribe_device_events();
    void recheck_sessions();
};

void App::Impl::recheck_sessions() {
    std::vector<std::pair<std::int64_t, std::string>> live;
    for (const auto& session : sessions.snapshot()) {
        live.emplace_back(session->info().device_id, session->info().fingerprint);
    }
    try {
        const auto doomed =
            db.transact([&](db::Tx& tx) { return db::devices::sessions_to_close(tx, live); });
        for (const auto& [device_id, reason] : doomed) {
            device::SessionFilter filter;
            filter.device_id = device_id;
            sessions.close_matching(filter, 1008, reason);
        }
    } catch (const std::exception& e) {
        spdlog::warn("re-checking live device sessions failed: {}", e.what());
    }
}

void App::Impl::subscribe_device_events() {
    bus.on_connected([this](bool first) {
        // Events sent while the listener was away are lost: rebuild trust from the database and
        // re-check the live sessions against it.
        trust_sync.request_reload();
        if (first) return;
        spdlog::info("event bus reconnected; reloading trust and re-checking live sessions");
        net::asio::post(workers, [this] { recheck_sessions(); });
        // Rollout notifications may have been lost too: sweep now rather than at the next tick.
        net::asio::post(workers, [this] {
            try {
                rollouts.sweep();
            } catch (const std::exception& e) {
                spdlog::warn("rollout sweep after reconnection failed: {}", e.what());
            }
        });
    });
    bus.subscribe(std::string(events::kTrustChanged),
                  [this](const nlohmann::json&) { trust_sync.request_reload(); });
    bus.subscribe(std::string(events::kSessionClose), [this](const nlohmann::json& event) {
        device::SessionFilter filter;
        if (auto it = event.find("device_id"); it != event.end() && it->is_number_integer()) {
            filter.device_id = it->get<std::int64_t>();
        }
        if (auto it = event.find("fingerprint"); it != event.end() && it->is_string()) {
            filter.fingerprint = it->get<std::string>();
        }
        if (auto it = event.find("ca_id"); it != event.end() && it->is_number_integer()) {
            filter.ca_id = it->get<std::int64_t>();
        }
        if (!filter.device_id && !filter.fingerprint && !filter.ca_id) return;
        const std::string reason = event.value("reason", std::string("closed by the hub"));
        const auto closed = sessions.close_matching(filter, 1008, reason);
        if (closed > 0) spdlog::info("closed {} device session(s): {}", closed, reason);
    });
    bus.subscribe(std::string(events::kDeviceConnected), [this](const nlohmann::json& event) {
        auto device_id = event.find("device_id");
        auto connection_id = event.find("connection_id");
        if (device_id == event.end() || connection_id == event.end() ||
            !device_id->is_number_integer() || !connection_id->is_number_integer()) {
            return;
        }
        device::SessionFilter filter;
        filter.device_id = device_id->get<std::int64_t>();
        filter.older_than = connection_id->get<std::int64_t>();
        sessions.close_matching(filter, 1000, "replaced by a newer connection");
    });
    // Rollouts: a deployment changed or a slot was freed → re-evaluate this node's devices of
    // the product; a device changed → re-evaluate it; a manual upgrade → push its update.
    auto id_of = [](const nlohmann::json& event, const char* key) -> std::optional<std::int64_t> {
        auto it = event.find(key);
        if (it == event.end() || !it->is_number_integer()) return std::nullopt;
        return it->get<std::int64_t>();
    };
    for (auto kind : {rollout::kDeploymentChanged, rollout::kRolloutWake}) {
        bus.subscribe(std::string(kind), [this, id_of](const nlohmann::json& event) {
            if (auto product = id_of(event, "product_id")) rollouts.product_changed(*product);
        });
    }
    bus.subscribe(std::string(events::kDeviceChanged), [this, id_of](const nlohmann::json& event) {
        if (auto device = id_of(event, "device_id")) rollouts.device_changed(*device);
    });
    bus.subscribe(std::string(rollout::kRolloutPush), [this, id_of](const nlohmann::json& event) {
        if (auto device = id_of(event, "device_id")) rollouts.push_in_flight(*device);
    });
    bus.subscribe(std::string(events::kDevicePush), [this](const nlohmann::json& event) {
        auto device_id = event.find("device_id");
        auto name = event.find("event");
        if (device_id == event.end() || !device_id->is_number_integer() || name == event.end() ||
            !name->is_string()) {
            return;
        }
        sessions.push(device_id->get<std::int64_t>(), name->get<std::string>(),
                      event.value("payload", nlohmann::json::object()));
    });
}

App::App(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {
    auto& ctx = impl_->api_ctx;
    Impl* impl = impl_.get();
    ctx.not_ready_reason = [impl]() -> std::optional<std::string> {
        if (!impl->migrations_current) {
            try {
                db::Migrator migrator{impl->db};
                impl->migrations_current = migrator.pending().empty();
            } catch (const std::exception& e) {
                return std::string("cannot read migrations: ") + e.what();
            }
            if (!impl->migrations_current) return std::string("migrations pending");
        }
        if (impl->api_port == 0) return std::string("listeners not up");
        return std::nullopt;
    };
    api::register_health_routes(impl_->router, ctx);
    api::register_user_routes(impl_->router, ctx);
    api::register_org_routes(impl_->router, ctx);
    api::register_product_routes(impl_->router, ctx);
    api::register_ca_certificate_routes(impl_->router, ctx);
    api::register_device_routes(impl_->router, ctx);
    api::register_key_routes(impl_->router, ctx);
    api::register_firmware_routes(impl_->router, ctx);
    api::register_deployment_routes(impl_->router, ctx);
    // Prometheus metrics: counters recorded where things happen, gauges read at scrape time.
    impl_->db.set_observers([](double s) { metrics::db_wait(s); },
                            [](double s) { metrics::db_transaction(s); });
    impl_->router.add("GET", "/metrics", [impl](http::Request&) {
        std::vector<metrics::GaugeSample> gauges;
        gauges.push_back({"otahub_device_sessions",
                          "Device websocket sessions on this node",
                          {},
                          static_cast<double>(impl->sessions.size())});
        gauges.push_back({"otahub_device_joined",
                          "Devices joined to topic device on this node",
                          {},
                          static_cast<double>(impl->rollouts.local_devices())});
        gauges.push_back({"otahub_device_session_ends_pending",
                          "Device session ends this node has not yet written to the database "
                          "(kept while it does not answer)",
                          {},
                          static_cast<double>(impl->presence.pending_closes())});
        const auto verify_cache = impl->trust.current()->verify_cache_stats();
        gauges.push_back({"otahub_tls_verify_cache_entries",
                          "Device certificates the trust snapshot in force remembers having "
                          "accepted (OTAHUB_TLS_VERIFY_CACHE)",
                          {},
                          static_cast<double>(verify_cache.entries)});
        gauges.push_back({"otahub_tls_verify_cache_hits",
                          "Device certificates accepted again without building their chain, "
                          "since the trust snapshot in force was built",
                          {},
                          static_cast<double>(verify_cache.hits)});
        static const MemoryAllocator allocator = memory_allocator();
        gauges.push_back({"otahub_memory_allocator",
                          "The malloc this process runs on (1: this one; CMake option "
                          "OTAHUB_MALLOC)",
                          {{"name", allocator.name}, {"version", allocator.version}},
                          1.0});
        const pki::EcKeys ec_keys = pki::ec_keys_in_use();
        for (const auto& [method, keys] : {std::pair{"legacy", pki::EcKeys::kLegacy},
                                           std::pair{"provider", pki::EcKeys::kProvider}}) {
            gauges.push_back({"otahub_openssl_ec_keys",
                              "Which OpenSSL code decodes EC certificate keys (1: this one; "
                              "OTAHUB_OPENSSL_EC_KEYS)",
                              {{"method", method}},
                              keys == ec_keys ? 1.0 : 0.0});
        }
        try {
            auto counts =
                impl->db.transact([](db::Tx& tx) { return db::rollouts::in_flight_counts(tx); });
            for (const auto& c : counts) {
                gauges.push_back(
                    {"otahub_updates_in_flight",
                     "Updates in flight per active deployment (cluster-wide)",
                     {{"org", c.org}, {"product", c.product}, {"deployment", c.deployment}},
                     static_cast<double>(c.count)});
            }
            gauges.push_back({"otahub_database_up",
                              "Whether the last metrics query reached "
                              "PostgreSQL",
                              {},
                              1});
        } catch (const std::exception&) {
            gauges.push_back({"otahub_database_up",
                              "Whether the last metrics query reached "
                              "PostgreSQL",
                              {},
                              0});
        }
        http::Response res;
        res.status = 200;
        res.body = metrics::render(gauges);
        res.headers.emplace_back("content-type", "text/plain; version=0.0.4; charset=utf-8");
        return res;
    });
    api::register_certificate_routes(impl_->router, ctx);
    api::register_device_action_routes(impl_->router, ctx);
}

App::~App() { stop(); }

void App::start() {
    auto& impl = *impl_;
    const auto& config = impl.config;
    std::filesystem::create_directories(config.data_dir);
    try {
        db::Migrator migrator{impl.db};
        auto pending = migrator.pending();
        impl.migrations_current = pending.empty();
        if (!pending.empty()) {
            spdlog::warn("{} migration(s) pending, first {}; run 'otahubd migrate'", pending.size(),
                         pending.front());
        }
    } catch (const std::exception& e) {
        spdlog::warn("database not reachable at start ({}); /readyz reports it", e.what());
    }

    if (config.has_tls() && config.api_tls) {
        impl.api_tls.emplace(net::make_server_context(config.tls_cert, config.tls_key));
    }
    net::HttpServerOptions options;
    options.body_limit = config.api_body_limit;
    options.upload_limit = config.firmware_max_size;
    options.spool_dir = (std::filesystem::path(config.data_dir) / "tmp").string();
    options.handshake_timeout = std::chrono::seconds(config.handshake_timeout_s);
    options.reuse_port = config.reuse_port;
    impl.api_server = std::make_unique<net::HttpServer>(
        impl.io, impl.workers, impl.router, impl.api_tls ? &*impl.api_tls : nullptr, options);
    impl.api_port = impl.api_server->listen(config.api_listen);
    if (impl.config.public_url.empty()) {
        // Before any handler runs: firmware URLs need the bound port (port 0 in tests).
        impl.config.public_url =
            api::default_public_url(config, impl.api_port, impl.api_tls.has_value());
    }
    impl.api_server->start();
    impl.firmware_gc =
        std::make_unique<FirmwareGc>(impl.db, api::open_firmware_store(config),
                                     std::chrono::seconds(config.firmware_gc_interval_s));
    impl.firmware_gc->start();
    start_device_endpoint();

    impl.work.emplace(impl.io.get_executor());
    for (int i = 0; i < config.io_threads; ++i) {
        impl.threads.emplace_back([&impl] { impl.io.run(); });
    }
    const MemoryAllocator allocator = memory_allocator();
    spdlog::info("otahubd node={} api={}://{}:{} devices=wss://{}:{} database={} allocator={} {}",
                 config.node_id, impl.api_tls ? "https" : "http", config.api_listen.host,
                 impl.api_port, config.device_listen.host, impl.device_port, impl.db.redacted_url(),
                 allocator.name, allocator.version);
    if (!config.ready_file.empty()) {
        std::ofstream out{config.ready_file + ".tmp"};
        out << "{\"api_port\":" << impl.api_port << ",\"device_port\":" << impl.device_port
            << "}\n";
        out.close();
        std::filesystem::rename(config.ready_file + ".tmp", config.ready_file);
    }
}

void App::start_device_endpoint() {
    auto& impl = *impl_;
    const auto& config = impl.config;
    try {
        impl.presence.start_blocking();
        impl.trust_sync.reload();
    } catch (const std::exception& e) {
        // The bus retries the trust load when its connection comes up.
        spdlog::warn(
            "device endpoint: cannot load trust at start ({}); devices are refused "
            "until the database is reachable",
            e.what());
    }
    impl.subscribe_device_events();
    impl.rotation = std::make_unique<device::CertificateRotation>(
        impl.db,
        device::RotationOptions{config.secret_key,
                                std::chrono::seconds(config.cert_rotation_grace_s),
                                std::chrono::days(config.cert_renew_window_days)},
        [&impl](std::int64_t id, std::string event, nlohmann::json payload) {
            return impl.sessions.push(id, std::move(event), std::move(payload));
        });
    impl.rotation->install(impl.device_hooks);
    impl.device_hooks.on_join.emplace_back([&impl](const device::SessionInfo& info,
                                                   const db::FirmwareReport& report,
                                                   const db::devices::JoinFacts& facts) {
        metrics::join();
        impl.rollouts.on_join(info, report, facts.update_in_flight);
    });
    impl.device_hooks.on_event.emplace_back(
        [&impl](const device::SessionInfo& info, const std::string& event,
                const nlohmann::json& payload) { impl.rollouts.on_event(info, event, payload); });
    impl.device_hooks.on_disconnect.emplace_back(
        [&impl](const device::SessionInfo& info) { impl.rollouts.on_disconnect(info); });
    impl.bus.start();
    impl.device_tls.emplace(device::make_device_tls_context(config.tls_cert, config.tls_key,
                                                            impl.trust, config.tls_ticket_key));
    device::DeviceServerOptions options;
    options.node_id = config.node_id;
    options.handshake_timeout = std::chrono::seconds(config.handshake_timeout_s);
    options.idle_timeout = std::chrono::seconds(config.device_idle_timeout_s);
    options.handshake_rate_limit = config.handshake_rate_limit;
    options.reuse_port = config.reuse_port;
    options.own_tls_records = config.device_tls_records_hub;
    impl.device_server = std::make_unique<device::DeviceServer>(
        impl.io, impl.workers, impl.db, *impl.device_tls, impl.sessions, impl.presence,
        impl.device_hooks, options);
    impl.device_port = impl.device_server->listen(config.device_listen);
    impl.device_server->start();
    impl.presence.start();
    impl.rollouts.start(std::chrono::milliseconds(config.rollout_sweep_interval_ms));
}

void App::wait(bool handle_signals) {
    auto& impl = *impl_;
    if (handle_signals) {
        net::asio::signal_set signals{impl.io, SIGINT, SIGTERM};
        std::promise<void> done;
        signals.async_wait([&](boost::system::error_code ec, int signal) {
            if (!ec) spdlog::info("signal {} received, stopping", signal);
            done.set_value();
        });
        done.get_future().wait();
        return;
    }
    for (auto& thread : impl.threads) {
        if (thread.joinable()) thread.join();
    }
}

void App::stop() {
    auto& impl = *impl_;
    {
        std::lock_guard lock{impl.stop_mutex};
        if (impl.stopped) return;
        impl.stopped = true;
    }
    if (impl.api_server) impl.api_server->stop();
    if (impl.device_server) impl.device_server->stop();
    impl.presence.stop();
    // Drain: devices are closed in batches spread over drain_seconds, in random order, so their
    // reconnections reach the other nodes gradually instead of as one storm.
    const auto drain = std::chrono::seconds(impl.config.drain_seconds);
    const auto drain_deadline = std::chrono::steady_clock::now() + drain;
    auto live = impl.sessions.snapshot();
    if (drain.count() > 0 && !live.empty()) {
        std::shuffle(live.begin(), live.end(), std::mt19937{std::random_device{}()});
        constexpr auto kTick = std::chrono::milliseconds(100);
        const auto ticks = std::max<std::size_t>(1, static_cast<std::size_t>(drain / kTick));
        const std::size_t batch = (live.size() + ticks - 1) / ticks;
        spdlog::info("draining {} device session(s) over {} s", live.size(), drain.count());
        for (std::size_t i = 0; i < live.size(); i += batch) {
            for (std::size_t j = i; j < std::min(live.size(), i + batch); ++j) {
                live[j]->close(1001, "server shutting down");
            }
            if (i + batch < live.size()) std::this_thread::sleep_for(kTick);
        }
    }
    live.clear();
    impl.sessions.close_all(1001, "server shutting down");
    impl.work.reset();
    // Give open connections (downloads in progress) until the end of the drain period, at least
    // 2 s, to finish; then stop the loop.
    auto deadline =
        std::max(drain_deadline, std::chrono::steady_clock::now() + std::chrono::seconds(2));
    auto busy = [&impl] {
        return (impl.api_server && impl.api_server->open_connections() > 0) ||
               (impl.device_server && impl.device_server->open_connections() > 0);
    };
    while (busy() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    impl.io.stop();
    for (auto& thread : impl.threads) {
        if (thread.joinable()) thread.join();
    }
    impl.bus.stop();
    impl.rollouts.stop();
    if (impl.device_server) impl.presence.shutdown_blocking();
    if (impl.firmware_gc) impl.firmware_gc->stop();
    impl.workers.join();
    spdlog::info("otahubd stopped");
}

std::uint16_t App::api_port() const { return impl_->api_port; }
std::uint16_t App::device_port() const { return impl_->device_port; }

}  // namespace otahub
