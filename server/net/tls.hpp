#pragma once

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <memory>
#include <new>
#include <string>
#include <utility>

#include "server/net/asio.hpp"
#include "server/net/tls13_records.hpp"

namespace otahub::net {

/// A TLS 1.2/1.3 server context with modern ciphers only, loaded with the certificate chain
/// and key; throws std::runtime_error naming the file on failure.
ssl::context make_server_context(const std::string& cert_chain_file, const std::string& key_file);

/// A client context for tools and tests: verifies the server against `ca_file` (or the system
/// store when empty) and optionally presents a client certificate.
ssl::context make_client_context(const std::string& ca_file, const std::string& cert_file = {},
                                 const std::string& key_file = {});

/// Enables stateless TLS session tickets on a server context. `key` (any length, typically 32+
/// random bytes shared by every node) derives the ticket name, HMAC and AES keys, so any node
/// holding the same key resumes another's sessions; an empty key uses a random per-process key.
/// `session_id_context` names the service (resumption across contexts is refused).
void enable_session_tickets(SSL_CTX* ctx, const std::string& key,
                            const std::string& session_id_context);

/// A server-side TLS connection run by OpenSSL directly on the non-blocking TCP socket
/// (SSL_set_fd), waiting for readiness with Asio. asio::ssl::stream keeps two 17 KiB vectors and a
/// 2 x 17 KiB BIO pair per connection whether busy or idle; this holds no buffer of its own while
/// idle, and with SSL_MODE_RELEASE_BUFFERS OpenSSL frees its record buffers between records.
/// Meets Beast's AsyncStream requirements (one read and one write in flight at most); use it on
/// one strand.
class TlsSocket {
  public:
    using executor_type = asio::any_io_executor;
    using next_layer_type = tcp::socket;
    using lowest_layer_type = tcp::socket;

    /// Takes an accepted socket; the connection answers as a TLS server with `ctx`'s settings.
    /// Throws std::bad_alloc.
    TlsSocket(tcp::socket socket, SSL_CTX* ctx) : socket_(std::move(socket)), ssl_(SSL_new(ctx)) {
        if (!ssl_) throw std::bad_alloc();
        SSL_set_mode(ssl_.get(), SSL_MODE_ENABLE_PARTIAL_WRITE |
                                     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                     SSL_MODE_RELEASE_BUFFERS);
        boost::system::error_code ec;
        socket_.non_blocking(true, ec);
        if (ec || SSL_set_fd(ssl_.get(), static_cast<int>(socket_.native_handle())) != 1) {
            attach_failed_ = true;
        }
        SSL_set_accept_state(ssl_.get());
    }

    /// The socket's executor.
    executor_type get_executor() { return socket_.get_executor(); }
    /// The TCP socket.
    tcp::socket& next_layer() { return socket_; }
    /// The TCP socket.
    const tcp::socket& next_layer() const { return socket_; }
    /// The OpenSSL connection; null once `release_openssl` took its record layer.
    SSL* native_handle() { return ssl_.get(); }

    /// After the handshake, between operations: moves the record layer from OpenSSL to
    /// Tls13Records and frees the `SSL` (~20 KiB an idle connection no longer holds), when the
    /// connection allows it (TLS 1.3 with a context set up by `remember_tls13_secrets`, see
    /// Tls13Records::take_over). Otherwise OpenSSL keeps serving it. Read what is needed from
    /// `native_handle()` first. Returns whether the record layer is now ours.
    bool release_openssl() {
        if (records_ || !ssl_) return static_cast<bool>(records_);
        records_ = Tls13Records::take_over(ssl_.get());
        if (records_) ssl_.reset();
        return static_cast<bool>(records_);
    }

    /// Sends close_notify if the socket takes it now, without waiting (for teardown).
    void close_notify_now() {
        if (records_) {
            (void)records_->close_notify(sender());
        } else if (ssl_) {
            ERR_clear_error();
            SSL_shutdown(ssl_.get());
            ERR_clear_error();
        }
    }

    /// The server side of the TLS handshake; completes with (error_code, 0).
    template <class Token>
    auto async_handshake(Token&& token) {
        return start(Op::kHandshake, nullptr, 0, std::forward<Token>(token));
    }

