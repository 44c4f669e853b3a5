#include "server/net/tls13_records.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/tls1.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

namespace otahub::net {
namespace {

constexpr std::size_t kHeaderBytes = 5;
constexpr std::size_t kTagBytes = 16;
constexpr std::size_t kMaxPlaintext = 16384;                 // 2^14
constexpr std::size_t kMaxCiphertext = kMaxPlaintext + 256;  // RFC 8446 §5.2
constexpr std::uint8_t kApplicationData = 23;
constexpr std::uint8_t kAlert = 21;
constexpr std::uint8_t kHandshake = 22;
constexpr std::uint8_t kKeyUpdate = 24;
constexpr std::uint8_t kAlertWarning = 1;
constexpr std::uint8_t kAlertFatal = 2;
constexpr std::uint8_t kCloseNotify = 0;
constexpr std::uint8_t kUserCanceled = 90;

/// What the key log and message callbacks collect for one connection until `take_over`.
struct Secrets {
    std::array<std::uint8_t, 64> client{};
    std::array<std::uint8_t, 64> server{};
    std::size_t client_bytes = 0;
    std::size_t server_bytes = 0;
    unsigned tickets_sent = 0;

    ~Secrets() {
        OPENSSL_cleanse(client.data(), client.size());
        OPENSSL_cleanse(server.data(), server.size());
    }
};

void free_secrets(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/, long /*argl*/,
                  void* /*argp*/) {
    delete static_cast<Secrets*>(ptr);
}

// SSL_dup copies ex_data pointers: give the copy its own secrets so each SSL frees its own.
int dup_secrets(CRYPTO_EX_DATA* /*to*/, const CRYPTO_EX_DATA* /*from*/, void** from_d, int /*idx*/,
                long /*argl*/, void* /*argp*/) {
    const auto* source = static_cast<const Secrets*>(*from_d);
    *from_d = source != nullptr ? new (std::nothrow) Secrets(*source) : nullptr;
    return source == nullptr || *from_d != nullptr ? 1 : 0;
}

int secrets_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, dup_secrets, free_secrets);
    return index;
}

Secrets* secrets_of(const SSL* ssl, bool create) {
    auto* secrets = static_cast<Secrets*>(SSL_get_ex_data(ssl, secrets_index()));
    if (secrets != nullptr || !create) return secrets;
    secrets = new (std::nothrow) Secrets();
    // The callbacks get a const SSL; the ex_data slot is ours to fill.
    if (secrets != nullptr &&
        SSL_set_ex_data(const_cast<SSL*>(ssl), secrets_index(), secrets) != 1) {
        delete secrets;
        secrets = nullptr;
    }
    return secrets;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// "LABEL <client random> <secret>", hex; only the two application traffic secrets are kept.
void on_key_log(const SSL* ssl, const char* line) {
    const std::string_view text(line);
    const auto label_end = text.find(' ');
    if (label_end == std::string_view::npos) return;
    const auto label = text.substr(0, label_end);
    const bool client = label == "CLIENT_TRAFFIC_SECRET_0";
    if (!client && label != "SERVER_TRAFFIC_SECRET_0") return;
    const auto random_end = text.find(' ', label_end + 1);
    if (random_end == std::string_view::npos) return;
    const auto hex = text.substr(random_end + 1);
    if (hex.size() % 2 != 0 || hex.size() / 2 > 64) return;
    Secrets* secrets = secrets_of(ssl, true);
    if (secrets == nullptr) return;
    auto& out = client ? secrets->client : secrets->server;
    for (std::size_t i = 0; i < hex.size() / 2; ++i) {
        const int high = hex_value(hex[2 * i]);
        const int low = hex_value(hex[2 * i + 1]);
        if (high < 0 || low < 0) return;
        out[i] = static_cast<std::uint8_t>(high * 16 + low);
    }
    (client ? secrets->client_bytes : secrets->server_bytes) = hex.size() / 2;
}

// Counts the NewSessionTicket messages sent: each went out in its own record under the server's
// application key, so they fix the write sequence number at the hand-over.
void on_message(int write_p, int /*version*/, int content_type, const void* buf, std::size_t len,
                SSL* ssl, void* /*arg*/) {
    if (write_p != 1 || content_type != SSL3_RT_HANDSHAKE || len == 0) return;
    if (static_cast<const std::uint8_t*>(buf)[0] != SSL3_MT_NEWSESSION_TICKET) return;
    if (Secrets* secrets = secrets_of(ssl, true)) ++secrets->tickets_sent;
}

}  // namespace

