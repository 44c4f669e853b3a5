#include "server/domain/pki/managed_ca.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <array>
#include <ctime>
#include <set>
#include <stdexcept>
#include <utility>

#include "server/domain/crypto.hpp"
#include "server/domain/pki/asn1_support.hpp"
#include "server/domain/pki/crl.hpp"
#include "server/domain/pki/ec_keys.hpp"

namespace otahub::pki {
namespace {

using Clock = std::chrono::system_clock;

using EvpPkeyCtxPtr =
    std::unique_ptr<EVP_PKEY_CTX, OpensslDeleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using EvpCipherCtxPtr =
    std::unique_ptr<EVP_CIPHER_CTX, OpensslDeleter<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;
using EvpKdfPtr = std::unique_ptr<EVP_KDF, OpensslDeleter<EVP_KDF, EVP_KDF_free>>;
using EvpKdfCtxPtr = std::unique_ptr<EVP_KDF_CTX, OpensslDeleter<EVP_KDF_CTX, EVP_KDF_CTX_free>>;
using Asn1OctetStringPtr =
    std::unique_ptr<ASN1_OCTET_STRING, OpensslDeleter<ASN1_OCTET_STRING, ASN1_OCTET_STRING_free>>;
using Asn1BitStringPtr =
    std::unique_ptr<ASN1_BIT_STRING, OpensslDeleter<ASN1_BIT_STRING, ASN1_BIT_STRING_free>>;
using ExtendedKeyUsagePtr =
    std::unique_ptr<EXTENDED_KEY_USAGE,
                    OpensslDeleter<EXTENDED_KEY_USAGE, EXTENDED_KEY_USAGE_free>>;
using AuthorityKeyIdPtr =
    std::unique_ptr<AUTHORITY_KEYID, OpensslDeleter<AUTHORITY_KEYID, AUTHORITY_KEYID_free>>;
using X509RevokedPtr =
    std::unique_ptr<X509_REVOKED, OpensslDeleter<X509_REVOKED, X509_REVOKED_free>>;

constexpr std::string_view kCaField = "ca";
constexpr std::string_view kCsrField = "csr";
constexpr std::string_view kIdentifierField = "identifier";
constexpr std::string_view kValidityField = "validity";

// keyUsage bits by their position in the BIT STRING (RFC 5280 §4.2.1.3).
constexpr unsigned kDigitalSignature = 1U << 0;
constexpr unsigned kKeyCertSign = 1U << 5;
constexpr unsigned kCrlSign = 1U << 6;
constexpr int kKeyUsageBits = 9;

constexpr int kMinRsaBits = 2048;
constexpr int kMaxRsaBits = 16384;
constexpr int kMinEcBits = 256;

constexpr std::size_t kAesKeyBytes = 32;
constexpr std::size_t kNonceBytes = 12;
constexpr std::size_t kTagBytes = 16;
constexpr std::size_t kMaxPlaintextBytes = 1024 * 1024;
// HKDF info: binds the derived key to this one use of OTAHUB_SECRET_KEY.
constexpr std::string_view kHkdfInfo = "otahub private-key encryption v1";
// Authenticated with every ciphertext, so a blob cannot be passed off as another version.
constexpr std::string_view kAssociatedData = "otahub:private-key:v1";

[[noreturn]] void openssl_failure(std::string_view what) {
    std::string message{"OpenSSL failure: "};
    message.append(what);
    if (const unsigned long error = ERR_peek_last_error(); error != 0) {
        std::array<char, 256> text{};
        ERR_error_string_n(error, text.data(), text.size());
        message.append(": ").append(text.data());
    }
    throw std::runtime_error(message);
}

void check(int ok, std::string_view what) {
    if (ok != 1) {
        openssl_failure(what);
    }
}

[[noreturn]] void refuse(PkiErrorReason reason, std::string_view field, std::string_view message) {
    throw PkiError(reason, std::string(field), std::string(message));
}

std::string key_pem(EVP_PKEY* key) {
    BioPtr bio{BIO_new(BIO_s_mem())};
    if (!bio) {
        openssl_failure("BIO_new");
    }
    check(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr),
          "PEM_write_bio_PrivateKey");
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio.get(), &data);
    std::string pem = length > 0 ? std::string(data, static_cast<std::size_t>(length)) : "";
    OPENSSL_cleanse(data, length > 0 ? static_cast<std::size_t>(length) : 0);
    return pem;
}

