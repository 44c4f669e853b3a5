#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/domain/pki/certificate.hpp"
#include "server/domain/pki/openssl_ptr.hpp"
#include "server/domain/pki/trust_store.hpp"

// An in-process test PKI: P-256 keys, root and intermediate CAs, device/server/verification
// certificates and CSRs, generated in memory in milliseconds. Everything is immutable after
// creation and cheap to copy (copies share the OpenSSL objects), so tests can pass CAs and
// certificates around by value. Example:
//
//     auto root = TestPki::make_root("Device Root");
//     auto leaf = root.issue_leaf({.cn = "device-1", .eku = Eku::kClientAuth});
//     leaf.cert_pem(); leaf.key_pem(); leaf.facts().fingerprint;
namespace otahub::test_support {

/// The clock test certificates are dated by.
using Clock = std::chrono::system_clock;

/// Extended key usage written into a certificate.
enum class Eku {
    kNone,        ///< no extendedKeyUsage extension (acceptable to TLS clients and servers)
    kClientAuth,  ///< clientAuth only (a device certificate)
    kServerAuth,  ///< serverAuth only (refused as a TLS client certificate)
    kClientAndServerAuth,  ///< both
};

/// Where a verification certificate carries the CA-registration token.
enum class TokenPlacement {
    kSanUri,      ///< SAN `URI:urn:nerveshub:verify:<token>` (NervesHub)
    kCommonName,  ///< subject CN = token (AWS IoT style)
};

/// A P-256 key pair; copies share the key.
class TestKey {
  public:
    /// A fresh P-256 key.
    static TestKey generate();

    /// The OpenSSL key, owned by this object.
    EVP_PKEY* get() const { return key_.get(); }
    /// The private key as unencrypted PKCS#8 PEM.
    std::string private_pem() const;
    /// The public key as SubjectPublicKeyInfo PEM.
    std::string public_pem() const;

  private:
    explicit TestKey(std::shared_ptr<EVP_PKEY> key) : key_(std::move(key)) {}

    std::shared_ptr<EVP_PKEY> key_;
};

/// Paths written by `TestCert::write_files`.
struct CertFiles {
    /// `<name>.crt`: the certificate alone.
    std::filesystem::path cert{};
    /// `<name>.key`: its private key (PKCS#8 PEM).
    std::filesystem::path key{};
    /// `<name>-chain.crt`: the intermediates above it (excluding the root); empty path if none.
    std::filesystem::path chain{};
    /// `<name>-fullchain.crt`: the certificate followed by its intermediates.
    std::filesystem::path fullchain{};
};

/// Options for a leaf (device, server or other end-entity) certificate.
struct LeafOptions {
    /// Subject CN; empty for none.
    std::string cn = "device-1";
    /// Serial in decimal; empty for a random 127-bit serial.
    std::string serial{};
    /// Extended key usage.
    Eku eku = Eku::kClientAuth;
    /// Start of validity (second precision).
    Clock::time_point not_before = Clock::now() - std::chrono::hours{1};
    /// End of validity (second precision).
    Clock::time_point not_after = Clock::now() + std::chrono::hours{24};
    /// subjectAltName URIs.
    std::vector<std::string> san_uris{};
    /// subjectAltName DNS names (server certificates).
    std::vector<std::string> san_dns{};
    /// subjectAltName IP addresses, as text ("127.0.0.1", "::1").
    std::vector<std::string> san_ips{};
    /// Subject O; empty for none.
    std::string organization{};
    /// The key to certify; default a fresh one (pass an old key for a same-key rotation).
    std::optional<TestKey> key{};
    /// Whether to write a Subject Key Identifier.
    bool ski = true;
    /// Whether to write an Authority Key Identifier (the issuer's SKI).
    bool aki = true;
};

/// Options for a root or intermediate CA certificate.
struct CaOptions {
    /// Serial in decimal; empty for a random 127-bit serial.
    std::string serial{};
    /// Start of validity.
    Clock::time_point not_before = Clock::now() - std::chrono::hours{24};
    /// End of validity.
    Clock::time_point not_after = Clock::now() + std::chrono::hours{24 * 365 * 5};
    /// Subject O; empty for none.
    std::string organization{};
    /// The CA's key; default a fresh one (pass an old key to re-issue a CA on the same key).
    std::optional<TestKey> key{};
    /// Whether to write a Subject Key Identifier (CA registration requires one).
    bool ski = true;
    /// Whether to write an Authority Key Identifier.
    bool aki = true;
    /// basicConstraints pathlen; none for unlimited.
    std::optional<int> path_len{};
    /// Extended key usage on the CA itself (usually none).
    Eku eku = Eku::kNone;
};

/// A certificate of the test PKI with its private key and the issuers above it.
class TestCert {
  public:
    /// The OpenSSL certificate, owned by this object.
    X509* x509() const { return cert_.get(); }
    /// The certified key.
    const TestKey& key() const { return key_; }
    /// Facts as the hub computes them (serial, fingerprints, SKI/AKI, ...).
    pki::CertificateFacts facts() const;
    /// The hub's parsed form of this certificate.
    pki::Certificate certificate() const;