void remember_tls13_secrets(SSL_CTX* ctx) {
    secrets_index();  // allocate the slot before any handshake runs
    SSL_CTX_set_keylog_callback(ctx, on_key_log);
    SSL_CTX_set_msg_callback(ctx, on_message);
}

void forget_tls13_secrets(SSL* ssl) {
    if (ssl == nullptr) return;
    SSL_set_msg_callback(ssl, nullptr);
    delete secrets_of(ssl, false);  // ~Secrets wipes them
    SSL_set_ex_data(ssl, secrets_index(), nullptr);
}

std::unique_ptr<Tls13Records> Tls13Records::take_over(SSL* ssl) {
    if (ssl == nullptr || SSL_version(ssl) != TLS1_3_VERSION || !SSL_is_init_finished(ssl) ||
        SSL_has_pending(ssl) != 0 || SSL_get_shutdown(ssl) != 0 ||
        SSL_get_key_update_type(ssl) != SSL_KEY_UPDATE_NONE ||
        SSL_get_early_data_status(ssl) == SSL_EARLY_DATA_ACCEPTED) {
        return nullptr;
    }
    const Secrets* secrets = secrets_of(ssl, false);
    const SSL_CIPHER* suite = SSL_get_current_cipher(ssl);
    if (secrets == nullptr || suite == nullptr) return nullptr;
    // Nothing was read after the client's Finished; each ticket sent took one record.
    return from_secrets(SSL_CIPHER_get_protocol_id(suite),
                        {secrets->client.data(), secrets->client_bytes},
                        {secrets->server.data(), secrets->server_bytes}, 0, secrets->tickets_sent);
}

std::unique_ptr<Tls13Records> Tls13Records::from_secrets(
    std::uint16_t suite, std::span<const std::uint8_t> client_secret,
    std::span<const std::uint8_t> server_secret, std::uint64_t read_sequence,
    std::uint64_t write_sequence) {
    std::unique_ptr<Tls13Records> records{new Tls13Records()};
    switch (suite) {
        case 0x1301:  // TLS_AES_128_GCM_SHA256
            records->cipher_ = EVP_aes_128_gcm();
            records->digest_ = EVP_sha256();
            records->key_bytes_ = 16;
            break;
        case 0x1302:  // TLS_AES_256_GCM_SHA384
            records->cipher_ = EVP_aes_256_gcm();
            records->digest_ = EVP_sha384();
            records->key_bytes_ = 32;
            break;
        case 0x1303:  // TLS_CHACHA20_POLY1305_SHA256
            records->cipher_ = EVP_chacha20_poly1305();
            records->digest_ = EVP_sha256();
            records->key_bytes_ = 32;
            break;
        default:
            return nullptr;
    }
    records->hash_bytes_ = static_cast<std::size_t>(EVP_MD_get_size(records->digest_));
    if (client_secret.size() != records->hash_bytes_ ||
        server_secret.size() != records->hash_bytes_) {
        return nullptr;
    }
    if (!records->install(records->read_, client_secret.data(), false) ||
        !records->install(records->write_, server_secret.data(), true)) {
        return nullptr;
    }
    records->read_.sequence = read_sequence;
    records->write_.sequence = write_sequence;
    return records;
}