EvpPkeyPtr generate_p256_key() {
    EvpPkeyPtr key{generate_ec_key("P-256")};
    if (!key) {
        openssl_failure("generate_ec_key");
    }
    return key;
}

// The CA of an operation, checked: a CA certificate with an SKI, a keyUsage (if any) allowing
// `key_usage`, and the private key that goes with it.
struct Signer {
    X509* cert = nullptr;
    EvpPkeyPtr key;
};

Signer load_signer(const CertifiedKey& ca, std::uint32_t key_usage) {
    const CertificateFacts& facts = ca.certificate.facts();
    X509* cert = ca.certificate.get();
    if (!facts.is_ca) {
        refuse(PkiErrorReason::kCaUnusable, kCaField, "is not a CA certificate");
    }
    if (facts.ski.empty() || X509_get0_subject_key_id(cert) == nullptr) {
        refuse(PkiErrorReason::kCaUnusable, kCaField, "has no Subject Key Identifier");
    }
    if ((X509_get_key_usage(cert) & key_usage) != key_usage) {
        refuse(PkiErrorReason::kCaUnusable, kCaField,
               key_usage == KU_CRL_SIGN ? "may not sign CRLs (keyUsage lacks cRLSign)"
                                        : "may not sign certificates (keyUsage lacks keyCertSign)");
    }
    const std::string& pem = ca.private_key_pem;
    BioPtr bio{pem.empty() ? nullptr : BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
    EvpPkeyPtr key{
        bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, detail::refuse_password, nullptr)
            : nullptr};
    if (!key) {
        refuse(PkiErrorReason::kCaKeyUnreadable, kCaField,
               "private key is not an unencrypted PEM private key");
    }
    if (X509_check_private_key(cert, key.get()) != 1) {
        refuse(PkiErrorReason::kCaKeyMismatch, kCaField,
               "private key does not match the CA certificate");
    }
    return Signer{cert, std::move(key)};
}

void check_not_expired(const CertifiedKey& ca, Clock::time_point now) {
    if (ca.certificate.facts().not_after <= now) {
        refuse(PkiErrorReason::kCaExpired, kCaField, "has expired");
    }
}

// A subject of just CN=`common_name`; refuses what X.520 does not allow there.
X509NamePtr common_name_subject(std::string_view common_name, std::string_view field) {
    const bool printable = std::none_of(common_name.begin(), common_name.end(), [](char c) {
        const auto byte = static_cast<unsigned char>(c);
        return byte < 0x20 || byte == 0x7F;
    });
    // Byte bound first (a UTF-8 character is at most 4 bytes); OpenSSL counts characters.
    if (common_name.empty() || common_name.size() > kMaxIdentifierLength * 4 || !printable) {
        refuse(PkiErrorReason::kInvalidIdentifier, field, "must be 1 to 64 printable characters");
    }
    X509NamePtr name{X509_NAME_new()};
    if (!name) {
        openssl_failure("X509_NAME_new");
    }
    if (X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(common_name.data()),
                                   static_cast<int>(common_name.size()), -1, 0) != 1) {
        refuse(PkiErrorReason::kInvalidIdentifier, field,
               "must be 1 to 64 printable characters of valid UTF-8");
    }
    return name;
}

Asn1TimePtr not_before_for(Clock::time_point now) {
    Asn1TimePtr time = detail::to_asn1_time(now, -kNotBeforeBackdate);
    if (!time) {
        refuse(PkiErrorReason::kInvalidValidity, kValidityField, "starts at an unusable time");
    }
    return time;
}

