#include "server/net/tls.hpp"

#include <openssl/ssl.h>

#include <stdexcept>

#include "server/domain/crypto.hpp"

namespace otahub::net {
namespace {

// Forward-secret AEAD suites only for TLS 1.2; TLS 1.3 suites are all modern.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

void harden(SSL_CTX* ctx) {
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(
        ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_cipher_list(ctx, kTls12Ciphers);
    SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384");
    // Idle sessions give their read/write buffers back: matters with 15k+ idle devices.
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

}  // namespace

ssl::context make_server_context(const std::string& cert_chain_file, const std::string& key_file) {
    ssl::context ctx{ssl::context::tls_server};
    harden(ctx.native_handle());
    boost::system::error_code ec;
    ctx.use_certificate_chain_file(cert_chain_file, ec);
    if (ec)
        throw std::runtime_error("cannot load certificate " + cert_chain_file + ": " +
                                 ec.message());
    ctx.use_private_key_file(key_file, ssl::context::pem, ec);
    if (ec) throw std::runtime_error("cannot load key " + key_file + ": " + ec.message());
    if (SSL_CTX_check_private_key(ctx.native_handle()) != 1) {
        throw std::runtime_error("key " + key_file + " does not match certificate " +
                                 cert_chain_file);
    }
    return ctx;
}

ssl::context make_client_context(const std::string& ca_file, const std::string& cert_file,
                                 const std::string& key_file) {
    ssl::context ctx{ssl::context::tls_client};
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
    if (ca_file.empty()) {
        ctx.set_default_verify_paths();
    } else {
        ctx.load_verify_file(ca_file);
    }
    ctx.set_verify_mode(ssl::verify_peer);
    if (!cert_file.empty()) {
        ctx.use_certificate_chain_file(cert_file);
        ctx.use_private_key_file(key_file.empty() ? cert_file : key_file, ssl::context::pem);
    }
    return ctx;
}

void enable_session_tickets(SSL_CTX* ctx, const std::string& key,
                            const std::string& session_id_context) {
    // Resuming needs a session id context whenever client certificates are verified.
    if (SSL_CTX_set_session_id_context(
            ctx, reinterpret_cast<const unsigned char*>(session_id_context.data()),
            static_cast<unsigned int>(
                std::min<std::size_t>(session_id_context.size(), SSL_MAX_SID_CTX_LENGTH))) != 1) {
        throw std::runtime_error("cannot set the TLS session id context");
    }
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);  // TLS 1.3: stateless tickets, no server cache
    SSL_CTX_set_num_tickets(ctx, 1);
    if (key.empty()) return;  // OpenSSL's random per-context key
    // name (16) | HMAC-SHA256 key (32) | AES-256 key (32), each derived from the shared key.
    const auto name = crypto::hmac_sha256(key, "otahub tls ticket name");
    const auto mac = crypto::hmac_sha256(key, "otahub tls ticket hmac");
    const auto aes = crypto::hmac_sha256(key, "otahub tls ticket aes");
    std::string keys = name.substr(0, 16) + mac + aes;
    if (keys.size() != 80 ||
        SSL_CTX_set_tlsext_ticket_keys(ctx, keys.data(), static_cast<long>(keys.size())) != 1) {
        throw std::runtime_error("cannot set the TLS session ticket key");
    }
}

}  // namespace otahub::net
