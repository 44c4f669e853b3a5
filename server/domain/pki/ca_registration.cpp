#include "server/domain/pki/ca_registration.hpp"

#include <openssl/crypto.h>

namespace otahub::pki {
namespace {

constexpr std::string_view kCertField = "cert";
constexpr std::string_view kVerificationField = "verification_cert";

CaRegistrationResult refuse(CaRegistrationError reason, std::string_view field,
                            std::string_view message) {
    CaRegistrationResult result;
    result.failure = CaRegistrationFailure{reason, std::string(field), std::string(message)};
    return result;
}

bool same_token(std::string_view presented, std::string_view expected) {
    if (expected.empty() || presented.size() != expected.size()) {
        return false;
    }
    return CRYPTO_memcmp(presented.data(), expected.data(), expected.size()) == 0;
}

}  // namespace

CaRegistrationResult validate_ca_registration(std::string_view ca_pem,
                                              std::string_view verification_pem,
                                              std::string_view expected_token,
                                              std::chrono::system_clock::time_point now) {
    const OpensslErrorScope errors;
    auto ca = Certificate::parse(ca_pem);
    if (!ca) {
        return refuse(CaRegistrationError::kCaUnreadable, kCertField,
                      "is not a valid PEM certificate");
    }
    const CertificateFacts& ca_facts = ca->facts();
    if (!ca_facts.is_ca) {
        return refuse(CaRegistrationError::kNotCa, kCertField,
                      "is not a CA certificate (basicConstraints CA:TRUE is required)");
    }
    if (ca_facts.ski.empty()) {
        return refuse(CaRegistrationError::kNoSubjectKeyIdentifier, kCertField,
                      "has no Subject Key Identifier extension");
    }
    if (ca_facts.not_after < now) {
        return refuse(CaRegistrationError::kCaExpired, kCertField, "has expired");
    }

    auto verification = Certificate::parse(verification_pem);
    if (!verification) {
        return refuse(CaRegistrationError::kVerificationUnreadable, kVerificationField,
                      "is not a valid PEM certificate");
    }
    if (verification->facts().not_after < now) {
        return refuse(CaRegistrationError::kVerificationExpired, kVerificationField, "has expired");
    }
    EVP_PKEY* ca_key = X509_get0_pubkey(ca->get());
    const bool issued_by_ca = X509_NAME_cmp(X509_get_issuer_name(verification->get()),
                                            X509_get_subject_name(ca->get())) == 0;
    const bool signed_by_ca = ca_key != nullptr && X509_verify(verification->get(), ca_key) == 1;
    if (!issued_by_ca || !signed_by_ca) {
        return refuse(CaRegistrationError::kVerificationNotSignedByCa, kVerificationField,
                      "is not signed by the CA certificate");
    }

    const CertificateFacts& verification_facts = verification->facts();
    bool token_present = false;
    std::optional<TokenForm> form;
    for (const std::string& uri : verification_facts.san_uris) {
        if (uri.starts_with(kVerifyUriPrefix)) {
            token_present = true;
            if (same_token(std::string_view(uri).substr(kVerifyUriPrefix.size()), expected_token)) {
                form = TokenForm::kSanUri;
            }
        }
    }
    if (!form && !verification_facts.common_name.empty()) {
        token_present = true;
        if (same_token(verification_facts.common_name, expected_token)) {
            form = TokenForm::kCommonName;
        }
    }
    if (!token_present) {
        return refuse(CaRegistrationError::kTokenMissing, kVerificationField,
                      "carries no verification token (SAN URI urn:nerveshub:verify:<token> "
                      "or subject CN)");
    }
    if (!form) {
        return refuse(CaRegistrationError::kTokenMismatch, kVerificationField,
                      "does not carry the expected verification token");
    }

    CaRegistrationResult result;
    result.ca = std::move(ca);
    result.token_form = form;
    return result;
}

ApiError to_api_error(const CaRegistrationFailure& failure) {
    return ApiError{ErrorCode::kUnprocessable, failure.field + " " + failure.message,
                    nlohmann::json{{failure.field, nlohmann::json::array({failure.message})}}};
}

std::string_view to_string(CaRegistrationError reason) {
    switch (reason) {
        case CaRegistrationError::kCaUnreadable:
            return "ca_unreadable";
        case CaRegistrationError::kNotCa:
            return "not_ca";
        case CaRegistrationError::kNoSubjectKeyIdentifier:
            return "no_subject_key_identifier";
        case CaRegistrationError::kCaExpired:
            return "ca_expired";
        case CaRegistrationError::kVerificationUnreadable:
            return "verification_unreadable";
        case CaRegistrationError::kVerificationExpired:
            return "verification_expired";
        case CaRegistrationError::kVerificationNotSignedByCa:
            return "verification_not_signed_by_ca";
        case CaRegistrationError::kTokenMissing:
            return "token_missing";
        case CaRegistrationError::kTokenMismatch:
            return "token_mismatch";
    }
    return "unknown";
}

}  // namespace otahub::pki
