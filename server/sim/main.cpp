// otahub-sim: simulates NervesHubLink devices against an otahub (or NervesHub) device endpoint.
// Each device has its own client certificate, joins topic "device", heartbeats, and on an
// `update` push downloads the firmware, reports progress and status, then reconnects with the
// new firmware, as a real device does. See `otahub-sim --help`.
#include <openssl/ssl.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "server/domain/crypto.hpp"
#include "server/net/asio.hpp"
#include "server/sim/identity.hpp"
#include "server/sim/options.hpp"
#include "server/sim/reporter.hpp"
#include "server/sim/sim_device.hpp"

namespace {

using namespace otahub;
using namespace otahub::net;

/// Time given to devices to close their websockets after a stop request.
constexpr auto kStopGrace = std::chrono::seconds(3);

/// Expands "A", "A-B" (IPv4, inclusive) and comma lists into addresses.
std::vector<asio::ip::address> parse_sources(const std::vector<std::string>& specs) {
    std::vector<asio::ip::address> out;
    for (const auto& spec : specs) {
        std::size_t start = 0;
        while (start <= spec.size()) {
            auto comma = spec.find(',', start);
            if (comma == std::string::npos) comma = spec.size();
            const std::string item = spec.substr(start, comma - start);
            start = comma + 1;
            if (item.empty()) continue;
            if (auto dash = item.find('-'); dash != std::string::npos) {
                auto first = asio::ip::make_address_v4(item.substr(0, dash)).to_uint();
                auto last = asio::ip::make_address_v4(item.substr(dash + 1)).to_uint();
                if (last < first || last - first > 65535) {
                    throw std::runtime_error("bad source address range " + item);
                }
                for (auto a = first; a <= last; ++a) out.emplace_back(asio::ip::address_v4(a));
            } else {
                out.push_back(asio::ip::make_address(item));
            }
        }
    }
    return out;
}

std::string random_uuid() {
    std::string bytes = crypto::random_bytes(16);
    bytes[6] = static_cast<char>((bytes[6] & 0x0f) | 0x40);
    bytes[8] = static_cast<char>((bytes[8] & 0x3f) | 0x80);
    std::string hex = crypto::hex(bytes);
    return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
           hex.substr(16, 4) + "-" + hex.substr(20);
}

long rss_kib() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    return -1;
}

void configure_tls(ssl::context& tls, const std::string& server_ca) {
    tls.set_verify_mode(ssl::verify_peer);
    if (server_ca.empty()) {
        tls.set_default_verify_paths();
    } else {
        tls.load_verify_file(server_ca);
    }
    SSL_CTX_set_min_proto_version(tls.native_handle(), TLS1_2_VERSION);
    // Idle connections give their 16 KB+ record buffers back: most of a device's memory.
    SSL_CTX_set_mode(tls.native_handle(), SSL_MODE_RELEASE_BUFFERS);
}