// `now + validity`, but no later than `cap`'s notAfter when given.
Asn1TimePtr not_after_for(Clock::time_point now, std::chrono::seconds validity, X509* cap) {
    if (validity <= std::chrono::seconds::zero()) {
        refuse(PkiErrorReason::kInvalidValidity, kValidityField, "must be positive");
    }
    Asn1TimePtr time = detail::to_asn1_time(now, validity);
    if (!time) {
        refuse(PkiErrorReason::kInvalidValidity, kValidityField, "is too long");
    }
    if (cap != nullptr) {
        const ASN1_TIME* cap_time = X509_get0_notAfter(cap);
        if (ASN1_TIME_compare(time.get(), cap_time) > 0) {
            time.reset(ASN1_STRING_dup(cap_time));
            if (!time) {
                openssl_failure("ASN1_STRING_dup");
            }
        }
    }
    return time;
}

void add_extension(X509* cert, int nid, void* value, bool critical, std::string_view what) {
    check(X509_add1_ext_i2d(cert, nid, value, critical ? 1 : 0, X509V3_ADD_DEFAULT), what);
}

AuthorityKeyIdPtr authority_key_id(const ASN1_OCTET_STRING* issuer_ski) {
    AuthorityKeyIdPtr akid{AUTHORITY_KEYID_new()};
    if (!akid) {
        openssl_failure("AUTHORITY_KEYID_new");
    }
    akid->keyid = ASN1_OCTET_STRING_dup(issuer_ski);
    if (akid->keyid == nullptr) {
        openssl_failure("ASN1_OCTET_STRING_dup");
    }
    return akid;
}

// What differs between a CA and a device certificate.
struct Profile {
    bool ca = false;
    std::optional<long> path_len{};
    unsigned key_usage = 0;
    bool client_auth = false;
};

// Builds and signs a v3 certificate. `issuer` null makes it self-signed with `issuer_key`.
Certificate build_certificate(const X509_NAME* subject, EVP_PKEY* subject_key, X509* issuer,
                              EVP_PKEY* issuer_key, const ASN1_TIME* not_before,
                              const ASN1_TIME* not_after, const Profile& profile) {
    X509Ptr cert{X509_new()};
    if (!cert) {
        openssl_failure("X509_new");
    }
    check(X509_set_version(cert.get(), X509_VERSION_3), "X509_set_version");
    const Asn1IntegerPtr serial = detail::random_serial();
    if (!serial) {
        openssl_failure("random serial");
    }
    check(X509_set_serialNumber(cert.get(), serial.get()), "X509_set_serialNumber");
    check(X509_set_subject_name(cert.get(), subject), "X509_set_subject_name");
    check(X509_set_issuer_name(cert.get(),
                               issuer != nullptr ? X509_get_subject_name(issuer) : subject),
          "X509_set_issuer_name");
    check(X509_set1_notBefore(cert.get(), not_before), "X509_set1_notBefore");
    check(X509_set1_notAfter(cert.get(), not_after), "X509_set1_notAfter");
    check(X509_set_pubkey(cert.get(), subject_key), "X509_set_pubkey");

    BasicConstraintsPtr constraints{BASIC_CONSTRAINTS_new()};
    if (!constraints) {
        openssl_failure("BASIC_CONSTRAINTS_new");
    }
    constraints->ca = profile.ca ? 0xFF : 0;
    if (profile.path_len) {
        constraints->pathlen = ASN1_INTEGER_new();
        if (constraints->pathlen == nullptr ||
            ASN1_INTEGER_set(constraints->pathlen, *profile.path_len) != 1) {
            openssl_failure("pathlen");
        }
    }
    add_extension(cert.get(), NID_basic_constraints, constraints.get(), true, "basicConstraints");

    Asn1BitStringPtr usage{ASN1_BIT_STRING_new()};
    if (!usage) {
        openssl_failure("ASN1_BIT_STRING_new");
    }
    for (int bit = 0; bit < kKeyUsageBits; ++bit) {
        if ((profile.key_usage & (1U << bit)) != 0) {
            check(ASN1_BIT_STRING_set_bit(usage.get(), bit, 1), "ASN1_BIT_STRING_set_bit");
        }
    }
    add_extension(cert.get(), NID_key_usage, usage.get(), true, "keyUsage");

    if (profile.client_auth) {
        ExtendedKeyUsagePtr eku{sk_ASN1_OBJECT_new_null()};
        if (!eku || sk_ASN1_OBJECT_push(eku.get(), OBJ_nid2obj(NID_client_auth)) <= 0) {
            openssl_failure("extendedKeyUsage");
        }
        add_extension(cert.get(), NID_ext_key_usage, eku.get(), false, "extendedKeyUsage");
    }

    // SKI: SHA-1 of the subjectPublicKey BIT STRING (RFC 5280 §4.2.1.2, method 1).
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int digest_length = 0;
    check(X509_pubkey_digest(cert.get(), EVP_sha1(), digest.data(), &digest_length),
          "X509_pubkey_digest");
    Asn1OctetStringPtr ski{ASN1_OCTET_STRING_new()};
    if (!ski) {
        openssl_failure("ASN1_OCTET_STRING_new");
    }
    check(ASN1_OCTET_STRING_set(ski.get(), digest.data(), static_cast<int>(digest_length)),
          "ASN1_OCTET_STRING_set");
    add_extension(cert.get(), NID_subject_key_identifier, ski.get(), false, "subjectKeyIdentifier");

    const ASN1_OCTET_STRING* issuer_ski =
        issuer != nullptr ? X509_get0_subject_key_id(issuer) : ski.get();
    AuthorityKeyIdPtr akid = authority_key_id(issuer_ski);
    add_extension(cert.get(), NID_authority_key_identifier, akid.get(), false,
                  "authorityKeyIdentifier");

    const EvpPkeyPtr signing_key{key_for_signing(issuer_key)};
    if (!signing_key ||
        X509_sign(cert.get(), signing_key.get(), detail::signing_digest(issuer_key)) <= 0) {
        openssl_failure("X509_sign");
    }
    // Re-read from DER, so the facts describe exactly the bytes devices will see.
    const int length = i2d_X509(cert.get(), nullptr);
    if (length <= 0) {
        openssl_failure("i2d_X509");
    }
    std::vector<std::uint8_t> der(static_cast<std::size_t>(length));
    unsigned char* out = der.data();
    if (i2d_X509(cert.get(), &out) != length) {
        openssl_failure("i2d_X509");
    }
    auto parsed = Certificate::from_der(der);
    if (!parsed) {
        openssl_failure("re-reading the issued certificate");
    }
    return std::move(*parsed);
}

