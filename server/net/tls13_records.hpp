#pragma once

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

namespace otahub::net {

/// Makes a server context remember, for each connection, what `Tls13Records::take_over` needs:
/// the TLS 1.3 application traffic secrets (through OpenSSL's key log callback, kept in the
/// connection's ex_data, never logged) and how many NewSessionTicket records were sent. Call once
/// on the device context before it is shared; replaces any key log and message callback.
void remember_tls13_secrets(SSL_CTX* ctx);

/// For a connection that stays with OpenSSL (TLS 1.2, or not taken over): wipes and frees what
/// `remember_tls13_secrets` kept for it and stops its message callback, which would otherwise run
/// for every record it exchanges. `take_over` refuses the connection afterwards.
void forget_tls13_secrets(SSL* ssl);

/// The TLS 1.3 record layer of one server connection after its handshake, without OpenSSL's
/// `SSL` object: two keyed AEAD contexts, the traffic secrets, sequence numbers and buffers that
/// exist only while a record is in flight. OpenSSL 3.0 keeps ~22 KiB per idle mutual-TLS
/// connection (the `SSL`, the session with the client certificate, both ECDHE keys, the
/// handshake hash); this keeps ~2.5 KiB. It implements RFC 8446 §5 for the three TLS 1.3 AEAD
/// suites (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305): application data both ways, the peer's
/// KeyUpdate (answered when requested), alerts (close_notify ends the stream, any other ends it
/// with an error), and our close_notify. Transport-agnostic: bytes come and go through the
/// callables passed to each call. Not thread-safe; one read and one write may be in progress at
/// once (Beast's AsyncStream contract), both on the caller's strand.
class Tls13Records {
  public:
    /// Moves `bytes` into `buffer`: the count (0 = end of stream for a receive), or -errno
    /// (-EAGAIN when the transport would block).
    using Transport = std::function<std::ptrdiff_t(void* buffer, std::size_t bytes)>;
    /// Sends `bytes` from `buffer`: the count sent, or -errno (-EAGAIN when it would block).
    using Sender = std::function<std::ptrdiff_t(const void* buffer, std::size_t bytes)>;

    enum class Status {
        kDone,       ///< `bytes` were read, or written and sent
        kWantRead,   ///< call again when the transport is readable
        kWantWrite,  ///< call again when the transport is writable
        kEof,        ///< the peer sent close_notify
        kError,      ///< the stream is broken: `error` (and `sys_errno` for transport errors)
    };

    struct Result {
        Status status = Status::kDone;
        std::size_t bytes = 0;
        /// OpenSSL-style reason (SSL_R_*) for protocol errors, 0 for transport errors.
        int ssl_reason = 0;
        /// errno of a failed transport call; 0 for protocol errors.
        int sys_errno = 0;
    };

    /// Takes over `ssl`'s record layer once its TLS 1.3 handshake is complete: nullptr (and
    /// `ssl` untouched) when the connection is not TLS 1.3, uses another suite, has data
    /// buffered inside OpenSSL, or its context was not set up with `remember_tls13_secrets`.
    /// On success the caller frees `ssl`: nothing in it is needed any more.
    static std::unique_ptr<Tls13Records> take_over(SSL* ssl);

    /// The server side of a record layer from known state: the TLS 1.3 suite (0x1301 to 0x1303),
    /// the client and server application traffic secrets (hash-sized) and the next sequence
    /// numbers. Nullptr for another suite or a secret of the wrong size. For `take_over`, tests
    /// and the fuzzer.
    static std::unique_ptr<Tls13Records> from_secrets(std::uint16_t suite,
                                                      std::span<const std::uint8_t> client_secret,
                                                      std::span<const std::uint8_t> server_secret,
                                                      std::uint64_t read_sequence,
                                                      std::uint64_t write_sequence);

    ~Tls13Records();
    Tls13Records(const Tls13Records&) = delete;
    Tls13Records& operator=(const Tls13Records&) = delete;

    /// Reads decrypted application data into `out` (`size` > 0); kDone with bytes > 0.
    Result read(void* out, std::size_t size, const Transport& receive, const Sender& send);
    /// Encrypts up to one record (16 KiB) of `data` (`size` > 0) and sends it; kDone with the
    /// plaintext bytes taken once their record (and anything queued before it) is sent. After
    /// kWantWrite, call again with the same arguments.
    Result write(const void* data, std::size_t size, const Sender& send);
    /// Queues close_notify (once) and sends what is queued; kDone when all of it is sent.
    Result close_notify(const Sender& send);
    /// Bytes queued for sending (a KeyUpdate answer or an alert the reader produced).
    std::size_t queued_bytes() const { return out_.size() - out_sent_; }

  private:
    struct Direction {
        EVP_CIPHER_CTX* aead = nullptr;
        std::array<std::uint8_t, 64> secret{};
        std::array<std::uint8_t, 12> iv{};
        std::uint64_t sequence = 0;
    };

    Tls13Records() = default;
    bool install(Direction& direction, const std::uint8_t* secret, bool encrypt);
    bool next_secret(Direction& direction, bool encrypt);
    bool nonce(const Direction& direction, std::array<std::uint8_t, 12>& out) const;
    bool seal(std::uint8_t content_type, const std::uint8_t* data, std::size_t size);
    Result handle_handshake(std::size_t size, const Sender& send);
    Result fail(int ssl_reason, std::uint8_t alert, const Sender& send);
    Result flush(const Sender& send);
    static Result transport_error(std::ptrdiff_t rc);

    const EVP_CIPHER* cipher_ = nullptr;
    const EVP_MD* digest_ = nullptr;
    std::size_t key_bytes_ = 0;
    std::size_t hash_bytes_ = 0;
    Direction read_;
    Direction write_;

    // The record being received: header, then ciphertext (allocated for its length), then the
    // plaintext it decrypts to, handed out from [plain_begin_, plain_end_).
    std::array<std::uint8_t, 5> header_{};
    std::size_t header_have_ = 0;
    std::unique_ptr<std::uint8_t[]> record_;
    std::size_t record_size_ = 0;
    std::size_t record_have_ = 0;
    std::size_t plain_begin_ = 0;
    std::size_t plain_end_ = 0;

    // Sealed records waiting to be sent; `writing_` holds the plaintext count of the write in
    // progress (0: none).
    std::vector<std::uint8_t> out_;
    std::size_t out_sent_ = 0;
    std::size_t writing_ = 0;
    bool close_queued_ = false;
    bool eof_ = false;
    Result failed_{Status::kDone, 0, 0, 0};
};

}  // namespace otahub::net
