#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "server/domain/pki/certificate.hpp"
#include "server/domain/pki/openssl_ptr.hpp"

namespace otahub::pki {

/// Longest chain of intermediates accepted above a device certificate (as `s_server -Verify 4`).
inline constexpr int kMaxVerifyDepth = 4;

/// Verified certificates a snapshot remembers by default (`OTAHUB_TLS_VERIFY_CACHE`).
inline constexpr std::size_t kDefaultVerifyCacheEntries = 65536;

/// A CA certificate an organisation registered, as the handshake needs it (a `ca_certificates`
/// row).
struct RegisteredCa {
    /// Database id of the CA.
    std::int64_t id = 0;
    /// Organisation that registered it.
    std::int64_t org_id = 0;
    /// Serial in decimal (informational; the certificate itself comes from `der`).
    std::string serial{};
    /// Subject Key Identifier in upper-case hex (informational).
    std::string ski{};
    /// Inactive CAs are left out of the snapshot: their devices get `unknown_ca`.
    bool active = true;
    /// Whether an expired CA refuses its devices; NervesHub ignores CA expiry unless asked.
    bool check_expiration = true;
    /// Whether the CA has a just-in-time provisioning profile.
    bool jitp = false;
    /// The CA certificate in DER.
    std::vector<std::uint8_t> der{};
};

/// A revoked certificate named by its issuer's key identifier and its serial.
struct RevokedSerial {
    /// Upper-case hex SKI of the issuing CA (the revoked certificate's AKI); colons are ignored.
    std::string issuer_ski{};
    /// Serial in decimal.
    std::string serial{};
};

/// A device refused at the handshake: organisation and identifier (the certificate's CN).
struct DisabledDevice {
    /// Organisation owning the device.
    std::int64_t org_id = 0;
    /// Device identifier, compared with the leaf's subject CN.
    std::string identifier{};
};

/// Everything one trust snapshot is built from.
struct TrustInputs {
    /// Registered CAs, active or not.
    std::vector<RegisteredCa> cas{};
    /// Revoked certificates by SHA-1 fingerprint of their DER (upper-case hex; colons ignored).
    std::vector<std::string> revoked_fingerprints{};
    /// Revoked certificates by issuer SKI and serial.
    std::vector<RevokedSerial> revoked_serials{};
    /// Devices refused even with a good certificate.
    std::vector<DisabledDevice> disabled_devices{};
};

/// The outcome class of a client-certificate verification.
enum class VerifyStatus {
    kOk,                  ///< chain ends at an active registered CA
    kUnknownCa,           ///< no active registered CA above the certificate
    kExpired,             ///< a certificate of the chain has expired
    kNotYetValid,         ///< a certificate of the chain is not valid yet
    kInvalidPurpose,      ///< an extendedKeyUsage without clientAuth
    kRevoked,             ///< the leaf or a device-sent intermediate is revoked
    kDeviceDisabled,      ///< the device (org, CN) is disabled
    kBadSignature,        ///< a signature in the chain does not verify
    kInvalidCertificate,  ///< anything else wrong with the certificates
    kUnavailable,         ///< no trust snapshot or an internal failure (NervesHub's
                          ///< `platform_unavailable`)
};

/// A stable snake_case name for a status (for logs and metrics).
std::string_view to_string(VerifyStatus status);

/// The registered CA a verified chain ends at.
struct MatchedCa {
    /// Database id of the CA.
    std::int64_t id = 0;
    /// Organisation that registered it.
    std::int64_t org_id = 0;
    /// Whether it has a just-in-time provisioning profile.
    bool jitp = false;
    /// Its Subject Key Identifier, upper-case hex.
    std::string ski{};
    /// Its position in the verified chain (1 = the leaf's issuer).
    int depth = 0;
};

/// The result of verifying one client certificate chain.
struct VerifyResult {
    /// What happened.
    VerifyStatus status = VerifyStatus::kUnavailable;
    /// The `X509_V_ERR_*` code that makes OpenSSL send the matching alert; `X509_V_OK` on success.
    int x509_error = X509_V_OK;
    /// Chain position of the offending certificate (0 = leaf); 0 on success.
    int error_depth = 0;
    /// The registered CA the chain ends at; set on success, for a disabled device, and for a
    /// refusal whose chain reached a registered CA (a revoked or expired certificate).
    std::optional<MatchedCa> ca{};
    /// Facts of the leaf certificate, when it could be read.
    std::optional<CertificateFacts> leaf{};