Certificate issue_device_certificate(const Signer& signer, std::string_view identifier,
                                     EVP_PKEY* device_key,
                                     std::optional<std::chrono::seconds> validity,
                                     Clock::time_point now) {
    const X509NamePtr subject = common_name_subject(identifier, kIdentifierField);
    const Asn1TimePtr not_before = not_before_for(now);
    const Asn1TimePtr not_after =
        not_after_for(now, validity.value_or(kDefaultDeviceCertValidity), signer.cert);
    const Profile profile{
        .ca = false, .path_len = std::nullopt, .key_usage = kDigitalSignature, .client_auth = true};
    return build_certificate(subject.get(), device_key, signer.cert, signer.key.get(),
                             not_before.get(), not_after.get(), profile);
}

X509ReqPtr parse_csr(std::string_view input) {
    const auto unwrapped = detail::unwrap_encoding(input, kMaxCsrInputBytes);
    if (!unwrapped) {
        return nullptr;
    }
    const std::string& bytes = unwrapped->bytes;
    if (unwrapped->pem) {
        BioPtr bio{BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size()))};
        return X509ReqPtr{
            bio ? PEM_read_bio_X509_REQ(bio.get(), nullptr, detail::refuse_password, nullptr)
                : nullptr};
    }
    const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
    const unsigned char* cursor = data;
    X509ReqPtr request{d2i_X509_REQ(nullptr, &cursor, static_cast<long>(bytes.size()))};
    if (!request || cursor != data + bytes.size()) {
        return nullptr;  // trailing bytes: not one DER request
    }
    return request;
}

std::optional<int> ec_curve_nid(EVP_PKEY* key) {
    std::array<char, 80> group{};
    std::size_t length = 0;
    if (EVP_PKEY_get_group_name(key, group.data(), group.size(), &length) != 1) {
        return std::nullopt;  // explicit curve parameters: refused
    }
    int nid = EC_curve_nist2nid(group.data());
    if (nid == NID_undef) {
        nid = OBJ_txt2nid(group.data());
    }
    return nid == NID_undef ? std::nullopt : std::optional<int>{nid};
}

