#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "server/domain/pki/openssl_ptr.hpp"

// Small helpers shared by the CA and CRL code of this directory; not a public API.
namespace otahub::pki::detail {

/// A PEM password callback that refuses, so a crafted encrypted-PEM header never prompts.
int refuse_password(char* buf, int size, int rwflag, void* userdata);

/// The time an `ASN1_TIME` names, clamped to the clock's range; nullopt when malformed.
std::optional<std::chrono::system_clock::time_point> to_time_point(const ASN1_TIME* time);

/// `time + offset` as an `ASN1_TIME` (UTCTime until 2049, GeneralizedTime after, as RFC 5280
/// wants); null when out of range.
Asn1TimePtr to_asn1_time(std::chrono::system_clock::time_point time,
                         std::chrono::seconds offset = std::chrono::seconds{0});

/// An ASN.1 INTEGER in decimal (as the hub stores serials); nullopt on failure.
std::optional<std::string> to_decimal(const ASN1_INTEGER* value);

/// A decimal string (digits only, at most 20 octets once encoded) as an ASN.1 INTEGER; null for
/// anything else.
Asn1IntegerPtr parse_decimal_serial(std::string_view decimal);

/// A fresh random positive serial of at most 128 bits (16 octets in DER: the top bit is clear).
Asn1IntegerPtr random_serial();

/// The digest to sign with `key`: SHA-384 for P-384, none for Ed25519/Ed448, else SHA-256.
const EVP_MD* signing_digest(EVP_PKEY* key);

/// Input as a caller sent it, brought to one of PEM text or DER bytes.
struct Unwrapped {
    /// Whether `bytes` is PEM text (else DER).
    bool pem = false;
    /// The PEM text or DER bytes.
    std::string bytes{};
};

/// Accepts PEM, DER or base64 of either (surrounding whitespace ignored); nullopt for anything
/// else, or when longer than `max_bytes`.
std::optional<Unwrapped> unwrap_encoding(std::string_view input, std::size_t max_bytes);

}  // namespace otahub::pki::detail
