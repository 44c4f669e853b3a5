#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "server/domain/pki/openssl_ptr.hpp"

namespace otahub::pki {

/// Largest certificate input `Certificate::parse` looks at; anything bigger is refused unread.
inline constexpr std::size_t kMaxCertificateInputBytes = 256 * 1024;

/// What the hub stores and matches on about one X.509 certificate (NervesHub's columns and more).
struct CertificateFacts {
    /// Serial number in decimal, as NervesHub stores it.
    std::string serial{};
    /// Serial number in upper-case hex, whole bytes, no separators (as `openssl x509 -serial`).
    std::string serial_hex{};
    /// First subject commonName as UTF-8; empty when the subject has none.
    std::string common_name{};
    /// Subject as one RFC 2253 line (most specific RDN first), UTF-8.
    std::string subject{};
    /// Issuer as one RFC 2253 line, UTF-8.
    std::string issuer{};
    /// Subject Key Identifier in upper-case hex; empty when the extension is absent.
    std::string ski{};
    /// Authority Key Identifier keyIdentifier in upper-case hex; empty when absent.
    std::string aki{};
    /// Start of validity, clamped to the clock's range.
    std::chrono::system_clock::time_point not_before{};
    /// End of validity, clamped to the clock's range (9999-12-31 becomes the clock's maximum).
    std::chrono::system_clock::time_point not_after{};
    /// Upper-case hex SHA-1 of the certificate DER (NervesHub `fingerprint`).
    std::string fingerprint{};
    /// Upper-case hex SHA-1 of the SubjectPublicKeyInfo DER (NervesHub `public_key_fingerprint`).
    std::string public_key_fingerprint{};
    /// Whether basicConstraints says CA:TRUE.
    bool is_ca = false;
    /// Whether the certificate carries an extendedKeyUsage extension.
    bool has_eku = false;
    /// Whether that extendedKeyUsage lists clientAuth.
    bool eku_client_auth = false;
    /// Whether that extendedKeyUsage lists serverAuth.
    bool eku_server_auth = false;
    /// subjectAltName URIs, in certificate order.
    std::vector<std::string> san_uris{};
    /// subjectAltName DNS names, in certificate order.
    std::vector<std::string> san_dns{};
    /// The certificate in DER, exactly as received.
    std::vector<std::uint8_t> der{};

    /// Whether `now` lies within [not_before, not_after].
    bool valid_at(std::chrono::system_clock::time_point now) const {
        return not_before <= now && now <= not_after;
    }
};

/// Facts of `cert`, or nullopt when the certificate cannot be described (malformed extensions
/// or times). Never throws on malformed input.
std::optional<CertificateFacts> read_certificate_facts(X509* cert);

/// An owned, parsed X.509 certificate with its facts computed once; immutable, so copies and
/// concurrent readers are safe.
class Certificate {
  public:
    /// Takes ownership of `cert`; nullopt when it is null or its facts cannot be read.
    static std::optional<Certificate> from_x509(X509Ptr cert);
    /// Parses a PEM, DER, or base64 of either (the API's `{"cert": base64(PEM)}`); the first
    /// certificate of a PEM bundle; nullopt for anything else.
    static std::optional<Certificate> parse(std::string_view input);
    /// Parses the first `CERTIFICATE` block of PEM text.
    static std::optional<Certificate> from_pem(std::string_view pem);
    /// Parses exactly one DER certificate (trailing bytes are refused).
    static std::optional<Certificate> from_der(std::span<const std::uint8_t> der);

    Certificate(const Certificate& other);
    Certificate& operator=(const Certificate& other);
    Certificate(Certificate&&) noexcept = default;
    Certificate& operator=(Certificate&&) noexcept = default;
    ~Certificate() = default;

    /// The OpenSSL object, still owned by this Certificate.
    X509* get() const { return cert_.get(); }
    /// The facts computed at parse time.
    const CertificateFacts& facts() const { return facts_; }
    /// The certificate as PEM text.
    std::string pem() const;

  private:
    Certificate(X509Ptr cert, CertificateFacts facts);

    X509Ptr cert_;
    CertificateFacts facts_;
};

/// Every certificate of a PEM bundle (leaf first, as written); empty when any block fails to parse
/// or there is none.
std::vector<Certificate> parse_certificate_chain(std::string_view pem);

/// Upper-case hex of `bytes`, no separators.
std::string to_hex_upper(std::span<const std::uint8_t> bytes);

/// Decodes standard base64, ignoring ASCII whitespace; nullopt on any other invalid input.
std::optional<std::vector<std::uint8_t>> decode_base64(std::string_view text);

}  // namespace otahub::pki
