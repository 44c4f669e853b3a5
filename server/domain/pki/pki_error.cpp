#include "server/domain/pki/pki_error.hpp"

#include <utility>

namespace otahub::pki {

std::string_view to_string(PkiErrorReason reason) {
    switch (reason) {
        case PkiErrorReason::kCsrUnreadable:
            return "csr_unreadable";
        case PkiErrorReason::kCsrBadSignature:
            return "csr_bad_signature";
        case PkiErrorReason::kCsrWeakKey:
            return "csr_weak_key";
        case PkiErrorReason::kCsrUnsupportedKey:
            return "csr_unsupported_key";
        case PkiErrorReason::kInvalidIdentifier:
            return "invalid_identifier";
        case PkiErrorReason::kInvalidValidity:
            return "invalid_validity";
        case PkiErrorReason::kInvalidSerial:
            return "invalid_serial";
        case PkiErrorReason::kCaKeyUnreadable:
            return "ca_key_unreadable";
        case PkiErrorReason::kCaKeyMismatch:
            return "ca_key_mismatch";
        case PkiErrorReason::kCaUnusable:
            return "ca_unusable";
        case PkiErrorReason::kCaExpired:
            return "ca_expired";
        case PkiErrorReason::kCrlUnreadable:
            return "crl_unreadable";
        case PkiErrorReason::kCrlIssuerMismatch:
            return "crl_issuer_mismatch";
        case PkiErrorReason::kCrlBadSignature:
            return "crl_bad_signature";
        case PkiErrorReason::kCrlExpired:
            return "crl_expired";
        case PkiErrorReason::kCrlNotYetValid:
            return "crl_not_yet_valid";
        case PkiErrorReason::kCrlUnsupported:
            return "crl_unsupported";
    }
    return "unknown";
}

PkiError::PkiError(PkiErrorReason reason, std::string field, std::string message)
    : ApiError(ErrorCode::kUnprocessable, field + " " + message,
               nlohmann::json{{field, nlohmann::json::array({message})}}),
      reason_(reason),
      field_(std::move(field)) {}

}  // namespace otahub::pki
