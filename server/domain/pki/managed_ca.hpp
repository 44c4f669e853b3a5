#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/domain/pki/certificate.hpp"
#include "server/domain/pki/pki_error.hpp"

// The hub as its fleet's certificate authority: generating CAs, signing device CSRs, issuing
// device certificates and CRLs, and keeping CA keys encrypted at rest. Refused input throws
// `PkiError` (a 422 `ApiError` with a `reason()`); OpenSSL failures that no input explains
// (allocation, RNG) throw `std::runtime_error`. Every function is thread-safe.
namespace otahub::pki {

/// Default lifetime of a device certificate the hub issues (capped at the CA's own notAfter).
inline constexpr std::chrono::seconds kDefaultDeviceCertValidity = std::chrono::days{3650};
/// How far back issued certificates' notBefore is set, for hub nodes with slightly slow clocks.
inline constexpr std::chrono::seconds kNotBeforeBackdate = std::chrono::hours{1};
/// Largest CSR input `sign_csr` looks at; anything bigger is refused unread.
inline constexpr std::size_t kMaxCsrInputBytes = 64 * 1024;
/// Longest device identifier, in characters (X.520 ub-common-name).
inline constexpr std::size_t kMaxIdentifierLength = 64;
/// Prefix of the current encrypted-private-key format: `v1:` + base64(nonce‖ciphertext‖tag).
inline constexpr std::string_view kEncryptedKeyPrefix = "v1:";

/// A certificate with its private key as unencrypted PKCS#8 PEM (a CA, or a device in the dev
/// workflow).
struct CertifiedKey {
    /// The certificate.
    Certificate certificate;
    /// Its private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    std::string private_key_pem{};
};

/// A fresh ECDSA P-256 CA named `common_name`, valid from `now` (less `kNotBeforeBackdate`) for
/// `validity`: a self-signed root, or an intermediate (pathlen 0) signed by `parent`, whose
/// validity then ends no later than the parent's. basicConstraints CA:TRUE and keyUsage
/// keyCertSign+cRLSign, both critical; SKI; AKI; random positive 128-bit serial.
CertifiedKey generate_ca(std::string_view common_name, std::chrono::seconds validity,
                         std::chrono::system_clock::time_point now,
                         const CertifiedKey* parent = nullptr);

/// Signs a device CSR (PEM, DER or base64 of either) with the CA: the CSR's self-signature must
/// verify and its key be P-256, P-384, Ed25519 or RSA ≥ 2048 bits. The certificate's subject is
/// just CN=`device_identifier` (the CSR's subject and extensions are ignored); it carries
/// basicConstraints CA:FALSE and keyUsage digitalSignature (both critical), EKU clientAuth,
/// SKI of the key, AKI = the CA's SKI and a random serial; it is valid for `validity` (default
/// `kDefaultDeviceCertValidity`) from `now`, capped at the CA's notAfter.
Certificate sign_csr(const CertifiedKey& ca, std::string_view csr,
                     std::string_view device_identifier,
                     std::optional<std::chrono::seconds> validity,
                     std::chrono::system_clock::time_point now);

/// Like `sign_csr` for a key the hub generates itself (P-256): the dev workflow, where the
/// device receives its key and certificate ready-made.
CertifiedKey create_device_certificate(const CertifiedKey& ca, std::string_view device_identifier,
                                       std::optional<std::chrono::seconds> validity,
                                       std::chrono::system_clock::time_point now);

/// Whether a certificate should be renewed at `now`: it expires within `window`, or already has
/// (then whatever the window).
bool needs_renewal(const CertificateFacts& facts, std::chrono::seconds window,
                   std::chrono::system_clock::time_point now);

/// Encrypts a private key (any text) for storage with AES-256-GCM under a key derived by
/// HKDF-SHA256 from `secret` (`OTAHUB_SECRET_KEY`); random 96-bit nonce; returns
/// `v1:` + base64(nonce‖ciphertext‖tag). Throws `std::invalid_argument` for an empty secret.
std::string encrypt_private_key(std::string_view key_pem, std::string_view secret);

/// Reverses `encrypt_private_key`; throws `KeyDecryptionError` for a wrong secret, a tampered,
/// truncated or malformed blob, or an unknown version. Never returns garbage.
std::string decrypt_private_key(std::string_view blob, std::string_view secret);

/// One certificate a managed CA revokes.
struct RevokedCertificate {
    /// Serial in decimal, as stored.
    std::string serial{};
    /// When it was revoked.
    std::chrono::system_clock::time_point revoked_at{};
};

/// A CRL as issued.
struct IssuedCrl {
    /// The CRL in DER.
    std::vector<std::uint8_t> der{};
    /// The CRL as PEM (`-----BEGIN X509 CRL-----`).
    std::string pem{};
    /// Its CRL number.
    std::uint64_t number = 0;
};

/// Issues a v2 CRL signed by the CA listing `revoked` (duplicates by serial dropped), with AKI and
/// a CRL number: `crl_number`, or by default the Unix time of `this_update` in seconds (so
/// numbers grow with time without a stored counter). `next_update` must be after `this_update`.
IssuedCrl issue_crl(const CertifiedKey& ca, const std::vector<RevokedCertificate>& revoked,
                    std::chrono::system_clock::time_point this_update,
                    std::chrono::system_clock::time_point next_update,
                    std::optional<std::uint64_t> crl_number = std::nullopt);

}  // namespace otahub::pki
