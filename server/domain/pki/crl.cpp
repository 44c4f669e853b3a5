#include "server/domain/pki/crl.hpp"

#include <openssl/pem.h>

#include <utility>

#include "server/domain/pki/asn1_support.hpp"

namespace otahub::pki {
namespace {

using Clock = std::chrono::system_clock;
using IssuingDistPointPtr =
    std::unique_ptr<ISSUING_DIST_POINT,
                    OpensslDeleter<ISSUING_DIST_POINT, ISSUING_DIST_POINT_free>>;

constexpr std::string_view kCrlField = "crl";

[[noreturn]] void refuse(PkiErrorReason reason, std::string_view message) {
    throw PkiError(reason, std::string(kCrlField), std::string(message));
}

X509CrlPtr parse_crl(std::string_view input) {
    const auto unwrapped = detail::unwrap_encoding(input, kMaxCrlInputBytes);
    if (!unwrapped) {
        return nullptr;
    }
    const std::string& bytes = unwrapped->bytes;
    if (unwrapped->pem) {
        BioPtr bio{BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size()))};
        return X509CrlPtr{
            bio ? PEM_read_bio_X509_CRL(bio.get(), nullptr, detail::refuse_password, nullptr)
                : nullptr};
    }
    const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
    const unsigned char* cursor = data;
    X509CrlPtr crl{d2i_X509_CRL(nullptr, &cursor, static_cast<long>(bytes.size()))};
    if (!crl || cursor != data + bytes.size()) {
        return nullptr;  // trailing bytes: not one DER CRL
    }
    return crl;
}

// Refuses CRLs that do not list every revoked certificate of the CA, which replacing the CA's
// revocations with them would silently un-revoke.
void check_crl_extensions(X509_CRL* crl) {
    for (int i = 0; i < X509_CRL_get_ext_count(crl); ++i) {
        X509_EXTENSION* extension = X509_CRL_get_ext(crl, i);
        switch (OBJ_obj2nid(X509_EXTENSION_get_object(extension))) {
            case NID_delta_crl:
                refuse(PkiErrorReason::kCrlUnsupported, "is a delta CRL (a full CRL is needed)");
            case NID_issuing_distribution_point: {
                const IssuingDistPointPtr point{
                    static_cast<ISSUING_DIST_POINT*>(X509V3_EXT_d2i(extension))};
                if (!point) {
                    refuse(PkiErrorReason::kCrlUnreadable,
                           "has a malformed issuingDistributionPoint extension");
                }
                if (point->indirectCRL != 0 || point->onlysomereasons != nullptr ||
                    point->onlyattr != 0) {
                    refuse(PkiErrorReason::kCrlUnsupported,
                           "is an indirect or partial CRL (a full CRL of the CA is needed)");
                }
                break;
            }
            case NID_authority_key_identifier:
            case NID_crl_number:
            case NID_issuer_alt_name:
            case NID_freshest_crl:
            case NID_info_access:
                break;
            default:
                if (X509_EXTENSION_get_critical(extension) != 0) {
                    refuse(PkiErrorReason::kCrlUnsupported,
                           "has an unsupported critical extension");
                }
        }
    }
}

void check_entry_extensions(const X509_REVOKED* entry) {
    for (int i = 0; i < X509_REVOKED_get_ext_count(entry); ++i) {
        X509_EXTENSION* extension = X509_REVOKED_get_ext(entry, i);
        const int nid = OBJ_obj2nid(X509_EXTENSION_get_object(extension));
        if (nid == NID_certificate_issuer) {
            refuse(PkiErrorReason::kCrlUnsupported,
                   "lists certificates of another issuer (indirect CRL)");
        }
        if (nid != NID_crl_reason && nid != NID_invalidity_date &&
            X509_EXTENSION_get_critical(extension) != 0) {
            refuse(PkiErrorReason::kCrlUnsupported,
                   "has an entry with an unsupported critical extension");
        }
    }
}

}  // namespace

