#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

/// Settings of one otahub-sim run (command line), shared read-only by every simulated device.
namespace otahub::sim {

/// What the simulator was asked to do.
struct Options {
    std::size_t devices = 1;                    ///< how many devices (0 with --certs: all found)
    std::string host = "localhost";             ///< device endpoint host (also the TLS name)
    unsigned short port = 4001;                 ///< device endpoint port
    std::string server_ca;                      ///< PEM bundle verifying the hub (empty: system)
    std::string ca_cert;                        ///< CA certificate signing generated devices
    std::string ca_key;                         ///< its private key
    std::string certs_dir;                      ///< load <id>/cert.pem, key.pem instead
    std::string save_certs_dir;                 ///< write generated identities there
    std::string prefix = "sim-";                ///< device identifier prefix (CN)
    std::size_t first_index = 0;                ///< first index appended to the prefix
    std::vector<std::string> source_addresses;  ///< local addresses, round-robin per device
    double rate = 50.0;                         ///< new connections per second, all devices
    std::chrono::milliseconds reconnect_jitter{2000};  ///< random delay before a reconnect
    std::chrono::milliseconds heartbeat{30000};        ///< Phoenix heartbeat interval
    double fail_rate = 0.0;                            ///< share of updates reported as failed
    std::string initial_uuid;                          ///< nerves_fw_uuid before any update
    std::string initial_version = "1.0.0";             ///< nerves_fw_version before any update
    std::string product = "demo";                      ///< nerves_fw_product
    std::string platform = "rpi4";                     ///< nerves_fw_platform
    std::string architecture = "aarch64";              ///< nerves_fw_architecture
    std::chrono::seconds duration{0};                  ///< stop after this long (0: until a signal)
    bool interrupt_downloads = false;  ///< drop each download once halfway (Range resume)
    bool json_status = false;          ///< one JSON line per event on stdout
    unsigned threads = 1;              ///< io_context threads
};

}  // namespace otahub::sim