Tls13Records::~Tls13Records() {
    EVP_CIPHER_CTX_free(read_.aead);
    EVP_CIPHER_CTX_free(write_.aead);
    OPENSSL_cleanse(read_.secret.data(), read_.secret.size());
    OPENSSL_cleanse(write_.secret.data(), write_.secret.size());
}

namespace {

// HKDF-Expand-Label(secret, label, "", length) for length <= hash size: one HMAC block.
bool expand_label(const EVP_MD* digest, const std::uint8_t* secret, std::size_t secret_bytes,
                  std::string_view label, std::uint8_t* out, std::size_t length) {
    std::array<std::uint8_t, 64> info{};
    std::size_t n = 0;
    info[n++] = static_cast<std::uint8_t>(length >> 8);
    info[n++] = static_cast<std::uint8_t>(length & 0xff);
    info[n++] = static_cast<std::uint8_t>(6 + label.size());
    std::memcpy(info.data() + n, "tls13 ", 6);
    n += 6;
    std::memcpy(info.data() + n, label.data(), label.size());
    n += label.size();
    info[n++] = 0;  // empty context
    info[n++] = 1;  // HKDF-Expand block counter
    std::array<std::uint8_t, EVP_MAX_MD_SIZE> block{};
    unsigned int block_bytes = 0;
    if (HMAC(digest, secret, static_cast<int>(secret_bytes), info.data(), n, block.data(),
             &block_bytes) == nullptr ||
        block_bytes < length) {
        return false;
    }
    std::memcpy(out, block.data(), length);
    OPENSSL_cleanse(block.data(), block.size());
    return true;
}

}  // namespace

bool Tls13Records::install(Direction& direction, const std::uint8_t* secret, bool encrypt) {
    std::memcpy(direction.secret.data(), secret, hash_bytes_);
    std::array<std::uint8_t, 32> key{};
    const bool derived =
        expand_label(digest_, secret, hash_bytes_, "key", key.data(), key_bytes_) &&
        expand_label(digest_, secret, hash_bytes_, "iv", direction.iv.data(), direction.iv.size());
    if (derived && direction.aead == nullptr) direction.aead = EVP_CIPHER_CTX_new();
    const bool keyed = derived && direction.aead != nullptr &&
                       EVP_CipherInit_ex(direction.aead, cipher_, nullptr, key.data(), nullptr,
                                         encrypt ? 1 : 0) == 1;
    OPENSSL_cleanse(key.data(), key.size());
    direction.sequence = 0;
    return keyed;
}

bool Tls13Records::next_secret(Direction& direction, bool encrypt) {
    std::array<std::uint8_t, 64> next{};
    const bool ok = expand_label(digest_, direction.secret.data(), hash_bytes_, "traffic upd",
                                 next.data(), hash_bytes_) &&
                    install(direction, next.data(), encrypt);
    OPENSSL_cleanse(next.data(), next.size());
    return ok;
}

bool Tls13Records::nonce(const Direction& direction, std::array<std::uint8_t, 12>& out) const {
    if (direction.sequence == UINT64_MAX) return false;  // RFC 8446 §5.3: never wrap
    out = direction.iv;
    for (std::size_t i = 0; i < 8; ++i) {
        out[out.size() - 1 - i] ^= static_cast<std::uint8_t>(direction.sequence >> (8 * i));
    }
    return true;
}