int run(const sim::Options& options, std::vector<sim::Identity>& identities) {
    ssl::context device_tls{ssl::context::tls_client};
    ssl::context download_tls{ssl::context::tls_client};
    configure_tls(device_tls, options.server_ca);
    configure_tls(download_tls, options.server_ca);
    sim::Reporter reporter{options.json_status};
    sim::Shared shared{
        options, reporter, device_tls, download_tls, {}, {}, sim::Pacer{options.rate}};
    // Declared after everything the devices use: coroutines still pending when it is destroyed
    // (a stop that timed out) are destroyed with it, and may still touch those.
    asio::io_context ioc;

    tcp::resolver resolver{ioc};
    auto results = resolver.resolve(options.host, std::to_string(options.port));
    for (const auto& entry : results) {
        if (entry.endpoint().address().is_v4()) shared.endpoints.push_back(entry.endpoint());
    }
    for (const auto& entry : results) {
        if (!entry.endpoint().address().is_v4()) shared.endpoints.push_back(entry.endpoint());
    }
    shared.sources = parse_sources(options.source_addresses);

    auto main_strand = asio::make_strand(ioc);
    asio::signal_set signals{main_strand, SIGINT, SIGTERM};
    asio::steady_timer duration_timer{main_strand};
    asio::steady_timer grace_timer{main_strand};
    std::size_t active = identities.size();
    std::vector<std::shared_ptr<sim::SimDevice>> devices;
    devices.reserve(identities.size());

    auto stop_all = [&] {
        if (shared.stopping.exchange(true)) return;
        spdlog::info("stopping {} devices", devices.size());
        for (auto& device : devices) device->stop();
        grace_timer.expires_after(kStopGrace);
        grace_timer.async_wait([&](boost::system::error_code ec) {
            if (!ec) ioc.stop();
        });
    };
    signals.async_wait([&](boost::system::error_code ec, int) {
        if (!ec) stop_all();
    });
    if (options.duration.count() > 0) {
        duration_timer.expires_after(options.duration);
        duration_timer.async_wait([&](boost::system::error_code ec) {
            if (!ec) stop_all();
        });
    }

    for (std::size_t i = 0; i < identities.size(); ++i) {
        devices.push_back(
            std::make_shared<sim::SimDevice>(shared, identities[i], i, ioc.get_executor()));
    }
    for (auto& device : devices) {
        device->start([&] {
            asio::post(main_strand, [&] {
                if (--active > 0) return;
                signals.cancel();
                duration_timer.cancel();
                grace_timer.cancel();
            });
        });
    }
    spdlog::info("simulating {} devices against {}:{}", devices.size(), options.host, options.port);

    std::vector<std::thread> threads;
    for (unsigned i = 1; i < options.threads; ++i) threads.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
    ioc.stop();
    for (auto& thread : threads) thread.join();

    const auto& s = reporter.stats;
    const long rss = rss_kib();
    if (options.json_status) {
        reporter.emit("summary", "",
                      {{"devices", devices.size()},
                       {"connects", s.connects.load()},
                       {"connect_failures", s.connect_failures.load()},
                       {"updates_received", s.updates_received.load()},
                       {"updates_succeeded", s.updates_succeeded.load()},
                       {"updates_failed", s.updates_failed.load()},
                       {"heartbeats", s.heartbeats.load()},
                       {"bytes_downloaded", s.bytes_downloaded.load()},
                       {"rss_kib", rss}});
    }
    std::FILE* out = options.json_status ? stderr : stdout;
    std::fprintf(out,
                 "otahub-sim: %zu devices, %llu connects (%llu failed attempts), %llu updates "
                 "received, %llu succeeded, %llu failed, %llu bytes downloaded, RSS %ld KiB\n",
                 devices.size(), static_cast<unsigned long long>(s.connects.load()),
                 static_cast<unsigned long long>(s.connect_failures.load()),
                 static_cast<unsigned long long>(s.updates_received.load()),
                 static_cast<unsigned long long>(s.updates_succeeded.load()),
                 static_cast<unsigned long long>(s.updates_failed.load()),
                 static_cast<unsigned long long>(s.bytes_downloaded.load()), rss);
    devices.clear();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    sim::Options options;
    CLI::App app{"otahub-sim: simulated NervesHubLink devices for an otahub device endpoint"};
    auto* devices_option = app.add_option(
        "-n,--devices", options.devices,
        "number of devices (default 1; with --certs: at most this many, default all)");
    app.add_option("--host", options.host, "device endpoint host name (checked against its cert)")
        ->capture_default_str();
    app.add_option("--port", options.port, "device endpoint port")->capture_default_str();
    app.add_option("--server-ca", options.server_ca,
                   "PEM file of the CA that signs the hub's certificates (default: system store)")
        ->check(CLI::ExistingFile);
    auto* ca_cert =
        app.add_option("--ca-cert", options.ca_cert,
                       "CA certificate (PEM) to sign one P-256 device cert per device (a hub "
                       "binds a device to its first key: keep them with --save-certs)")
            ->check(CLI::ExistingFile);
    auto* ca_key = app.add_option("--ca-key", options.ca_key, "the CA's private key (PEM)")
                       ->check(CLI::ExistingFile);
    auto* certs = app.add_option("--certs", options.certs_dir,
                                 "load identities from DIR/<id>/cert.pem and key.pem instead")
                      ->check(CLI::ExistingDirectory);
    ca_cert->needs(ca_key);
    ca_key->needs(ca_cert);
    certs->excludes(ca_cert)->excludes(ca_key);
    app.add_option("--save-certs", options.save_certs_dir,
                   "write generated identities to DIR/<id>/ (reusable with --certs)");
    app.add_option("--prefix", options.prefix, "device identifier prefix (CN = prefix + index)")
        ->capture_default_str();
    app.add_option("--first-index", options.first_index, "index of the first device")
        ->capture_default_str();
    app.add_option("--source-addresses", options.source_addresses,
                   "local addresses to bind, round-robin per device: 127.0.0.2-127.0.0.9 or a,b")
        ->delimiter(',');
    app.add_option("--rate", options.rate, "new connections per second, all devices together")
        ->capture_default_str();
    double jitter_s = 2.0;
    app.add_option("--reconnect-jitter", jitter_s,
                   "random delay before a reconnect, up to S seconds")
        ->capture_default_str();
    double heartbeat_s = 30.0;
    app.add_option("--heartbeat", heartbeat_s, "Phoenix heartbeat interval in seconds")
        ->capture_default_str()
        ->check(CLI::Range(0.05, 3600.0));
    app.add_option("--fail-rate", options.fail_rate,
                   "share of updates reported as failed (\"simulated\"), 0..1")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1.0));
    app.add_flag("--interrupt-downloads", options.interrupt_downloads,
                 "drop each firmware download once halfway, to exercise Range resume");
    app.add_option("--initial-uuid", options.initial_uuid,
                   "nerves_fw_uuid reported before any update (default: a random UUID)");
    app.add_option("--initial-version", options.initial_version, "nerves_fw_version")
        ->capture_default_str();
    app.add_option("--product", options.product, "nerves_fw_product")->capture_default_str();
    app.add_option("--platform", options.platform, "nerves_fw_platform")->capture_default_str();
    app.add_option("--architecture", options.architecture, "nerves_fw_architecture")
        ->capture_default_str();
    long long duration_s = 0;
    app.add_option("--duration", duration_s, "stop after S seconds (default: until Ctrl-C)")
        ->check(CLI::NonNegativeNumber);
    app.add_flag("--json-status", options.json_status,
                 "one JSON object per event on stdout (joined, update, progress, ...)");
    app.add_option("--threads", options.threads, "I/O threads")
        ->capture_default_str()
        ->check(CLI::Range(1u, 64u));
    std::string log_level = "info";
    app.add_option("--log-level", log_level, "stderr log level (trace..off)")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    spdlog::set_default_logger(spdlog::stderr_color_mt("otahub-sim"));
    spdlog::set_level(spdlog::level::from_str(log_level));
    options.reconnect_jitter =
        std::chrono::milliseconds(static_cast<long long>(std::max(0.0, jitter_s) * 1000));
    options.heartbeat = std::chrono::milliseconds(static_cast<long long>(heartbeat_s * 1000));
    options.duration = std::chrono::seconds(duration_s);
    if (options.certs_dir.empty() && options.ca_cert.empty()) {
        std::fprintf(stderr, "otahub-sim: give --ca-cert and --ca-key, or --certs DIR\n");
        return 2;
    }
    if (!options.certs_dir.empty() && devices_option->count() == 0) options.devices = 0;
    if (options.certs_dir.empty() && options.devices == 0) {
        std::fprintf(stderr, "otahub-sim: --devices must be at least 1\n");
        return 2;
    }
    if (options.initial_uuid.empty()) options.initial_uuid = random_uuid();
    try {
        auto identities = sim::make_identities(options);
        spdlog::info("{} device identities ready", identities.size());
        return run(options, identities);
    } catch (const std::exception& error) {
        std::fprintf(stderr, "otahub-sim: %s\n", error.what());
        return 1;
    }
}
