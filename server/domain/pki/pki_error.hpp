#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "server/common/api_error.hpp"

namespace otahub::pki {

/// Why a CA operation (CSR signing, certificate or CRL issuing, CRL import) refused its input.
enum class PkiErrorReason {
    kCsrUnreadable,      ///< not a PEM, DER or base64 certificate signing request
    kCsrBadSignature,    ///< the CSR's self-signature does not verify with its own key
    kCsrWeakKey,         ///< an RSA key below 2048 bits
    kCsrUnsupportedKey,  ///< a key that is not P-256, P-384, Ed25519 or RSA, or is malformed
    kInvalidIdentifier,  ///< the device identifier cannot be a subject CN (empty, > 64, control)
    kInvalidValidity,    ///< a validity that is not positive, or an empty CRL period
    kInvalidSerial,      ///< a serial that is not a decimal number of at most 20 octets
    kCaKeyUnreadable,    ///< the CA private key is not an unencrypted PEM private key
    kCaKeyMismatch,      ///< the CA private key does not belong to the CA certificate
    kCaUnusable,         ///< not a CA, no Subject Key Identifier, or keyUsage forbids the use
    kCaExpired,          ///< the CA's notAfter is not after `now`
    kCrlUnreadable,      ///< not a PEM, DER or base64 CRL, or malformed extensions
    kCrlIssuerMismatch,  ///< the CRL's issuer name differs from the CA's subject
    kCrlBadSignature,    ///< the CA's key did not sign the CRL
    kCrlExpired,         ///< the CRL's nextUpdate is in the past
    kCrlNotYetValid,     ///< the CRL's thisUpdate is in the future
    kCrlUnsupported,     ///< delta, indirect or partial CRLs, or unknown critical extensions
};

/// A stable snake_case name for a reason (for logs, metrics and tests).
std::string_view to_string(PkiErrorReason reason);

/// A refused PKI input; an `ApiError` with status 422 and `{"<field>": ["<message>"]}`, so a
/// handler may let it propagate. `reason()` says exactly what was wrong.
class PkiError : public ApiError {
  public:
    /// An error about request field `field` (e.g. `csr`, `identifier`, `crl`, `ca`).
    PkiError(PkiErrorReason reason, std::string field, std::string message);

    /// What was wrong.
    PkiErrorReason reason() const { return reason_; }
    /// The request field it concerns.
    const std::string& field() const { return field_; }

  private:
    PkiErrorReason reason_;
    std::string field_;
};

/// An encrypted private key that does not open: wrong secret, tampered or truncated blob, or an
/// unknown format. Deliberately not an `ApiError`: it is a server-side fault (a 500 that leaks
/// nothing), never a client's.
class KeyDecryptionError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

}  // namespace otahub::pki