bool Tls13Records::seal(std::uint8_t content_type, const std::uint8_t* data, std::size_t size) {
    if (size > kMaxPlaintext) return false;
    if (out_sent_ == out_.size()) {
        out_.clear();
        out_sent_ = 0;
    }
    std::array<std::uint8_t, 12> iv{};
    if (!nonce(write_, iv)) return false;
    const std::size_t inner = size + 1;
    const std::size_t total = inner + kTagBytes;
    const std::size_t start = out_.size();
    out_.resize(start + kHeaderBytes + total);
    std::uint8_t* header = out_.data() + start;
    header[0] = kApplicationData;  // every protected record is "application_data" outside
    header[1] = 0x03;
    header[2] = 0x03;
    header[3] = static_cast<std::uint8_t>(total >> 8);
    header[4] = static_cast<std::uint8_t>(total & 0xff);
    std::uint8_t* body = header + kHeaderBytes;
    if (size > 0) std::memcpy(body, data, size);
    body[size] = content_type;
    int written = 0;
    int final_bytes = 0;
    EVP_CIPHER_CTX* aead = write_.aead;
    const bool ok =
        EVP_CipherInit_ex(aead, nullptr, nullptr, nullptr, iv.data(), 1) == 1 &&
        EVP_EncryptUpdate(aead, nullptr, &written, header, static_cast<int>(kHeaderBytes)) == 1 &&
        EVP_EncryptUpdate(aead, body, &written, body, static_cast<int>(inner)) == 1 &&
        EVP_EncryptFinal_ex(aead, body + written, &final_bytes) == 1 &&
        static_cast<std::size_t>(written + final_bytes) == inner &&
        EVP_CIPHER_CTX_ctrl(aead, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kTagBytes),
                            body + inner) == 1;
    if (!ok) {
        out_.resize(start);
        return false;
    }
    ++write_.sequence;
    return true;
}

Tls13Records::Result Tls13Records::flush(const Sender& send) {
    while (out_sent_ < out_.size()) {
        const std::ptrdiff_t rc = send(out_.data() + out_sent_, out_.size() - out_sent_);
        if (rc > 0) {
            out_sent_ += static_cast<std::size_t>(rc);
        } else if (rc == -EAGAIN || rc == -EWOULDBLOCK) {
            return {Status::kWantWrite, 0, 0, 0};
        } else if (rc != -EINTR) {
            return transport_error(rc == 0 ? -EPIPE : rc);
        }
    }
    std::vector<std::uint8_t>().swap(out_);  // an idle connection keeps no send buffer
    out_sent_ = 0;
    return {Status::kDone, 0, 0, 0};
}

Tls13Records::Result Tls13Records::transport_error(std::ptrdiff_t rc) {
    return {Status::kError, 0, 0, static_cast<int>(-rc)};
}

Tls13Records::Result Tls13Records::fail(int ssl_reason, std::uint8_t alert, const Sender& send) {
    failed_ = {Status::kError, 0, ssl_reason, 0};
    // Tell the peer why, once, if the socket takes it now; the stream is over either way.
    if (!close_queued_ && alert != 0) {
        close_queued_ = true;
        const std::uint8_t payload[2] = {kAlertFatal, alert};
        if (seal(kAlert, payload, sizeof payload)) (void)flush(send);
    }
    return failed_;
}

Tls13Records::Result Tls13Records::write(const void* data, std::size_t size, const Sender& send) {
    if (failed_.status == Status::kError) return failed_;
    if (close_queued_) return {Status::kError, 0, SSL_R_PROTOCOL_IS_SHUTDOWN, 0};
    if (writing_ == 0) {
        if (queued_bytes() > 0) {
            const Result queued = flush(send);
            if (queued.status != Status::kDone) return queued;
        }
        const std::size_t take = std::min(size, kMaxPlaintext);
        if (take == 0) return {Status::kDone, 0, 0, 0};
        if (!seal(kApplicationData, static_cast<const std::uint8_t*>(data), take)) {
            failed_ = {Status::kError, 0, ERR_R_INTERNAL_ERROR, 0};
            return failed_;
        }
        writing_ = take;
    }
    const Result sent = flush(send);
    if (sent.status == Status::kError) failed_ = sent;
    if (sent.status != Status::kDone) return sent;
    const std::size_t taken = writing_;
    writing_ = 0;
    return {Status::kDone, taken, 0, 0};
}