    /// Whether the certificate is accepted.
    bool ok() const { return status == VerifyStatus::kOk; }
};

/// What the refusal hook learns about each refused handshake.
struct Refusal {
    /// Why it was refused.
    VerifyStatus reason = VerifyStatus::kUnavailable;
    /// The `X509_V_ERR_*` code set for OpenSSL.
    int x509_error = X509_V_OK;
    /// Leaf serial in decimal (empty when the leaf could not be read).
    std::string serial{};
    /// Leaf subject CN.
    std::string common_name{};
    /// Leaf issuer, one RFC 2253 line.
    std::string issuer{};
    /// Leaf SHA-1 fingerprint.
    std::string fingerprint{};
    /// The registered CA the refused chain reached and its org; 0 when none (unknown CA).
    std::int64_t ca_id = 0;
    std::int64_t org_id = 0;
};

/// An immutable picture of trust for the TLS handshake: registered CAs as trust anchors
/// (partial chains allowed, so a registered intermediate anchors), revocations and disabled
/// devices. Build it off the I/O threads, share it as `shared_ptr<const TrustSnapshot>` and
/// replace it whole when CAs or revocations change. `verify` is safe to call from any number of
/// threads at once: the `X509_STORE` is filled once in `build` and only read afterwards, which
/// OpenSSL 3 supports (its lookups take the store's own lock).
class TrustSnapshot {
  public:
    /// Builds a snapshot; CAs whose DER does not parse are skipped and listed in
    /// `skipped_ca_ids()`. It remembers up to `verify_cache_entries` certificates it accepted
    /// (0: none; see `verify`). Throws `std::bad_alloc` only.
    static std::shared_ptr<const TrustSnapshot> build(
        const TrustInputs& inputs, std::size_t verify_cache_entries = kDefaultVerifyCacheEntries);
    /// A snapshot that trusts nothing.
    static std::shared_ptr<const TrustSnapshot> empty();

    TrustSnapshot(const TrustSnapshot&) = delete;
    TrustSnapshot& operator=(const TrustSnapshot&) = delete;
    ~TrustSnapshot();

    /// Verifies `leaf` with the chain the peer sent (may include the leaf, may be null) at time
    /// `now` for TLS client use (a leaf without EKU is fine; with an EKU it needs clientAuth).
    /// On success the result names the deepest (closest to the leaf) active registered CA of the
    /// chain. When `verified_chain` is given, it receives the verified chain on success.
    ///
    /// A certificate this snapshot accepted before, with the same intermediates from the peer,
    /// is accepted again without building and checking its chain (signatures included) as long
    /// as every certificate of that chain up to its registered CA is still valid at `now`.
    /// Anything else, a refusal included, goes through OpenSSL's verification. The snapshot's
    /// inputs (CAs, revocations, disabled devices) cannot change, so what it accepted stays
    /// accepted, within those times, until the next snapshot; `verified_chain` then ends at the
    /// registered CA.
    VerifyResult verify(X509* leaf, STACK_OF(X509) * untrusted,
                        std::chrono::system_clock::time_point now,
                        X509StackPtr* verified_chain = nullptr) const;

    /// What the cache of accepted certificates holds and has saved (for tests and metrics).
    struct VerifyCacheStats {
        std::size_t entries = 0;
        std::uint64_t hits = 0;
    };
    VerifyCacheStats verify_cache_stats() const;

    /// Number of CAs acting as trust anchors (active and readable).
    std::size_t trusted_ca_count() const { return anchors_.size(); }
    /// Ids of registered CAs left out because their DER did not parse.
    const std::vector<std::int64_t>& skipped_ca_ids() const { return skipped_ca_ids_; }

  private:
    struct Anchor {
        RegisteredCa ca;
        X509Ptr cert;
        std::string ski;
    };

    /// SHA-256 over the DER of the leaf and of each intermediate the peer sent.
    using VerifyKey = std::array<unsigned char, 32>;
    struct VerifyKeyHash {
        std::size_t operator()(const VerifyKey& key) const noexcept;
    };
    /// An accepted certificate: its registered CA and the chain above the leaf up to it.
    struct Accepted {
        MatchedCa ca;
        std::vector<X509Ptr> issuers;  // chain positions 1..ca.depth
        bool anchor_expiry_checked = true;
    };

    TrustSnapshot();

