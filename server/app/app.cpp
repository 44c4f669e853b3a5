#include "server/app/app.hpp"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "db/database.hpp"
#include "db/migrator.hpp"
#include "server/api/context.hpp"
#include "server/net/asio.hpp"
#include "server/net/http_server.hpp"
#include "server/net/tls.hpp"

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
    std::vector<std::thread> threads;
    std::uint16_t api_port = 0;
    std::uint16_t device_port = 0;
    std::mutex stop_mutex;
    bool stopped = false;
    std::atomic<bool> migrations_current{false};

    explicit Impl(Config c)
        : config(std::move(c)),
          workers(static_cast<std::size_t>(config.db_threads)),
          db(config.database_url, static_cast<std::size_t>(config.db_pool_size)),
          api_ctx{db, config, {}} {}
};

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
    impl.api_server = std::make_unique<net::HttpServer>(
        impl.io, impl.workers, impl.router, impl.api_tls ? &*impl.api_tls : nullptr, options);
    impl.api_port = impl.api_server->listen(config.api_listen);
    impl.api_server->start();

    impl.work.emplace(impl.io.get_executor());
    for (int i = 0; i < config.io_threads; ++i) {
        impl.threads.emplace_back([&impl] { impl.io.run(); });
    }
    spdlog::info("otahubd node={} api={}://{}:{} database={}", config.node_id,
                 impl.api_tls ? "https" : "http", config.api_listen.host, impl.api_port,
                 impl.db.redacted_url());
    if (!config.ready_file.empty()) {
        std::ofstream out{config.ready_file + ".tmp"};
        out << "{\"api_port\":" << impl.api_port << ",\"device_port\":" << impl.device_port
            << "}\n";
        out.close();
        std::filesystem::rename(config.ready_file + ".tmp", config.ready_file);
    }
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
    impl.work.reset();
    // Give open connections a moment to finish their current request, then stop the loop.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (impl.api_server && impl.api_server->open_connections() > 0 &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    impl.io.stop();
    for (auto& thread : impl.threads) {
        if (thread.joinable()) thread.join();
    }
    impl.workers.join();
    spdlog::info("otahubd stopped");
}

std::uint16_t App::api_port() const { return impl_->api_port; }
std::uint16_t App::device_port() const { return impl_->device_port; }

}  // namespace otahub