void check_device_key(EVP_PKEY* key) {
    switch (EVP_PKEY_get_base_id(key)) {
        case EVP_PKEY_EC: {
            const auto nid = ec_curve_nid(key);
            if (nid == NID_X9_62_prime256v1 || nid == NID_secp384r1) {
                break;
            }
            if (EVP_PKEY_get_bits(key) < kMinEcBits) {
                refuse(PkiErrorReason::kCsrWeakKey, kCsrField,
                       "key is too weak (EC keys must be P-256 or P-384)");
            }
            refuse(PkiErrorReason::kCsrUnsupportedKey, kCsrField,
                   "key uses an unsupported curve (P-256 or P-384 only)");
        }
        case EVP_PKEY_ED25519:
            break;
        case EVP_PKEY_RSA: {
            const int bits = EVP_PKEY_get_bits(key);
            if (bits < kMinRsaBits) {
                refuse(PkiErrorReason::kCsrWeakKey, kCsrField,
                       "key is too weak (RSA keys need at least 2048 bits)");
            }
            if (bits > kMaxRsaBits) {
                refuse(PkiErrorReason::kCsrUnsupportedKey, kCsrField,
                       "RSA key is larger than 16384 bits");
            }
            break;
        }
        default:
            refuse(PkiErrorReason::kCsrUnsupportedKey, kCsrField,
                   "key type is not supported (P-256, P-384, Ed25519 or RSA)");
    }
    EvpPkeyCtxPtr ctx{EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr)};
    if (!ctx) {
        openssl_failure("EVP_PKEY_CTX_new_from_pkey");
    }
    if (EVP_PKEY_public_check(ctx.get()) != 1) {
        refuse(PkiErrorReason::kCsrUnsupportedKey, kCsrField, "key is not a valid public key");
    }
}

// AES-256 key for private-key encryption, derived from the configured secret.
struct DerivedKey {
    std::array<unsigned char, kAesKeyBytes> bytes{};
    DerivedKey() = default;
    DerivedKey(const DerivedKey&) = delete;
    DerivedKey& operator=(const DerivedKey&) = delete;
    ~DerivedKey() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
};

bool derive_key(std::string_view secret, DerivedKey& key) {
    const EvpKdfPtr kdf{EVP_KDF_fetch(nullptr, "HKDF", nullptr)};
    if (!kdf) {
        return false;
    }
    const EvpKdfCtxPtr ctx{EVP_KDF_CTX_new(kdf.get())};
    if (!ctx) {
        return false;
    }
    std::string digest_name{"SHA256"};
    std::string secret_copy{secret};
    std::string info{kHkdfInfo};
    const std::array<OSSL_PARAM, 4> params{
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest_name.data(), 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, secret_copy.data(),
                                          secret_copy.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
        OSSL_PARAM_construct_end(),
    };
    const bool ok =
        EVP_KDF_derive(ctx.get(), key.bytes.data(), key.bytes.size(), params.data()) == 1;
    OPENSSL_cleanse(secret_copy.data(), secret_copy.size());
    return ok;
}

}  // namespace

CertifiedKey generate_ca(std::string_view common_name, std::chrono::seconds validity,
                         Clock::time_point now, const CertifiedKey* parent) {
    const OpensslErrorScope errors;
    const X509NamePtr subject = common_name_subject(common_name, "common_name");
    std::optional<Signer> signer;
    if (parent != nullptr) {
        signer.emplace(load_signer(*parent, KU_KEY_CERT_SIGN));
        check_not_expired(*parent, now);
        if (X509_get_pathlen(signer->cert) == 0) {
            refuse(PkiErrorReason::kCaUnusable, kCaField,
                   "may not sign subordinate CAs (pathlen 0)");
        }
    }
    const Asn1TimePtr not_before = not_before_for(now);
    const Asn1TimePtr not_after = not_after_for(now, validity, signer ? signer->cert : nullptr);
    EvpPkeyPtr key = generate_p256_key();
    const Profile profile{.ca = true,
                          .path_len = signer ? std::optional<long>{0} : std::nullopt,
                          .key_usage = kKeyCertSign | kCrlSign,
                          .client_auth = false};
    Certificate cert = build_certificate(subject.get(), key.get(), signer ? signer->cert : nullptr,
                                         signer ? signer->key.get() : key.get(), not_before.get(),
                                         not_after.get(), profile);
    return CertifiedKey{std::move(cert), key_pem(key.get())};
}

