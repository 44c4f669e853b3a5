#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/domain/pki/certificate.hpp"
#include "server/domain/pki/openssl_ptr.hpp"
#include "server/domain/pki/pki_error.hpp"
#include "server/domain/pki/trust_store.hpp"

namespace otahub::pki {

/// Owned `X509_CRL`.
using X509CrlPtr = std::unique_ptr<X509_CRL, OpensslDeleter<X509_CRL, X509_CRL_free>>;

/// Largest CRL input `import_crl` looks at; anything bigger is refused unread.
inline constexpr std::size_t kMaxCrlInputBytes = 8 * 1024 * 1024;
/// How far in the future a CRL's thisUpdate may lie (clock skew between its issuer and us).
inline constexpr std::chrono::seconds kCrlClockSkew = std::chrono::minutes{5};

/// One revoked certificate listed by a CRL.
struct CrlEntry {
    /// Serial in decimal, as the hub stores serials.
    std::string serial{};
    /// The CRL's revocationDate for it.
    std::chrono::system_clock::time_point revoked_at{};
};

/// What an imported CRL says, once verified against its CA.
struct ImportedCrl {
    /// The CA's Subject Key Identifier (upper-case hex): the issuer of every listed serial.
    std::string issuer_ski{};
    /// The cRLNumber in decimal; nullopt when the CRL has none.
    std::optional<std::string> number{};
    /// thisUpdate.
    std::chrono::system_clock::time_point this_update{};
    /// nextUpdate; nullopt when the CRL has none.
    std::optional<std::chrono::system_clock::time_point> next_update{};
    /// The revoked certificates, in CRL order.
    std::vector<CrlEntry> revoked{};
    /// The CRL in DER.
    std::vector<std::uint8_t> der{};
};

/// Imports a CRL (PEM, DER, or base64 of either) published by the custom CA `ca`, which needs a
/// Subject Key Identifier: the CRL's issuer name must be the CA's subject, its signature must
/// verify with the CA's key (whose keyUsage, if any, must allow cRLSign; the CRL's AKI is not
/// compared, the signature decides), its nextUpdate must not be
/// before `now` and its thisUpdate not after `now + kCrlClockSkew`. Delta CRLs, indirect CRLs,
/// CRLs limited to some reasons and unknown critical extensions are refused. Throws `PkiError`
/// (field `crl`) on refusal. Whether the CRL is newer than one already held (compare `number`
/// and `this_update`) is the caller's business.
ImportedCrl import_crl(std::string_view crl, const Certificate& ca,
                       std::chrono::system_clock::time_point now);

/// The CRL's entries as trust-snapshot input (`TrustInputs::revoked_serials`).
std::vector<RevokedSerial> revoked_serials(const ImportedCrl& crl);

}  // namespace otahub::pki
