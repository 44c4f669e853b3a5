#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "server/app/config.hpp"
#include "server/http/router.hpp"
#include "server/net/asio.hpp"

namespace otahub::net {

struct HttpServerOptions {
    std::uint64_t body_limit = 1024 * 1024;         // in-memory request bodies
    std::uint64_t upload_limit = 2ULL << 30;        // spooled request bodies
    std::string spool_dir;                          // where spooled bodies go (same fs as data)
    std::chrono::seconds idle_timeout{60};          // between and during requests
    std::chrono::seconds handshake_timeout{10};
    bool reuse_port = false;                        // SO_REUSEPORT: several processes, one port
};

/// Opens, binds and listens `acceptor` on `address` (SO_REUSEADDR; SO_REUSEPORT when
/// `reuse_port`); returns the bound port (port 0 picks a free one).
std::uint16_t open_listener(tcp::acceptor& acceptor, const ListenAddress& address, bool reuse_port);

/// The admin API listener: HTTP/1.1 (TLS when a context is given), keep-alive, handlers run
/// on the worker pool. Start and stop from any thread.
class HttpServer {
public:
    HttpServer(asio::io_context& io, asio::thread_pool& workers, const http::Router& router,
               ssl::context* tls, HttpServerOptions options);
    ~HttpServer();

    /// Binds and listens (SO_REUSEADDR); returns the bound port (useful with port 0).
    std::uint16_t listen(const ListenAddress& address);
    /// Starts accepting.
    void start();
    /// Stops accepting; open connections finish their current request.
    void stop();
    /// Connections currently open.
    std::size_t open_connections() const;

    struct State;

private:
    std::shared_ptr<State> state_;
};

}  // namespace otahub::net