ImportedCrl import_crl(std::string_view input, const Certificate& ca, Clock::time_point now) {
    const OpensslErrorScope errors;
    const X509CrlPtr crl = parse_crl(input);
    if (!crl) {
        refuse(PkiErrorReason::kCrlUnreadable, "is not a PEM or DER certificate revocation list");
    }
    X509* ca_cert = ca.get();
    if (ca.facts().ski.empty()) {
        refuse(PkiErrorReason::kCaUnusable, "belongs to a CA without a Subject Key Identifier");
    }
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl.get()), X509_get_subject_name(ca_cert)) != 0) {
        refuse(PkiErrorReason::kCrlIssuerMismatch,
               "is not issued by this CA (issuer name differs from the CA's subject)");
    }
    if ((X509_get_key_usage(ca_cert) & KU_CRL_SIGN) == 0) {
        refuse(PkiErrorReason::kCaUnusable,
               "cannot be signed by this CA (its keyUsage lacks cRLSign)");
    }
    EVP_PKEY* ca_key = X509_get0_pubkey(ca_cert);
    if (ca_key == nullptr || X509_CRL_verify(crl.get(), ca_key) != 1) {
        refuse(PkiErrorReason::kCrlBadSignature, "is not signed by this CA's key");
    }
    check_crl_extensions(crl.get());

    ImportedCrl imported;
    imported.issuer_ski = ca.facts().ski;
    const auto this_update = detail::to_time_point(X509_CRL_get0_lastUpdate(crl.get()));
    if (!this_update) {
        refuse(PkiErrorReason::kCrlUnreadable, "has a malformed thisUpdate");
    }
    imported.this_update = *this_update;
    if (const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl.get()); next != nullptr) {
        imported.next_update = detail::to_time_point(next);
        if (!imported.next_update) {
            refuse(PkiErrorReason::kCrlUnreadable, "has a malformed nextUpdate");
        }
    }
    if (imported.this_update > now + kCrlClockSkew) {
        refuse(PkiErrorReason::kCrlNotYetValid, "is not valid yet (thisUpdate is in the future)");
    }
    if (imported.next_update && *imported.next_update < now) {
        refuse(PkiErrorReason::kCrlExpired, "has expired (nextUpdate is in the past)");
    }

    int critical = 0;
    const Asn1IntegerPtr number{static_cast<ASN1_INTEGER*>(
        X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, &critical, nullptr))};
    if (number) {
        imported.number = detail::to_decimal(number.get());
    }
    if ((!number && critical != -1) || (number && !imported.number)) {
        refuse(PkiErrorReason::kCrlUnreadable, "has a malformed or repeated cRLNumber");
    }

    STACK_OF(X509_REVOKED)* entries = X509_CRL_get_REVOKED(crl.get());
    const int count = entries == nullptr ? 0 : sk_X509_REVOKED_num(entries);
    imported.revoked.reserve(static_cast<std::size_t>(count));
    for (int i = 0; i < count; ++i) {
        const X509_REVOKED* entry = sk_X509_REVOKED_value(entries, i);
        check_entry_extensions(entry);
        auto serial = detail::to_decimal(X509_REVOKED_get0_serialNumber(entry));
        const auto revoked_at = detail::to_time_point(X509_REVOKED_get0_revocationDate(entry));
        if (!serial || !revoked_at) {
            refuse(PkiErrorReason::kCrlUnreadable, "has a malformed entry");
        }
        imported.revoked.push_back(CrlEntry{std::move(*serial), *revoked_at});
    }

    const int length = i2d_X509_CRL(crl.get(), nullptr);
    if (length <= 0) {
        refuse(PkiErrorReason::kCrlUnreadable, "cannot be re-encoded");
    }
    imported.der.resize(static_cast<std::size_t>(length));
    unsigned char* out = imported.der.data();
    if (i2d_X509_CRL(crl.get(), &out) != length) {
        refuse(PkiErrorReason::kCrlUnreadable, "cannot be re-encoded");
    }
    return imported;
}

std::vector<RevokedSerial> revoked_serials(const ImportedCrl& crl) {
    std::vector<RevokedSerial> serials;
    serials.reserve(crl.revoked.size());
    for (const CrlEntry& entry : crl.revoked) {
        serials.push_back(RevokedSerial{crl.issuer_ski, entry.serial});
    }
    return serials;
}

}  // namespace otahub::pki