    /// The certificate as PEM.
    std::string cert_pem() const;
    /// The private key as unencrypted PKCS#8 PEM.
    std::string key_pem() const { return key_.private_pem(); }
    /// The intermediates above this certificate, nearest first, excluding the root; "" if none.
    std::string chain_pem() const;
    /// `cert_pem()` followed by `chain_pem()`: what a device sends.
    std::string fullchain_pem() const;
    /// Base64 of `cert_pem()`: the `{"cert": ...}` value of the REST API.
    std::string cert_pem_base64() const;
    /// The certificate in DER.
    std::vector<std::uint8_t> der() const;
    /// The issuers above this certificate, nearest first, up to and including the root.
    const std::vector<std::shared_ptr<X509>>& issuers() const { return issuers_; }

    /// Writes `<name>.crt`, `<name>.key`, `<name>-chain.crt` (when there are intermediates) and
    /// `<name>-fullchain.crt` into `dir` (created if needed). Throws on I/O errors.
    CertFiles write_files(const std::filesystem::path& dir, std::string_view name) const;

  protected:
    TestCert(std::shared_ptr<X509> cert, TestKey key, std::vector<std::shared_ptr<X509>> issuers);

    std::shared_ptr<X509> cert_;
    TestKey key_;
    std::vector<std::shared_ptr<X509>> issuers_;

    friend class TestCa;
    friend class TestPki;
};

/// A CA of the test PKI: issues leaves, intermediates and verification certificates.
class TestCa : public TestCert {
  public:
    /// Issues an end-entity certificate signed by this CA.
    TestCert issue_leaf(const LeafOptions& options = {}) const;
    /// Issues a subordinate CA named `cn`.
    TestCa issue_intermediate(std::string_view cn, const CaOptions& options = {}) const;
    /// Issues a TLS server certificate (serverAuth, SAN DNS `localhost` and IP 127.0.0.1 unless
    /// `options` says otherwise; `options.eku` is forced to serverAuth when it is clientAuth).
    TestCert issue_server_cert(LeafOptions options = {.cn = "localhost"}) const;
    /// Issues the proof-of-possession certificate for CA registration carrying `token`.
    TestCert issue_verification_cert(std::string_view token,
                                     TokenPlacement placement = TokenPlacement::kSanUri) const;
    /// This CA as a `ca_certificates` row for a trust snapshot.
    pki::RegisteredCa registered(std::int64_t id, std::int64_t org_id, bool active = true) const;

  private:
    using TestCert::TestCert;
    friend class TestPki;
};

/// Entry points of the test PKI.
class TestPki {
  public:
    /// A self-signed root CA named `cn`.
    static TestCa make_root(std::string_view cn, const CaOptions& options = {});
    /// A self-signed end-entity certificate (a device that made up its own certificate).
    static TestCert make_self_signed_leaf(const LeafOptions& options = {});
    /// A PEM certificate signing request for `key` with subject CN `cn` and SAN URIs.
    static std::string make_csr(const TestKey& key, std::string_view cn,
                                const std::vector<std::string>& san_uris = {});
};

/// TLS protocol version pinned on the client side of `run_memory_handshake`.
enum class TlsVersion {
    kTls12,
    kTls13,
};

/// A server context presenting `server_cert` (with its chain), accepting TLS 1.2 and 1.3. Client
/// verification is left to the caller (e.g. `pki::install_client_verification`).
pki::SslCtxPtr make_server_ctx(const TestCert& server_cert);

/// A client context pinned to `version` that trusts `server_root` and verifies the server, and
/// presents `client_cert` with its intermediates when given (`send_chain` false sends the leaf
/// alone).
pki::SslCtxPtr make_client_ctx(TlsVersion version, const TestCa& server_root,
                               const TestCert* client_cert, bool send_chain = true);

/// What an in-process TLS handshake came to. Alert fields hold TLS alert descriptions
/// (`SSL_AD_*`, e.g. `SSL_AD_UNKNOWN_CA`), or -1 when none.
struct HandshakeOutcome {
    /// Client finished the handshake and exchanged application data.
    bool client_ok = false;
    /// Server finished the handshake and exchanged application data.
    bool server_ok = false;
    /// First fatal alert the client received.
    int client_received_alert = -1;
    /// First fatal alert the server sent.
    int server_sent_alert = -1;
    /// `SSL_alert_desc_string_long` of `client_received_alert` ("unknown CA"), or "".
    std::string client_received_alert_text{};
    /// OpenSSL's reason for the server-side failure ("certificate verify failed"), or "".
    std::string server_error{};
    /// The client connection, for inspection afterwards.
    pki::SslPtr client{};
    /// The server connection (e.g. for `pki::verification_result`).
    pki::SslPtr server{};
};

/// Runs a TLS handshake between a fresh server and client connection over an in-memory BIO pair
/// (no sockets), then a ping/pong of application data so a TLS 1.3 client also learns of a
/// refusal that arrives after its own Finished. The client offers `resume` when given. Bounded;
/// never blocks.
HandshakeOutcome run_memory_handshake(SSL_CTX* server_ctx, SSL_CTX* client_ctx,
                                      SSL_SESSION* resume = nullptr);

}  // namespace otahub::test_support
