#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "server/common/api_error.hpp"
#include "server/domain/pki/certificate.hpp"

namespace otahub::pki {

/// The SAN URI prefix of a NervesHub verification certificate: `urn:nerveshub:verify:<token>`.
inline constexpr std::string_view kVerifyUriPrefix = "urn:nerveshub:verify:";

/// Why a CA registration was refused; every one is a 422 for the API.
enum class CaRegistrationError {
    kCaUnreadable,            ///< `cert` is not a PEM (or DER) certificate
    kNotCa,                   ///< basicConstraints CA:TRUE missing
    kNoSubjectKeyIdentifier,  ///< device certificates are matched by AKI → SKI, so it is needed
    kCaExpired,               ///< the CA's notAfter is in the past
    kVerificationUnreadable,  ///< `verification_cert` is not a certificate
    kVerificationExpired,     ///< the verification certificate's notAfter is in the past
    kVerificationNotSignedByCa,  ///< issuer name differs or the CA's key did not sign it
    kTokenMissing,               ///< neither a verify SAN URI nor a subject CN
    kTokenMismatch,              ///< a token is there but it is not the expected one
};

/// Which form the proof-of-possession token took in the verification certificate.
enum class TokenForm {
    kSanUri,      ///< SAN `URI:urn:nerveshub:verify:<token>` (NervesHub)
    kCommonName,  ///< subject CN = token (AWS IoT style, and NervesHub's older CSR flow)
};

/// A refused registration: the reason, the request field at fault and a message for the client.
struct CaRegistrationFailure {
    /// What was wrong.
    CaRegistrationError reason{};
    /// The JSON field it concerns: `cert` or `verification_cert`.
    std::string field{};
    /// A short client-facing message ("is not a CA certificate").
    std::string message{};
};

/// The outcome of `validate_ca_registration`: exactly one of `ca` and `failure` is set.
struct CaRegistrationResult {
    /// The validated CA, with its facts (serial, SKI, AKI, validity, DER) to store.
    std::optional<Certificate> ca{};
    /// How the token was proven, on success.
    std::optional<TokenForm> token_form{};
    /// The refusal, on failure.
    std::optional<CaRegistrationFailure> failure{};

    /// Whether the registration is valid.
    bool ok() const { return ca.has_value(); }
};

/// Validates a CA registration with proof of possession: `ca_pem` must be a CA certificate with a
/// Subject Key Identifier, not expired at `now`; `verification_pem` must be issued and signed by
/// that CA and carry `expected_token` as SAN URI `urn:nerveshub:verify:<token>` or as subject CN.
/// Both certificates may be PEM or base64 of PEM (or DER). The token's own validity is the
/// caller's business; an empty `expected_token` never matches. Never throws on bad input.
CaRegistrationResult validate_ca_registration(std::string_view ca_pem,
                                              std::string_view verification_pem,
                                              std::string_view expected_token,
                                              std::chrono::system_clock::time_point now);

/// The 422 `ApiError` for a refused registration (`{"errors": {"<field>": ["<message>"]}}`).
ApiError to_api_error(const CaRegistrationFailure& failure);

/// A stable snake_case name for a reason (for logs and metrics).
std::string_view to_string(CaRegistrationError reason);

}  // namespace otahub::pki