Certificate sign_csr(const CertifiedKey& ca, std::string_view csr,
                     std::string_view device_identifier,
                     std::optional<std::chrono::seconds> validity, Clock::time_point now) {
    const OpensslErrorScope errors;
    const Signer signer = load_signer(ca, KU_KEY_CERT_SIGN);
    check_not_expired(ca, now);
    const X509ReqPtr request = parse_csr(csr);
    EVP_PKEY* key = request ? X509_REQ_get0_pubkey(request.get()) : nullptr;
    if (key == nullptr) {
        refuse(PkiErrorReason::kCsrUnreadable, kCsrField,
               "is not a PEM or DER certificate signing request");
    }
    // Key checks first: they are cheap and bound the cost of the signature check.
    check_device_key(key);
    if (X509_REQ_verify(request.get(), key) != 1) {
        refuse(PkiErrorReason::kCsrBadSignature, kCsrField,
               "signature does not verify with its own public key");
    }
    return issue_device_certificate(signer, device_identifier, key, validity, now);
}

CertifiedKey create_device_certificate(const CertifiedKey& ca, std::string_view device_identifier,
                                       std::optional<std::chrono::seconds> validity,
                                       Clock::time_point now) {
    const OpensslErrorScope errors;
    const Signer signer = load_signer(ca, KU_KEY_CERT_SIGN);
    check_not_expired(ca, now);
    EvpPkeyPtr key = generate_p256_key();
    Certificate cert =
        issue_device_certificate(signer, device_identifier, key.get(), validity, now);
    return CertifiedKey{std::move(cert), key_pem(key.get())};
}

bool needs_renewal(const CertificateFacts& facts, std::chrono::seconds window,
                   Clock::time_point now) {
    using std::chrono::duration_cast;
    using std::chrono::seconds;
    if (facts.not_after <= now) {
        return true;  // expired: whatever the window
    }
    // In whole seconds both times fit with room to spare, so the difference cannot overflow.
    const seconds remaining = duration_cast<seconds>(facts.not_after.time_since_epoch()) -
                              duration_cast<seconds>(now.time_since_epoch());
    return remaining <= window;
}

std::string encrypt_private_key(std::string_view key_pem_text, std::string_view secret) {
    if (secret.empty()) {
        throw std::invalid_argument("private-key encryption needs a non-empty secret");
    }
    if (key_pem_text.size() > kMaxPlaintextBytes) {
        throw std::invalid_argument("private key too large to encrypt");
    }
    const OpensslErrorScope errors;
    DerivedKey key;
    if (!derive_key(secret, key)) {
        openssl_failure("HKDF");
    }
    const std::string nonce = crypto::random_bytes(kNonceBytes);
    EvpCipherCtxPtr ctx{EVP_CIPHER_CTX_new()};
    if (!ctx) {
        openssl_failure("EVP_CIPHER_CTX_new");
    }
    std::string blob(kNonceBytes + key_pem_text.size() + kTagBytes, '\0');
    auto* out = reinterpret_cast<unsigned char*>(blob.data());
    std::copy(nonce.begin(), nonce.end(), blob.begin());
    int length = 0;
    int final_length = 0;
    check(EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr),
          "EVP_EncryptInit_ex");
    check(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kNonceBytes),
                              nullptr),
          "EVP_CTRL_GCM_SET_IVLEN");
    check(EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key.bytes.data(), out),
          "EVP_EncryptInit_ex");
    check(EVP_EncryptUpdate(ctx.get(), nullptr, &length,
                            reinterpret_cast<const unsigned char*>(kAssociatedData.data()),
                            static_cast<int>(kAssociatedData.size())),
          "EVP_EncryptUpdate (AAD)");
    check(EVP_EncryptUpdate(ctx.get(), out + kNonceBytes, &length,
                            reinterpret_cast<const unsigned char*>(key_pem_text.data()),
                            static_cast<int>(key_pem_text.size())),
          "EVP_EncryptUpdate");
    check(EVP_EncryptFinal_ex(ctx.get(), out + kNonceBytes + length, &final_length),
          "EVP_EncryptFinal_ex");
    if (static_cast<std::size_t>(length + final_length) != key_pem_text.size()) {
        openssl_failure("AES-GCM output length");
    }
    check(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagBytes),
                              out + kNonceBytes + key_pem_text.size()),
          "EVP_CTRL_GCM_GET_TAG");
    return std::string(kEncryptedKeyPrefix) + crypto::base64(blob);
}

