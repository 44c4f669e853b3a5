#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "db/database.hpp"
#include "server/app/config.hpp"
#include "server/device/device_channel.hpp"
#include "server/device/registry.hpp"
#include "server/domain/pki/trust_store.hpp"
#include "server/net/asio.hpp"

namespace otahub::device {

class Presence;

/// Settings of the device endpoint.
struct DeviceServerOptions {
    /// This node (connection rows, logs).
    std::string node_id{};
    /// TLS handshake plus upgrade request must complete within this.
    std::chrono::seconds handshake_timeout{10};
    /// A socket without any inbound frame for this long is closed.
    std::chrono::seconds idle_timeout{180};
    /// New TLS handshakes admitted per second on this node; 0 = no limit.
    int handshake_rate_limit = 0;
    /// Largest websocket message accepted (bigger: close 1009).
    std::size_t max_message_bytes = std::size_t{1} << 20;
    /// Largest upgrade request header (bigger: 431).
    std::uint32_t max_upgrade_header_bytes = 8 * 1024;
    /// SO_REUSEPORT: several otahubd processes share the device port (the kernel spreads
    /// connections across them).
    bool reuse_port = false;
    /// After a TLS 1.3 handshake the hub runs the record layer itself and frees OpenSSL's
    /// connection state (net::Tls13Records); false leaves every connection to OpenSSL.
    bool own_tls_records = true;
};

/// A TLS 1.2/1.3 server context for the device endpoint: the server certificate, modern
/// ciphers, and client certificates verified in the handshake against `trust` (refusals are
/// logged once with reason, serial and CN), and TLS session tickets keyed by `ticket_key`
/// (OTAHUB_TLS_TICKET_KEY; empty: a random per-process key). Throws on unreadable files.
net::ssl::context make_device_tls_context(const std::string& cert_chain_file,
                                          const std::string& key_file, pki::TrustStore& trust,
                                          const std::string& ticket_key = {});

/// The device endpoint: mutual TLS, websocket upgrade on `/socket/websocket` and
/// `/device-socket/websocket` (Phoenix V2 JSON), device lookup / JITP on the worker pool, then a
/// Phoenix channel session per device. Start and stop from any thread.
class DeviceServer {
  public:
    DeviceServer(net::asio::io_context& io, net::asio::thread_pool& workers, db::Database& db,
                 net::ssl::context& tls, SessionRegistry& registry, Presence& presence,
                 const DeviceHooks& hooks, DeviceServerOptions options);
    ~DeviceServer();
    DeviceServer(const DeviceServer&) = delete;
    DeviceServer& operator=(const DeviceServer&) = delete;

    /// Binds and listens; returns the bound port.
    std::uint16_t listen(const ListenAddress& address);
    /// Starts accepting.
    void start();
    /// Stops accepting (open sessions are closed through the registry).
    void stop();
    /// Connections currently open (handshaking or in session).
    std::size_t open_connections() const;

    struct State;

  private:
    std::shared_ptr<State> state_;
};

}  // namespace otahub::device