    /// Reads some decrypted bytes into the first non-empty buffer.
    template <class MutableBuffers, class Token>
    auto async_read_some(const MutableBuffers& buffers, Token&& token) {
        for (auto it = asio::buffer_sequence_begin(buffers);
             it != asio::buffer_sequence_end(buffers); ++it) {
            asio::mutable_buffer buffer(*it);
            if (buffer.size() > 0) {
                return start(Op::kRead, buffer.data(), buffer.size(), std::forward<Token>(token));
            }
        }
        return start(Op::kRead, nullptr, 0, std::forward<Token>(token));
    }

    /// Writes some bytes; a buffer sequence (a websocket frame header and its payload, an HTTP
    /// header and body) is coalesced into one TLS record of at most kCoalesceBytes, through a
    /// buffer that lives only while the write does.
    template <class ConstBuffers, class Token>
    auto async_write_some(const ConstBuffers& buffers, Token&& token) {
        const std::size_t total = asio::buffer_size(buffers);
        asio::const_buffer first;
        for (auto it = asio::buffer_sequence_begin(buffers);
             it != asio::buffer_sequence_end(buffers); ++it) {
            first = asio::const_buffer(*it);
            if (first.size() > 0) break;
        }
        if (first.size() < total) {
            const std::size_t size = std::min(total, kCoalesceBytes);
            auto scratch = std::unique_ptr<char[]>(new char[size]);
            char* bytes = scratch.get();
            asio::buffer_copy(asio::buffer(bytes, size), buffers);
            return start(Op::kWrite, bytes, size, std::forward<Token>(token), std::move(scratch));
        }
        return start(Op::kWrite, const_cast<void*>(first.data()), first.size(),
                     std::forward<Token>(token));
    }

    /// Sends close_notify (without waiting for the peer's); completes with (error_code, 0).
    template <class Token>
    auto async_shutdown(Token&& token) {
        return start(Op::kShutdown, nullptr, 0, std::forward<Token>(token));
    }

  private:
    /// Largest write assembled from several buffers (16 KiB = one TLS record).
    static constexpr std::size_t kCoalesceBytes = 16 * 1024;

    enum class Op { kHandshake, kRead, kWrite, kShutdown };