std::string decrypt_private_key(std::string_view blob, std::string_view secret) {
    if (!blob.starts_with(kEncryptedKeyPrefix)) {
        throw KeyDecryptionError("encrypted private key: unknown format or version");
    }
    if (secret.empty()) {
        throw KeyDecryptionError("encrypted private key: no secret configured");
    }
    const auto decoded = decode_base64(blob.substr(kEncryptedKeyPrefix.size()));
    if (!decoded || decoded->size() < kNonceBytes + kTagBytes ||
        decoded->size() > kMaxPlaintextBytes + kNonceBytes + kTagBytes) {
        throw KeyDecryptionError("encrypted private key: malformed or truncated");
    }
    const OpensslErrorScope errors;
    DerivedKey key;
    if (!derive_key(secret, key)) {
        openssl_failure("HKDF");
    }
    const std::uint8_t* nonce = decoded->data();
    const std::size_t ciphertext_length = decoded->size() - kNonceBytes - kTagBytes;
    const std::uint8_t* ciphertext = nonce + kNonceBytes;
    // The tag buffer must be writable for EVP_CTRL_GCM_SET_TAG.
    std::array<unsigned char, kTagBytes> tag{};
    std::copy_n(ciphertext + ciphertext_length, kTagBytes, tag.begin());

    EvpCipherCtxPtr ctx{EVP_CIPHER_CTX_new()};
    if (!ctx) {
        openssl_failure("EVP_CIPHER_CTX_new");
    }
    std::string plaintext(ciphertext_length, '\0');
    auto* out = reinterpret_cast<unsigned char*>(plaintext.data());
    int length = 0;
    int final_length = 0;
    check(EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr),
          "EVP_DecryptInit_ex");
    check(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kNonceBytes),
                              nullptr),
          "EVP_CTRL_GCM_SET_IVLEN");
    check(EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.bytes.data(), nonce),
          "EVP_DecryptInit_ex");
    check(EVP_DecryptUpdate(ctx.get(), nullptr, &length,
                            reinterpret_cast<const unsigned char*>(kAssociatedData.data()),
                            static_cast<int>(kAssociatedData.size())),
          "EVP_DecryptUpdate (AAD)");
    check(
        EVP_DecryptUpdate(ctx.get(), out, &length, ciphertext, static_cast<int>(ciphertext_length)),
        "EVP_DecryptUpdate");
    check(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagBytes),
                              tag.data()),
          "EVP_CTRL_GCM_SET_TAG");
    const bool authentic = EVP_DecryptFinal_ex(ctx.get(), out + length, &final_length) == 1 &&
                           static_cast<std::size_t>(length + final_length) == ciphertext_length;
    if (!authentic) {
        OPENSSL_cleanse(plaintext.data(), plaintext.size());
        throw KeyDecryptionError(
            "encrypted private key: authentication failed (wrong secret or tampered data)");
    }
    return plaintext;
}