Tls13Records::Result Tls13Records::close_notify(const Sender& send) {
    if (!close_queued_ && failed_.status != Status::kError) {
        close_queued_ = true;
        const std::uint8_t payload[2] = {kAlertWarning, kCloseNotify};
        if (!seal(kAlert, payload, sizeof payload)) {
            return {Status::kError, 0, ERR_R_INTERNAL_ERROR, 0};
        }
    }
    return flush(send);
}

Tls13Records::Result Tls13Records::handle_handshake(std::size_t size, const Sender& send) {
    // After the handshake a client may only send KeyUpdate (no post-handshake authentication
    // was offered). It changes the key, so it ends its record: exactly one message of 5 bytes.
    const std::uint8_t* message = record_.get();
    if (size != 5 || message[0] != kKeyUpdate || message[1] != 0 || message[2] != 0 ||
        message[3] != 1) {
        return fail(SSL_R_UNEXPECTED_MESSAGE, SSL_AD_UNEXPECTED_MESSAGE, send);
    }
    const std::uint8_t requested = message[4];
    if (requested > 1) return fail(SSL_R_BAD_KEY_UPDATE, SSL_AD_ILLEGAL_PARAMETER, send);
    if (!next_secret(read_, false)) return fail(ERR_R_INTERNAL_ERROR, SSL_AD_INTERNAL_ERROR, send);
    if (requested == 1 && !close_queued_) {
        // Our KeyUpdate goes out before any later application data, then our key changes.
        const std::uint8_t answer[5] = {kKeyUpdate, 0, 0, 1, 0};
        if (!seal(kHandshake, answer, sizeof answer) || !next_secret(write_, true)) {
            return fail(ERR_R_INTERNAL_ERROR, SSL_AD_INTERNAL_ERROR, send);
        }
        const Result sent = flush(send);
        if (sent.status == Status::kError) {
            failed_ = sent;
            return sent;
        }
    }
    return {Status::kDone, 0, 0, 0};
}