    template <class Token>
    auto start(Op op, void* data, std::size_t size, Token&& token,
               std::unique_ptr<char[]> scratch = {}) {
        return asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
            [this, op, data, size, scratch = std::move(scratch), started = false](
                auto& self, boost::system::error_code ec = {}) mutable {
                if (!started) {
                    // Never complete inside the initiating function.
                    started = true;
                    asio::post(socket_.get_executor(), std::move(self));
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
        // A closed socket's descriptor may already belong to another connection: never touch it.
        if (attach_failed_ || !socket_.is_open()) {
            self.complete(asio::error::bad_descriptor, 0);
            return;
        }
        if ((op == Op::kRead || op == Op::kWrite) && size == 0) {
            self.complete(boost::system::error_code{}, 0);
            return;
        }
        if (records_) {
            step_records(self, op, data, size);
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
            socket_.async_wait(tcp::socket::wait_read, std::move(self));
        } else if (error == SSL_ERROR_WANT_WRITE) {
            socket_.async_wait(tcp::socket::wait_write, std::move(self));
        } else if (error == SSL_ERROR_ZERO_RETURN) {
            self.complete(asio::error::eof, 0);
        } else if (error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
            const int code = errno;
            self.complete(code != 0
                              ? boost::system::error_code(code, boost::system::system_category())
                              : boost::system::error_code(ssl::error::stream_truncated),
                          0);
        } else {
            const auto code = ERR_get_error();
            ERR_clear_error();
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
            if (ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
                self.complete(boost::system::error_code(ssl::error::stream_truncated), 0);
                return;
            }
#endif
            self.complete(
                boost::system::error_code(static_cast<int>(code), asio::error::get_ssl_category()),
                0);
        }
    }

    Tls13Records::Sender sender() {
        return [fd = socket_.native_handle()](const void* bytes, std::size_t n) -> std::ptrdiff_t {
            const ssize_t rc = ::send(fd, bytes, n, MSG_NOSIGNAL);
            return rc >= 0 ? rc : -errno;
        };
    }

    Tls13Records::Transport receiver() {
        return [fd = socket_.native_handle()](void* bytes, std::size_t n) -> std::ptrdiff_t {
            const ssize_t rc = ::recv(fd, bytes, n, 0);
            return rc >= 0 ? rc : -errno;
        };
    }

    /// One step of an operation on the record layer taken from OpenSSL.
    template <class Self>
    void step_records(Self& self, Op op, void* data, std::size_t size) {
        using Status = Tls13Records::Status;
        Tls13Records::Result result;
        switch (op) {
            case Op::kHandshake:
                self.complete(boost::system::error_code{}, 0);
                return;
            case Op::kRead:
                result = records_->read(data, size, receiver(), sender());
                break;
            case Op::kWrite:
                result = records_->write(data, size, sender());
                break;
            case Op::kShutdown:
                result = records_->close_notify(sender());
                break;
        }
        switch (result.status) {
            case Status::kDone:
                self.complete(boost::system::error_code{}, result.bytes);
                return;
            case Status::kWantRead:
                socket_.async_wait(tcp::socket::wait_read, std::move(self));
                return;
            case Status::kWantWrite:
                socket_.async_wait(tcp::socket::wait_write, std::move(self));
                return;
            case Status::kEof:
                self.complete(asio::error::eof, 0);
                return;
            case Status::kError:
                break;
        }
        boost::system::error_code ec;
        if (result.sys_errno != 0) {
            ec = boost::system::error_code(result.sys_errno, boost::system::system_category());
        } else if (result.ssl_reason == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ec = ssl::error::stream_truncated;  // as OpenSSL's own record layer reports it
        } else {
            ec = boost::system::error_code(
                static_cast<int>(ERR_PACK(ERR_LIB_SSL, 0, result.ssl_reason)),
                asio::error::get_ssl_category());
        }
        self.complete(ec, 0);
    }

    struct SslFree {
        void operator()(SSL* ssl) const { SSL_free(ssl); }
    };

    tcp::socket socket_;
    std::unique_ptr<SSL, SslFree> ssl_;
    std::unique_ptr<Tls13Records> records_;
    bool attach_failed_ = false;
};

/// Beast's websocket teardown for TlsSocket, synchronous form: close_notify, then TCP close.
inline void teardown(beast::role_type role, TlsSocket& stream, boost::system::error_code& ec) {
    stream.close_notify_now();
    beast::websocket::teardown(role, stream.next_layer(), ec);
}

namespace detail {

/// After a close: shuts down the sending side (server) and reads and discards what the peer still
/// sends until it closes, then closes the socket. Closing a socket with unread bytes makes the
/// kernel send a reset, which can destroy the close frame just sent before the peer reads it
/// (a device sending an oversized frame gets "1009" only if the rest of its frame is drained).
/// Beast 1.81's own TCP teardown stops after the first successful read (it tests a
/// `bytes_transferred` it never sets), so it resets exactly in that case. At most `kMaxDrain`
/// bytes are read; the websocket stream's timeout bounds the time.
class TcpDrainOp {
  public:
    static constexpr std::size_t kMaxDrain = 8 * 1024 * 1024;

    TcpDrainOp(tcp::socket& socket, beast::role_type role) : socket_(socket), role_(role) {}

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}) {
        if (!started_) {
            started_ = true;
            boost::system::error_code ignored;
            socket_.non_blocking(true, ignored);
            if (role_ == beast::role_type::server) {
                socket_.shutdown(tcp::socket::shutdown_send, ignored);
            }
            // Never complete inside the initiating call.
            asio::post(socket_.get_executor(), std::move(self));
            return;
        }
        while (!ec && drained_ < kMaxDrain) {
            char buffer[4096];
            const auto n = socket_.read_some(asio::buffer(buffer), ec);
            if (ec == asio::error::would_block) {
                socket_.async_wait(tcp::socket::wait_read, std::move(self));
                return;
            }
            drained_ += n;
        }
        boost::system::error_code ignored;
        if (role_ == beast::role_type::client) {
            socket_.shutdown(tcp::socket::shutdown_send, ignored);
        }
        socket_.close(ignored);
        // End of stream, a reset or a cancelled wait (the stream's timeout) all end the teardown.
        self.complete({});
    }

  private:
    tcp::socket& socket_;
    beast::role_type role_;
    bool started_ = false;
    std::size_t drained_ = 0;
};

}  // namespace detail

/// Beast's websocket teardown for TlsSocket: one non-blocking close_notify, then the TCP side
/// (detail::TcpDrainOp).
template <class TeardownHandler>
void async_teardown(beast::role_type role, TlsSocket& stream, TeardownHandler&& handler) {
    stream.close_notify_now();
    using Handler = std::decay_t<TeardownHandler>;
    Handler owned(std::forward<TeardownHandler>(handler));
    asio::async_compose<Handler, void(boost::system::error_code)>(
        detail::TcpDrainOp{stream.next_layer(), role}, owned, stream.next_layer());
}

}  // namespace otahub::net