IssuedCrl issue_crl(const CertifiedKey& ca, const std::vector<RevokedCertificate>& revoked,
                    Clock::time_point this_update, Clock::time_point next_update,
                    std::optional<std::uint64_t> crl_number) {
    const OpensslErrorScope errors;
    if (next_update <= this_update) {
        refuse(PkiErrorReason::kInvalidValidity, "next_update", "must be after this_update");
    }
    const Signer signer = load_signer(ca, KU_CRL_SIGN);
    const Asn1TimePtr last = detail::to_asn1_time(this_update);
    const Asn1TimePtr next = detail::to_asn1_time(next_update);
    if (!last || !next) {
        refuse(PkiErrorReason::kInvalidValidity, "next_update", "is out of range");
    }
    X509CrlPtr crl{X509_CRL_new()};
    if (!crl) {
        openssl_failure("X509_CRL_new");
    }
    check(X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2), "X509_CRL_set_version");
    check(X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(signer.cert)),
          "X509_CRL_set_issuer_name");
    check(X509_CRL_set1_lastUpdate(crl.get(), last.get()), "X509_CRL_set1_lastUpdate");
    check(X509_CRL_set1_nextUpdate(crl.get(), next.get()), "X509_CRL_set1_nextUpdate");

    std::set<std::string> listed;
    for (const RevokedCertificate& entry : revoked) {
        const Asn1IntegerPtr serial = detail::parse_decimal_serial(entry.serial);
        const auto normalized = serial ? detail::to_decimal(serial.get()) : std::nullopt;
        if (!normalized) {
            refuse(PkiErrorReason::kInvalidSerial, "serial",
                   "must be a decimal serial number of at most 20 octets");
        }
        if (!listed.insert(*normalized).second) {
            continue;
        }
        const Asn1TimePtr revoked_at = detail::to_asn1_time(entry.revoked_at);
        if (!revoked_at) {
            refuse(PkiErrorReason::kInvalidValidity, "revoked_at", "is out of range");
        }
        X509RevokedPtr item{X509_REVOKED_new()};
        if (!item) {
            openssl_failure("X509_REVOKED_new");
        }
        check(X509_REVOKED_set_serialNumber(item.get(), serial.get()),
              "X509_REVOKED_set_serialNumber");
        check(X509_REVOKED_set_revocationDate(item.get(), revoked_at.get()),
              "X509_REVOKED_set_revocationDate");
        check(X509_CRL_add0_revoked(crl.get(), item.get()), "X509_CRL_add0_revoked");
        static_cast<void>(item.release());  // now owned by the CRL
    }
    check(X509_CRL_sort(crl.get()), "X509_CRL_sort");

    const AuthorityKeyIdPtr akid = authority_key_id(X509_get0_subject_key_id(signer.cert));
    check(X509_CRL_add1_ext_i2d(crl.get(), NID_authority_key_identifier, akid.get(), 0,
                                X509V3_ADD_DEFAULT),
          "CRL authorityKeyIdentifier");
    const std::uint64_t number = crl_number.value_or(
        static_cast<std::uint64_t>(std::max<std::time_t>(0, Clock::to_time_t(this_update))));
    const Asn1IntegerPtr number_value{ASN1_INTEGER_new()};
    if (!number_value) {
        openssl_failure("ASN1_INTEGER_new");
    }
    check(ASN1_INTEGER_set_uint64(number_value.get(), number), "ASN1_INTEGER_set_uint64");
    check(
        X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, number_value.get(), 0, X509V3_ADD_DEFAULT),
        "CRL cRLNumber");

    const EvpPkeyPtr signing_key{key_for_signing(signer.key.get())};
    if (!signing_key || X509_CRL_sign(crl.get(), signing_key.get(),
                                      detail::signing_digest(signer.key.get())) <= 0) {
        openssl_failure("X509_CRL_sign");
    }
    IssuedCrl issued;
    issued.number = number;
    const int length = i2d_X509_CRL(crl.get(), nullptr);
    if (length <= 0) {
        openssl_failure("i2d_X509_CRL");
    }
    issued.der.resize(static_cast<std::size_t>(length));
    unsigned char* out = issued.der.data();
    if (i2d_X509_CRL(crl.get(), &out) != length) {
        openssl_failure("i2d_X509_CRL");
    }
    BioPtr bio{BIO_new(BIO_s_mem())};
    if (!bio) {
        openssl_failure("BIO_new");
    }
    check(PEM_write_bio_X509_CRL(bio.get(), crl.get()), "PEM_write_bio_X509_CRL");
    char* data = nullptr;
    const long pem_length = BIO_get_mem_data(bio.get(), &data);
    issued.pem = pem_length > 0 ? std::string(data, static_cast<std::size_t>(pem_length)) : "";
    return issued;
}

}  // namespace otahub::pki