    const Anchor* anchor_for(X509* cert) const;
    std::optional<int> deepest_anchor(STACK_OF(X509) * chain) const;
    bool is_revoked(X509* cert, X509* issuer) const;
    std::optional<VerifyKey> verify_key(const CertificateFacts& leaf, X509* leaf_cert,
                                        STACK_OF(X509) * untrusted) const;
    bool accepted_before(const VerifyKey& key, X509* leaf,
                         std::chrono::system_clock::time_point now, VerifyResult& result,
                         X509StackPtr* verified_chain) const;
    void remember_accepted(const VerifyKey& key, STACK_OF(X509) * chain, const MatchedCa& ca,
                           bool anchor_expiry_checked) const;

    static int on_verify_error(int ok, X509_STORE_CTX* ctx);
    static int check_revocation(X509_STORE_CTX* ctx);
    static const TrustSnapshot* from_store(X509_STORE_CTX* ctx);

    X509StorePtr store_;
    std::vector<Anchor> anchors_;
    std::unordered_map<std::string, std::size_t> anchor_by_fingerprint_;
    std::unordered_set<std::string> revoked_fingerprints_;
    std::unordered_set<std::string> revoked_serials_;
    std::set<std::pair<std::int64_t, std::string>> disabled_devices_;
    std::vector<std::int64_t> skipped_ca_ids_;

    std::size_t verify_cache_limit_ = 0;
    mutable std::mutex verify_cache_mutex_;
    mutable std::unordered_map<VerifyKey, Accepted, VerifyKeyHash> verify_cache_;
    mutable std::atomic<std::uint64_t> verify_cache_hits_{0};
    mutable std::deque<VerifyKey> verify_cache_order_;  // oldest first
};

/// Holds the current snapshot and swaps it atomically; readers keep the snapshot they got alive.
/// Thread-safe.
class TrustStore {
  public:
    /// Starts with a snapshot that trusts nothing.
    TrustStore();

    /// The snapshot in force now.
    std::shared_ptr<const TrustSnapshot> current() const;
    /// Puts `next` in force for handshakes that start from now on; null is ignored.
    void replace(std::shared_ptr<const TrustSnapshot> next);
    /// A provider for `install_client_verification`; this store must outlive the TLS context.
    /// Handshakes verified through it also report their refusals to the refusal observer.
    std::function<std::shared_ptr<const TrustSnapshot>()> provider() const;
    /// Called (on the handshake's thread, keep it cheap) for every certificate refused by a
    /// context verifying through `provider()`, besides the context's own `on_refusal`.
    void set_refusal_observer(std::function<void(const Refusal&)> observer);
    /// Reports a refusal to the observer, if any; never throws.
    void notify_refusal(const Refusal& refusal) const noexcept;

  private:
    mutable std::mutex mutex_;
    std::shared_ptr<const TrustSnapshot> current_;
    std::shared_ptr<const std::function<void(const Refusal&)>> refusal_observer_;
};

/// How `install_client_verification` treats peers.
struct ClientVerificationOptions {
    /// Refuse a handshake without a client certificate (`certificate_required` in TLS 1.3);
    /// false lets shared-secret devices use the same listener.
    bool require_certificate = true;
    /// Called on the handshake's thread for every refused certificate; keep it cheap. Exceptions
    /// it throws are dropped (the refusal stands).
    std::function<void(const Refusal&)> on_refusal{};
    /// The verification clock; null means `std::chrono::system_clock::now`.
    std::function<std::chrono::system_clock::time_point()> clock{};
};

/// Makes `ctx` verify client certificates against `current_snapshot()` (read once per handshake):
/// `SSL_VERIFY_PEER` (plus `SSL_VERIFY_FAIL_IF_NO_PEER_CERT` when required), a certificate
/// verification callback that sets the `X509_V_ERR_*` matching each refusal so OpenSSL sends the
/// right alert, and no renegotiation. Tickets stay off until `net::enable_session_tickets`; a
/// resumed session's certificate is re-verified against the current snapshot (a refusal falls
/// back to a full handshake), so every connection is checked against the snapshot in force. Call
/// before the context is shared; the settings live as long as `ctx`. Throws `std::bad_alloc` only.
void install_client_verification(
    SSL_CTX* ctx, std::function<std::shared_ptr<const TrustSnapshot>()> current_snapshot,
    ClientVerificationOptions options = {});

/// The verification result stored on `ssl` during its handshake (success or refusal); nullopt
/// when no client certificate was verified.
std::optional<VerifyResult> verification_result(const SSL* ssl);

/// Like `verification_result`, but moves the result out and frees it from `ssl`: the stored
/// copy (leaf facts, DER, names: about 1.4 KiB) would otherwise live as long as the connection.
/// Later calls return nullopt.
std::optional<VerifyResult> take_verification_result(SSL* ssl);

}  // namespace otahub::pki