Tls13Records::Result Tls13Records::read(void* out, std::size_t size, const Transport& receive,
                                        const Sender& send) {
    for (;;) {
        if (plain_begin_ < plain_end_) {
            const std::size_t n = std::min(size, plain_end_ - plain_begin_);
            std::memcpy(out, record_.get() + plain_begin_, n);
            plain_begin_ += n;
            if (plain_begin_ == plain_end_) {
                record_.reset();  // an idle connection keeps no receive buffer
                plain_begin_ = plain_end_ = 0;
            }
            return {Status::kDone, n, 0, 0};
        }
        if (failed_.status == Status::kError) return failed_;
        if (eof_) return {Status::kEof, 0, 0, 0};

        // The record header, then its ciphertext: each read as far as the transport allows.
        while (header_have_ < kHeaderBytes || record_have_ < record_size_) {
            std::uint8_t* into = header_have_ < kHeaderBytes ? header_.data() + header_have_
                                                             : record_.get() + record_have_;
            const std::size_t want = header_have_ < kHeaderBytes ? kHeaderBytes - header_have_
                                                                 : record_size_ - record_have_;
            const std::ptrdiff_t rc = receive(into, want);
            if (rc == -EAGAIN || rc == -EWOULDBLOCK) return {Status::kWantRead, 0, 0, 0};
            if (rc == -EINTR) continue;
            if (rc == 0) {
                // The TCP stream ended without close_notify: a truncation, as OpenSSL reports it.
                failed_ = {Status::kError, 0, SSL_R_UNEXPECTED_EOF_WHILE_READING, 0};
                return failed_;
            }
            if (rc < 0) {
                failed_ = transport_error(rc);
                return failed_;
            }
            if (header_have_ < kHeaderBytes) {
                header_have_ += static_cast<std::size_t>(rc);
                if (header_have_ < kHeaderBytes) continue;
                const std::size_t length = (std::size_t{header_[3]} << 8) | header_[4];
                if (header_[0] != kApplicationData || header_[1] != 0x03 || header_[2] != 0x03) {
                    return fail(SSL_R_UNEXPECTED_RECORD, SSL_AD_UNEXPECTED_MESSAGE, send);
                }
                if (length > kMaxCiphertext) {
                    return fail(SSL_R_ENCRYPTED_LENGTH_TOO_LONG, SSL_AD_RECORD_OVERFLOW, send);
                }
                if (length < kTagBytes + 1) {
                    return fail(SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC, SSL_AD_BAD_RECORD_MAC,
                                send);
                }
                record_ = std::make_unique_for_overwrite<std::uint8_t[]>(length);
                record_size_ = length;
                record_have_ = 0;
            } else {
                record_have_ += static_cast<std::size_t>(rc);
            }
        }

        // Open the record in place.
        std::array<std::uint8_t, 12> iv{};
        const std::size_t sealed = record_size_ - kTagBytes;
        std::uint8_t* body = record_.get();
        int opened = 0;
        int final_bytes = 0;
        EVP_CIPHER_CTX* aead = read_.aead;
        const bool authentic =
            nonce(read_, iv) &&
            EVP_CipherInit_ex(aead, nullptr, nullptr, nullptr, iv.data(), 0) == 1 &&
            EVP_DecryptUpdate(aead, nullptr, &opened, header_.data(),
                              static_cast<int>(kHeaderBytes)) == 1 &&
            EVP_DecryptUpdate(aead, body, &opened, body, static_cast<int>(sealed)) == 1 &&
            EVP_CIPHER_CTX_ctrl(aead, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kTagBytes),
                                body + sealed) == 1 &&
            EVP_DecryptFinal_ex(aead, body + opened, &final_bytes) == 1;
        header_have_ = 0;
        record_have_ = 0;
        record_size_ = 0;
        if (!authentic) {
            record_.reset();
            return fail(SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC, SSL_AD_BAD_RECORD_MAC, send);
        }
        ++read_.sequence;

        // TLSInnerPlaintext: content, content type, zero padding.
        std::size_t end = sealed;
        while (end > 0 && body[end - 1] == 0) --end;
        if (end == 0) {
            record_.reset();
            return fail(SSL_R_UNEXPECTED_MESSAGE, SSL_AD_UNEXPECTED_MESSAGE, send);
        }
        const std::uint8_t content_type = body[end - 1];
        const std::size_t length = end - 1;
        if (length > kMaxPlaintext) {
            record_.reset();
            return fail(SSL_R_DATA_LENGTH_TOO_LONG, SSL_AD_RECORD_OVERFLOW, send);
        }
        if (content_type == kApplicationData) {
            if (length == 0) {
                record_.reset();  // an empty record carries nothing: wait for the next
                continue;
            }
            plain_begin_ = 0;
            plain_end_ = length;
            continue;
        }
        if (content_type == kAlert) {
            const std::uint8_t description = length == 2 ? body[1] : 0xff;
            record_.reset();
            if (length != 2) return fail(SSL_R_BAD_LENGTH, SSL_AD_DECODE_ERROR, send);
            if (description == kCloseNotify) {
                eof_ = true;
                return {Status::kEof, 0, 0, 0};
            }
            if (description == kUserCanceled) continue;
            // Every other alert is fatal in TLS 1.3; OpenSSL's reason codes carry its name.
            failed_ = {Status::kError, 0, SSL_AD_REASON_OFFSET + description, 0};
            close_queued_ = true;  // no alert back to a peer that has ended the connection
            return failed_;
        }
        if (content_type == kHandshake) {
            const Result handled = handle_handshake(length, send);
            record_.reset();
            if (handled.status == Status::kError) return handled;
            continue;
        }
        record_.reset();
        return fail(SSL_R_UNEXPECTED_RECORD, SSL_AD_UNEXPECTED_MESSAGE, send);
    }
}

}  // namespace otahub::net
