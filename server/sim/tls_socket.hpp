#pragma once

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <new>
#include <utility>

#include "server/domain/pki/openssl_ptr.hpp"
#include "server/net/asio.hpp"

/// A lean TLS client stream for the simulator's many long-lived websockets.
namespace otahub::sim {

/// TLS run by OpenSSL directly on a non-blocking TCP socket (SSL_set_fd), waiting for socket
/// readiness with Asio. asio::ssl::stream keeps four 17 KB buffers per connection whether busy
/// or idle; this keeps one small write-coalescing buffer, and with SSL_MODE_RELEASE_BUFFERS
/// OpenSSL frees its record buffers while the connection is idle. Meets Beast's AsyncStream
/// requirements (one read and one write in flight at most); use it on one strand.
class TlsSocket {
  public:
    using executor_type = net::asio::any_io_executor;
    using next_layer_type = net::tcp::socket;

    /// A connection using `ctx`'s verification settings; throws std::bad_alloc.
    TlsSocket(const executor_type& executor, SSL_CTX* ctx) : socket_(executor), ssl_(SSL_new(ctx)) {
        if (!ssl_) throw std::bad_alloc();
        SSL_set_mode(ssl_.get(), SSL_MODE_ENABLE_PARTIAL_WRITE |
                                     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                     SSL_MODE_RELEASE_BUFFERS);
    }

    /// The socket's executor.
    executor_type get_executor() { return socket_.get_executor(); }
    /// The TCP socket: connect it, then call attach().
    net::tcp::socket& next_layer() { return socket_; }
    /// The OpenSSL connection (certificate, SNI and host checks go here before the handshake).
    SSL* native_handle() { return ssl_.get(); }

    /// Hands the connected socket to OpenSSL as a client; false on failure.
    bool attach() {
        boost::system::error_code ec;
        socket_.non_blocking(true, ec);
        if (ec || SSL_set_fd(ssl_.get(), static_cast<int>(socket_.native_handle())) != 1) {
            return false;
        }
        SSL_set_connect_state(ssl_.get());
        return true;
    }

    /// The TLS handshake; completes with (error_code, 0).
    template <class Token>
    auto async_handshake(Token&& token) {
        return start(Op::kHandshake, nullptr, 0, std::forward<Token>(token));
    }

    /// Reads some decrypted bytes into the first non-empty buffer.
    template <class MutableBuffers, class Token>
    auto async_read_some(const MutableBuffers& buffers, Token&& token) {
        for (auto it = net::asio::buffer_sequence_begin(buffers);
             it != net::asio::buffer_sequence_end(buffers); ++it) {
            net::asio::mutable_buffer buffer(*it);
            if (buffer.size() > 0) {
                return start(Op::kRead, buffer.data(), buffer.size(), std::forward<Token>(token));
            }
        }
        return start(Op::kRead, nullptr, 0, std::forward<Token>(token));
    }

    /// Writes some bytes; small buffer sequences (a websocket frame header and its payload) are
    /// coalesced into one TLS record.
    template <class ConstBuffers, class Token>
    auto async_write_some(const ConstBuffers& buffers, Token&& token) {
        const std::size_t total = net::asio::buffer_size(buffers);
        net::asio::const_buffer first;
        for (auto it = net::asio::buffer_sequence_begin(buffers);
             it != net::asio::buffer_sequence_end(buffers); ++it) {
            first = net::asio::const_buffer(*it);
            if (first.size() > 0) break;
        }
        if (first.size() < total && total <= coalesce_.size()) {
            net::asio::buffer_copy(net::asio::buffer(coalesce_), buffers);
            return start(Op::kWrite, coalesce_.data(), total, std::forward<Token>(token));
        }
        return start(Op::kWrite, const_cast<void*>(first.data()), first.size(),
                     std::forward<Token>(token));
    }

    /// Sends close_notify (without waiting for the peer's).
    template <class Token>
    auto async_shutdown(Token&& token) {
        return start(Op::kShutdown, nullptr, 0, std::forward<Token>(token));
    }

  private:
    enum class Op { kHandshake, kRead, kWrite, kShutdown };

    template <class Token>
    auto start(Op op, void* data, std::size_t size, Token&& token) {
        return net::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
            [this, op, data, size, started = false](auto& self,
                                                    boost::system::error_code ec = {}) mutable {
                if (!started) {
                    // Never complete inside the initiating function.
                    started = true;
                    net::asio::post(socket_.get_executor(), std::move(self));
                    return;
                }
                if (ec) {
                    self.complete(ec, 0);
                    return;
                }
                step(self, op, data, size);
            },
            token, socket_);
    }

    template <class Self>
    void step(Self& self, Op op, void* data, std::size_t size) {
        if ((op == Op::kRead || op == Op::kWrite) && size == 0) {
            self.complete(boost::system::error_code{}, 0);
            return;
        }
        ERR_clear_error();
        std::size_t done = 0;
        int rc = 0;
        switch (op) {
            case Op::kHandshake:
                rc = SSL_do_handshake(ssl_.get());
                break;
            case Op::kRead:
                rc = SSL_read_ex(ssl_.get(), data, size, &done);
                break;
            case Op::kWrite:
                rc = SSL_write_ex(ssl_.get(), data, size, &done);
                break;
            case Op::kShutdown:
                rc = SSL_shutdown(ssl_.get()) >= 0 ? 1 : -1;  // 0: ours sent, theirs not awaited
                break;
        }
        if (rc == 1) {
            self.complete(boost::system::error_code{}, done);
            return;
        }
        const int error = SSL_get_error(ssl_.get(), rc);
        if (error == SSL_ERROR_WANT_READ) {
            socket_.async_wait(net::tcp::socket::wait_read, std::move(self));
        } else if (error == SSL_ERROR_WANT_WRITE) {
            socket_.async_wait(net::tcp::socket::wait_write, std::move(self));
        } else if (error == SSL_ERROR_ZERO_RETURN) {
            self.complete(net::asio::error::eof, 0);
        } else if (error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
            const int code = errno;
            self.complete(code != 0
                              ? boost::system::error_code(code, boost::system::system_category())
                              : boost::system::error_code(net::ssl::error::stream_truncated),
                          0);
        } else {
            const auto code = static_cast<int>(ERR_get_error());
            ERR_clear_error();
            self.complete(boost::system::error_code(code, net::asio::error::get_ssl_category()), 0);
        }
    }

    net::tcp::socket socket_;
    pki::SslPtr ssl_;
    std::array<char, 1024> coalesce_{};
};

/// Beast's websocket teardown for TlsSocket, synchronous form: close_notify, then TCP close.
inline void teardown(net::beast::role_type role, TlsSocket& stream, boost::system::error_code& ec) {
    ERR_clear_error();
    SSL_shutdown(stream.native_handle());
    ERR_clear_error();
    net::beast::websocket::teardown(role, stream.next_layer(), ec);
}

/// Beast's websocket teardown for TlsSocket: one non-blocking close_notify, then the TCP
/// teardown Beast does for plain sockets.
template <class TeardownHandler>
void async_teardown(net::beast::role_type role, TlsSocket& stream, TeardownHandler&& handler) {
    ERR_clear_error();
    SSL_shutdown(stream.native_handle());
    ERR_clear_error();
    net::beast::websocket::async_teardown(role, stream.next_layer(),
                                          std::forward<TeardownHandler>(handler));
}

}  // namespace otahub::sim
