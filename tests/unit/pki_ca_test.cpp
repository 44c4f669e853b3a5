#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "server/common/api_error.hpp"
#include "server/domain/crypto.hpp"
#include "server/domain/pki/certificate.hpp"
#include "server/domain/pki/crl.hpp"
#include "server/domain/pki/ec_keys.hpp"
#include "server/domain/pki/managed_ca.hpp"
#include "server/domain/pki/pki_error.hpp"
#include "server/domain/pki/trust_store.hpp"
#include "tests/support/test_pki.hpp"

namespace otahub {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;
using pki::CertifiedKey;
using pki::PkiErrorReason;
using test_support::Eku;
using test_support::TestKey;
using test_support::TestPki;

constexpr std::chrono::seconds kYear = std::chrono::days{365};
constexpr std::string_view kSecret = "correct horse battery staple";

// Certificates hold whole seconds.
Clock::time_point test_now() { return std::chrono::floor<std::chrono::seconds>(Clock::now()); }

// Runs `action`; the PkiError reason it threw, "accepted" when it did not throw.
template <typename Action>
std::string refusal(Action&& action) {
    try {
        action();
    } catch (const pki::PkiError& error) {
        return std::string(pki::to_string(error.reason()));
    }
    return "accepted";
}

std::string name(PkiErrorReason reason) { return std::string(pki::to_string(reason)); }

pki::EvpPkeyPtr generate_key(const char* type, const char* curve = nullptr) {
    // EC keys through pki::generate_ec_key, which works whether or not pki::use_legacy_ec_keys
    // is on in this process.
    pki::EvpPkeyPtr key{curve != nullptr && std::string_view(type) == "EC"
                            ? pki::generate_ec_key(curve)
                        : curve != nullptr ? EVP_PKEY_Q_keygen(nullptr, nullptr, type, curve)
                                           : EVP_PKEY_Q_keygen(nullptr, nullptr, type)};
    if (!key) {
        throw std::runtime_error(std::string("cannot generate a test key: ") + type);
    }
    return key;
}

pki::EvpPkeyPtr generate_rsa(unsigned bits) {
    pki::EvpPkeyPtr key{EVP_RSA_gen(bits)};
    if (!key) {
        throw std::runtime_error("cannot generate an RSA test key");
    }
    return key;
}

std::string request_pem(X509_REQ* request) {
    pki::BioPtr bio{BIO_new(BIO_s_mem())};
    if (!bio || PEM_write_bio_X509_REQ(bio.get(), request) != 1) {
        throw std::runtime_error("PEM_write_bio_X509_REQ");
    }
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(length));
}

// A CSR for any key type, with subject CN and O; `resign_with` swaps in another public key after
// signing, which breaks the self-signature.
pki::X509ReqPtr make_request(EVP_PKEY* key, const std::string& cn,
                             EVP_PKEY* swap_key_after_signing = nullptr) {
    pki::X509ReqPtr request{X509_REQ_new()};
    X509_NAME* subject = X509_REQ_get_subject_name(request.get());
    X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(cn.data()),
                               static_cast<int>(cn.size()), -1, 0);
    X509_NAME_add_entry_by_NID(subject, NID_organizationName, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>("Evil Corp"), -1, -1, 0);
    X509_REQ_set_pubkey(request.get(), key);
    const int id = EVP_PKEY_get_base_id(key);
    const EVP_MD* md = id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? nullptr : EVP_sha256();
    const pki::EvpPkeyPtr signing_key{pki::key_for_signing(key)};
    if (!signing_key || X509_REQ_sign(request.get(), signing_key.get(), md) <= 0) {
        throw std::runtime_error("X509_REQ_sign");
    }
    if (swap_key_after_signing != nullptr) {
        X509_REQ_set_pubkey(request.get(), swap_key_after_signing);
    }
    return request;
}

std::string make_csr(EVP_PKEY* key, const std::string& cn) {
    return request_pem(make_request(key, cn).get());
}

std::string to_string(const std::vector<std::uint8_t>& bytes) {
    return std::string(bytes.begin(), bytes.end());
}

std::optional<bool> extension_critical(X509* cert, int nid) {
    const int index = X509_get_ext_by_NID(cert, nid, -1);
    if (index < 0) {
        return std::nullopt;
    }
    return X509_EXTENSION_get_critical(X509_get_ext(cert, index)) != 0;
}

// Verifies `cert` with plain OpenSSL against `trusted`, with `untrusted` intermediates, for TLS
// client use (`client_purpose`) or for no purpose in particular (a CA).
int store_verify(X509* cert, const std::vector<X509*>& trusted, const std::vector<X509*>& untrusted,
                 Clock::time_point at, bool client_purpose = true) {
    pki::X509StorePtr store{X509_STORE_new()};
    for (X509* anchor : trusted) {
        X509_STORE_add_cert(store.get(), anchor);
    }
    pki::X509StackPtr chain{sk_X509_new_null()};
    for (X509* intermediate : untrusted) {
        sk_X509_push(chain.get(), pki::share_x509(intermediate).release());
    }
    pki::X509StoreCtxPtr ctx{X509_STORE_CTX_new()};
    X509_STORE_CTX_init(ctx.get(), store.get(), cert, chain.get());
    X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()), Clock::to_time_t(at));
    if (client_purpose) {
        X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
    }
    return X509_verify_cert(ctx.get()) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx.get());
}

pki::RegisteredCa registered(const pki::Certificate& ca, std::int64_t id, std::int64_t org_id) {
    pki::RegisteredCa row;
    row.id = id;
    row.org_id = org_id;
    row.serial = ca.facts().serial;
    row.ski = ca.facts().ski;
    row.der = ca.facts().der;
    return row;
}

pki::EvpPkeyPtr read_key(const std::string& pem) {
    pki::BioPtr bio{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
    return pki::EvpPkeyPtr{PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)};
}

class PkiCaTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        now_ = test_now();
        root_ = pki::generate_ca("Hub Root CA", 30 * kYear, now_);
    }
    static void TearDownTestSuite() { root_.reset(); }

    static inline Clock::time_point now_{};
    static inline std::optional<CertifiedKey> root_{};
};

// ---- CA generation ----

using PkiCaGenerate = PkiCaTest;

TEST_F(PkiCaGenerate, RootIsAValidSelfSignedCa) {
    const CertifiedKey& root = *root_;
    X509* cert = root.certificate.get();
    const pki::CertificateFacts& facts = root.certificate.facts();
    EXPECT_TRUE(facts.is_ca);
    EXPECT_EQ(facts.common_name, "Hub Root CA");
    EXPECT_EQ(facts.subject, facts.issuer);
    ASSERT_FALSE(facts.ski.empty());
    EXPECT_EQ(facts.aki, facts.ski);
    EXPECT_EQ(X509_get_version(cert), X509_VERSION_3);
    EXPECT_EQ(X509_verify(cert, X509_get0_pubkey(cert)), 1);
    EXPECT_EQ(X509_check_ca(cert), 1);
    EXPECT_EQ(extension_critical(cert, NID_basic_constraints), true);
    EXPECT_EQ(extension_critical(cert, NID_key_usage), true);
    EXPECT_EQ(X509_get_key_usage(cert), static_cast<std::uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
    EXPECT_EQ(X509_get_pathlen(cert), -1);  // a root: no path length limit
    EXPECT_EQ(facts.not_before, now_ - pki::kNotBeforeBackdate);
    EXPECT_EQ(facts.not_after, now_ + 30 * kYear);

    const pki::EvpPkeyPtr key = read_key(root.private_key_pem);
    ASSERT_TRUE(key);
    EXPECT_NE(root.private_key_pem.find("-----BEGIN PRIVATE KEY-----"), std::string::npos);
    EXPECT_EQ(EVP_PKEY_get_base_id(key.get()), EVP_PKEY_EC);
    EXPECT_EQ(EVP_PKEY_get_bits(key.get()), 256);
    EXPECT_EQ(X509_check_private_key(cert, key.get()), 1);

    // A trust store holding the root accepts it.
    EXPECT_EQ(store_verify(cert, {cert}, {}, now_, false), X509_V_OK);
}

TEST_F(PkiCaGenerate, IntermediateChainVerifies) {
    const CertifiedKey intermediate = pki::generate_ca("Hub Issuing CA", 10 * kYear, now_, &*root_);
    X509* cert = intermediate.certificate.get();
    const pki::CertificateFacts& facts = intermediate.certificate.facts();
    EXPECT_TRUE(facts.is_ca);
    EXPECT_EQ(facts.issuer, root_->certificate.facts().subject);
    EXPECT_EQ(facts.aki, root_->certificate.facts().ski);
    EXPECT_NE(facts.ski, root_->certificate.facts().ski);
    EXPECT_EQ(X509_get_pathlen(cert), 0);
    EXPECT_EQ(X509_verify(cert, X509_get0_pubkey(root_->certificate.get())), 1);
    EXPECT_EQ(store_verify(cert, {root_->certificate.get()}, {}, now_, false), X509_V_OK);

    const CertifiedKey device = pki::create_device_certificate(intermediate, "dev-1", {}, now_);
    EXPECT_EQ(store_verify(device.certificate.get(), {root_->certificate.get()}, {cert}, now_),
              X509_V_OK);
    // Without the intermediate the root alone cannot vouch for the device.
    EXPECT_NE(store_verify(device.certificate.get(), {root_->certificate.get()}, {}, now_),
              X509_V_OK);
}

TEST_F(PkiCaGenerate, IntermediateValidityIsCappedAtTheParent) {
    const CertifiedKey short_root = pki::generate_ca("Short Root", kYear, now_);
    const CertifiedKey intermediate =
        pki::generate_ca("Long Intermediate", 5 * kYear, now_, &short_root);
    EXPECT_EQ(intermediate.certificate.facts().not_after, short_root.certificate.facts().not_after);
}

TEST_F(PkiCaGenerate, SerialsAreRandomPositiveAndAtMost128Bits) {
    std::set<std::string> serials;
    for (int i = 0; i < 8; ++i) {
        const CertifiedKey ca = pki::generate_ca("Serial Root", kYear, now_);
        const ASN1_INTEGER* serial = X509_get0_serialNumber(ca.certificate.get());
        EXPECT_NE(ASN1_STRING_type(serial), V_ASN1_NEG_INTEGER);
        EXPECT_LE(ASN1_STRING_length(serial), 16);
        EXPECT_GE(ASN1_STRING_length(serial), 8);  // 2^-64 odds of a false failure
        serials.insert(ca.certificate.facts().serial);
    }
    EXPECT_EQ(serials.size(), 8U);
}

TEST_F(PkiCaGenerate, RefusesBadInputs) {
    EXPECT_EQ(refusal([&] { pki::generate_ca("Root", 0s, now_); }),
              name(PkiErrorReason::kInvalidValidity));
    EXPECT_EQ(refusal([&] { pki::generate_ca("Root", -kYear, now_); }),
              name(PkiErrorReason::kInvalidValidity));
    EXPECT_EQ(refusal([&] { pki::generate_ca("", kYear, now_); }),
              name(PkiErrorReason::kInvalidIdentifier));

    // A device certificate cannot parent a CA.
    const CertifiedKey device = pki::create_device_certificate(*root_, "dev-1", {}, now_);
    EXPECT_EQ(refusal([&] { pki::generate_ca("Sub", kYear, now_, &device); }),
              name(PkiErrorReason::kCaUnusable));
    // A parent whose key is not its own.
    const CertifiedKey other = pki::generate_ca("Other Root", kYear, now_);
    const CertifiedKey mismatched{root_->certificate, other.private_key_pem};
    EXPECT_EQ(refusal([&] { pki::generate_ca("Sub", kYear, now_, &mismatched); }),
              name(PkiErrorReason::kCaKeyMismatch));
    const CertifiedKey keyless{root_->certificate, "not a key"};
    EXPECT_EQ(refusal([&] { pki::generate_ca("Sub", kYear, now_, &keyless); }),
              name(PkiErrorReason::kCaKeyUnreadable));
    // An intermediate has pathlen 0: it may not have sub-CAs.
    const CertifiedKey intermediate = pki::generate_ca("Issuing", kYear, now_, &*root_);
    EXPECT_EQ(refusal([&] { pki::generate_ca("Sub-sub", kYear, now_, &intermediate); }),
              name(PkiErrorReason::kCaUnusable));
}

// ---- CSR signing ----

using PkiCaSignCsr = PkiCaTest;

TEST_F(PkiCaSignCsr, ForeignCommonNameIsReplaced) {
    const TestKey key = TestKey::generate();
    const std::string csr =
        TestPki::make_csr(key, "someone-else", {"urn:nerveshub:verify:forged", "https://evil"});
    const pki::Certificate cert = pki::sign_csr(*root_, csr, "device-42", {}, now_);
    const pki::CertificateFacts& facts = cert.facts();
    EXPECT_EQ(facts.common_name, "device-42");
    EXPECT_EQ(facts.subject, "CN=device-42");
    EXPECT_TRUE(facts.san_uris.empty());  // CSR extensions are never copied
    EXPECT_TRUE(facts.san_dns.empty());
    EXPECT_EQ(X509_get_ext_by_NID(cert.get(), NID_subject_alt_name, -1), -1);
    // The certified key is the CSR's.
    EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key.get()), 1);

    // Other subject fields (here O) are dropped too.
    const pki::EvpPkeyPtr p256 = generate_key("EC", "P-256");
    const pki::Certificate plain =
        pki::sign_csr(*root_, make_csr(p256.get(), "not-me"), "device-43", {}, now_);
    EXPECT_EQ(plain.facts().subject, "CN=device-43");
}

TEST_F(PkiCaSignCsr, IssuedCertificateProfile) {
    const TestKey key = TestKey::generate();
    const pki::Certificate cert =
        pki::sign_csr(*root_, TestPki::make_csr(key, "device-1"), "device-1", {}, now_);
    X509* x509 = cert.get();
    const pki::CertificateFacts& facts = cert.facts();
    EXPECT_FALSE(facts.is_ca);
    EXPECT_TRUE(facts.has_eku);
    EXPECT_TRUE(facts.eku_client_auth);
    EXPECT_FALSE(facts.eku_server_auth);
    EXPECT_EQ(facts.aki, root_->certificate.facts().ski);
    EXPECT_FALSE(facts.ski.empty());
    EXPECT_NE(facts.ski, facts.aki);
    EXPECT_EQ(facts.issuer, root_->certificate.facts().subject);
    EXPECT_EQ(X509_get_version(x509), X509_VERSION_3);
    EXPECT_EQ(extension_critical(x509, NID_basic_constraints), true);
    EXPECT_EQ(extension_critical(x509, NID_key_usage), true);
    EXPECT_EQ(extension_critical(x509, NID_ext_key_usage), false);
    EXPECT_EQ(X509_get_key_usage(x509), static_cast<std::uint32_t>(KU_DIGITAL_SIGNATURE));
    EXPECT_EQ(X509_get_extended_key_usage(x509), static_cast<std::uint32_t>(XKU_SSL_CLIENT));
    EXPECT_EQ(X509_check_ca(x509), 0);
    EXPECT_EQ(X509_verify(x509, X509_get0_pubkey(root_->certificate.get())), 1);
    EXPECT_EQ(store_verify(x509, {root_->certificate.get()}, {}, now_), X509_V_OK);

    // SKI is the SHA-1 of the subjectPublicKey (RFC 5280 method 1).
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    ASSERT_EQ(X509_pubkey_digest(x509, EVP_sha1(), digest.data(), &length), 1);
    EXPECT_EQ(facts.ski, pki::to_hex_upper({digest.data(), length}));

    const ASN1_INTEGER* serial = X509_get0_serialNumber(x509);
    EXPECT_NE(ASN1_STRING_type(serial), V_ASN1_NEG_INTEGER);
    EXPECT_LE(ASN1_STRING_length(serial), 16);
    const pki::Certificate again =
        pki::sign_csr(*root_, TestPki::make_csr(key, "device-1"), "device-1", {}, now_);
    EXPECT_NE(again.facts().serial, facts.serial);
}

TEST_F(PkiCaSignCsr, RefusesBadSignature) {
    const pki::EvpPkeyPtr signer = generate_key("EC", "P-256");
    const pki::EvpPkeyPtr other = generate_key("EC", "P-256");
    const pki::X509ReqPtr request = make_request(signer.get(), "device-1", other.get());
    const std::string csr = request_pem(request.get());
    // Sanity: OpenSSL agrees the re-read request does not verify.
    {
        pki::BioPtr bio{BIO_new_mem_buf(csr.data(), static_cast<int>(csr.size()))};
        pki::X509ReqPtr reread{PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr)};
        ASSERT_TRUE(reread);
        ASSERT_NE(X509_REQ_verify(reread.get(), X509_REQ_get0_pubkey(reread.get())), 1);
        ERR_clear_error();
    }
    EXPECT_EQ(refusal([&] { pki::sign_csr(*root_, csr, "device-1", {}, now_); }),
              name(PkiErrorReason::kCsrBadSignature));

    // Flipping a bit of the signature itself.
    std::string der;
    {
        unsigned char* out = nullptr;
        const pki::X509ReqPtr good = make_request(signer.get(), "device-1");
        const int length = i2d_X509_REQ(good.get(), &out);
        ASSERT_GT(length, 0);
        der.assign(reinterpret_cast<char*>(out), static_cast<std::size_t>(length));
        OPENSSL_free(out);
    }
    EXPECT_EQ(refusal([&] { pki::sign_csr(*root_, der, "device-1", {}, now_); }), "accepted");
    der[der.size() - 2] = static_cast<char>(der[der.size() - 2] ^ 0x01);
    EXPECT_EQ(refusal([&] { pki::sign_csr(*root_, der, "device-1", {}, now_); }),
              name(PkiErrorReason::kCsrBadSignature));
}

TEST_F(PkiCaSignCsr, RefusesWeakKeys) {
    const pki::EvpPkeyPtr rsa1024 = generate_rsa(1024);
    EXPECT_EQ(
        refusal([&] { pki::sign_csr(*root_, make_csr(rsa1024.get(), "d"), "device-1", {}, now_); }),
        name(PkiErrorReason::kCsrWeakKey));
    const pki::EvpPkeyPtr p224 = generate_key("EC", "P-224");
    EXPECT_EQ(
        refusal([&] { pki::sign_csr(*root_, make_csr(p224.get(), "d"), "device-1", {}, now_); }),
        name(PkiErrorReason::kCsrWeakKey));
}

TEST_F(PkiCaSignCsr, RefusesUnsupportedKeys) {
    for (const auto& [type, curve] : std::vector<std::pair<const char*, const char*>>{
             {"EC", "P-521"}, {"EC", "secp256k1"}, {"ED448", nullptr}}) {
        SCOPED_TRACE(curve != nullptr ? curve : type);
        const pki::EvpPkeyPtr key = generate_key(type, curve);
        EXPECT_EQ(
            refusal([&] { pki::sign_csr(*root_, make_csr(key.get(), "d"), "device-1", {}, now_); }),
            name(PkiErrorReason::kCsrUnsupportedKey));
    }
}

TEST_F(PkiCaSignCsr, AcceptsSupportedKeyTypes) {
    std::vector<pki::EvpPkeyPtr> keys;
    keys.push_back(generate_key("EC", "P-256"));
    keys.push_back(generate_key("EC", "P-384"));
    keys.push_back(generate_key("ED25519"));
    keys.push_back(generate_rsa(2048));
    for (const pki::EvpPkeyPtr& key : keys) {
        SCOPED_TRACE(EVP_PKEY_get0_type_name(key.get()));
        const pki::Certificate cert =
            pki::sign_csr(*root_, make_csr(key.get(), "x"), "device-7", {}, now_);
        EXPECT_EQ(cert.facts().common_name, "device-7");
        EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key.get()), 1);
        EXPECT_EQ(store_verify(cert.get(), {root_->certificate.get()}, {}, now_), X509_V_OK);
    }
}

TEST_F(PkiCaSignCsr, ReadsPemDerAndBase64) {
    const pki::EvpPkeyPtr key = generate_key("EC", "P-256");
    const pki::X509ReqPtr request = make_request(key.get(), "x");
    const std::string pem = request_pem(request.get());
    unsigned char* out = nullptr;
    const int length = i2d_X509_REQ(request.get(), &out);
    ASSERT_GT(length, 0);
    const std::string der(reinterpret_cast<char*>(out), static_cast<std::size_t>(length));
    OPENSSL_free(out);

    for (const std::string& input :
         {pem, der, crypto::base64(pem), crypto::base64(der), "\n  " + pem + "\n"}) {
        EXPECT_EQ(pki::sign_csr(*root_, input, "device-9", {}, now_).facts().common_name,
                  "device-9");
    }
}

TEST_F(PkiCaSignCsr, RefusesWhatIsNotACsr) {
    const pki::EvpPkeyPtr key = generate_key("EC", "P-256");
    const std::string pem = make_csr(key.get(), "x");
    const std::vector<std::string> inputs{
        "",
        "   ",
        "hello",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        pem.substr(0, pem.size() / 2),
        root_->certificate.pem(),
        to_string(root_->certificate.facts().der),
        std::string(pki::kMaxCsrInputBytes + 1, 'A'),
        std::string("\x30\x03\x02\x01\x00", 5),
    };
    for (const std::string& input : inputs) {
        SCOPED_TRACE(input.substr(0, 40));
        EXPECT_EQ(refusal([&] { pki::sign_csr(*root_, input, "device-1", {}, now_); }),
                  name(PkiErrorReason::kCsrUnreadable));
    }
    EXPECT_EQ(ERR_peek_error(), 0UL);  // no OpenSSL errors left behind
}

TEST_F(PkiCaSignCsr, ValidityIsCappedAtTheCa) {
    const CertifiedKey ca = pki::generate_ca("One Year CA", kYear, now_);
    const std::string csr = TestPki::make_csr(TestKey::generate(), "x");
    // Default (ten years) and an explicit longer validity both end with the CA.
    EXPECT_EQ(pki::sign_csr(ca, csr, "d", {}, now_).facts().not_after,
              ca.certificate.facts().not_after);
    EXPECT_EQ(pki::sign_csr(ca, csr, "d", 2 * kYear, now_).facts().not_after,
              ca.certificate.facts().not_after);
    // A shorter one is kept.
    const pki::Certificate month = pki::sign_csr(ca, csr, "d", std::chrono::days{30}, now_);
    EXPECT_EQ(month.facts().not_after, now_ + std::chrono::days{30});
    EXPECT_EQ(month.facts().not_before, now_ - pki::kNotBeforeBackdate);
    EXPECT_EQ(refusal([&] { pki::sign_csr(ca, csr, "d", 0s, now_); }),
              name(PkiErrorReason::kInvalidValidity));
}

TEST_F(PkiCaSignCsr, DefaultValidityIsTenYears) {
    const pki::Certificate cert =
        pki::sign_csr(*root_, TestPki::make_csr(TestKey::generate(), "x"), "d", {}, now_);
    EXPECT_EQ(cert.facts().not_after, now_ + std::chrono::days{3650});
}

TEST_F(PkiCaSignCsr, RefusesInvalidIdentifiers) {
    const std::string csr = TestPki::make_csr(TestKey::generate(), "x");
    for (const std::string& identifier :
         {std::string{}, std::string(65, 'a'), std::string("dev\n1"), std::string("dev\0001", 5),
          std::string("\xC3\x28")}) {
        SCOPED_TRACE(identifier);
        EXPECT_EQ(refusal([&] { pki::sign_csr(*root_, csr, identifier, {}, now_); }),
                  name(PkiErrorReason::kInvalidIdentifier));
    }
    EXPECT_EQ(pki::sign_csr(*root_, csr, std::string(64, 'a'), {}, now_).facts().common_name,
              std::string(64, 'a'));
    EXPECT_EQ(pki::sign_csr(*root_, csr, "gerät-ü", {}, now_).facts().common_name, "gerät-ü");
}

TEST_F(PkiCaSignCsr, RefusesUnusableCa) {
    const std::string csr = TestPki::make_csr(TestKey::generate(), "x");
    const CertifiedKey old = pki::generate_ca("Old CA", kYear, now_ - 2 * kYear);
    EXPECT_EQ(refusal([&] { pki::sign_csr(old, csr, "d", {}, now_); }),
              name(PkiErrorReason::kCaExpired));
    const CertifiedKey device = pki::create_device_certificate(*root_, "dev", {}, now_);
    EXPECT_EQ(refusal([&] { pki::sign_csr(device, csr, "d", {}, now_); }),
              name(PkiErrorReason::kCaUnusable));
    const CertifiedKey mismatched{root_->certificate, device.private_key_pem};
    EXPECT_EQ(refusal([&] { pki::sign_csr(mismatched, csr, "d", {}, now_); }),
              name(PkiErrorReason::kCaKeyMismatch));
}

TEST_F(PkiCaSignCsr, RefusalIsA422ApiError) {
    try {
        pki::sign_csr(*root_, "garbage", "device-1", {}, now_);
        FAIL() << "garbage was signed";
    } catch (const ApiError& error) {
        EXPECT_EQ(error.code(), ErrorCode::kUnprocessable);
        EXPECT_EQ(http_status(error.code()), 422);
        ASSERT_TRUE(error.fields().contains("csr"));
        EXPECT_EQ(error.fields()["csr"].size(), 1U);
    }
}

TEST_F(PkiCaSignCsr, IssuedLeafIsAcceptedByTheTrustSnapshot) {
    const pki::Certificate leaf =
        pki::sign_csr(*root_, TestPki::make_csr(TestKey::generate(), "x"), "device-5", {}, now_);

    pki::TrustInputs inputs;
    inputs.cas.push_back(registered(root_->certificate, 11, 7));
    const auto snapshot = pki::TrustSnapshot::build(inputs);
    const pki::VerifyResult result = snapshot->verify(leaf.get(), nullptr, now_);
    EXPECT_EQ(pki::to_string(result.status), "ok");
    ASSERT_TRUE(result.ca);
    EXPECT_EQ(result.ca->id, 11);
    EXPECT_EQ(result.ca->org_id, 7);
    ASSERT_TRUE(result.leaf);
    EXPECT_EQ(result.leaf->common_name, "device-5");

    // Through an intermediate that the device sends, with only the root registered.
    const CertifiedKey intermediate = pki::generate_ca("Issuing", 5 * kYear, now_, &*root_);
    const CertifiedKey device = pki::create_device_certificate(intermediate, "device-6", {}, now_);
    pki::X509StackPtr chain{sk_X509_new_null()};
    sk_X509_push(chain.get(), pki::share_x509(intermediate.certificate.get()).release());
    EXPECT_EQ(snapshot->verify(device.certificate.get(), chain.get(), now_).status,
              pki::VerifyStatus::kOk);

    // Not registered: unknown CA.
    EXPECT_EQ(pki::TrustSnapshot::empty()->verify(leaf.get(), nullptr, now_).status,
              pki::VerifyStatus::kUnknownCa);
}

// ---- Device certificates (dev workflow) ----

using PkiCaDeviceCertificate = PkiCaTest;

TEST_F(PkiCaDeviceCertificate, CreatesKeyAndCertificate) {
    const CertifiedKey device = pki::create_device_certificate(*root_, "device-77", {}, now_);
    EXPECT_EQ(device.certificate.facts().common_name, "device-77");
    EXPECT_TRUE(device.certificate.facts().eku_client_auth);
    EXPECT_EQ(device.certificate.facts().aki, root_->certificate.facts().ski);
    const pki::EvpPkeyPtr key = read_key(device.private_key_pem);
    ASSERT_TRUE(key);
    EXPECT_EQ(EVP_PKEY_get_base_id(key.get()), EVP_PKEY_EC);
    EXPECT_EQ(EVP_PKEY_get_bits(key.get()), 256);
    EXPECT_EQ(X509_check_private_key(device.certificate.get(), key.get()), 1);

    pki::TrustInputs inputs;
    inputs.cas.push_back(registered(root_->certificate, 1, 1));
    EXPECT_TRUE(
        pki::TrustSnapshot::build(inputs)->verify(device.certificate.get(), nullptr, now_).ok());
    EXPECT_EQ(refusal([&] { pki::create_device_certificate(*root_, "", {}, now_); }),
              name(PkiErrorReason::kInvalidIdentifier));
}

// ---- Renewal ----

TEST(PkiCaRenewal, NeedsRenewalWithinTheWindow) {
    const Clock::time_point now = test_now();
    pki::CertificateFacts facts;
    facts.not_before = now - std::chrono::days{300};
    facts.not_after = now + std::chrono::days{40};
    EXPECT_FALSE(pki::needs_renewal(facts, std::chrono::days{30}, now));
    EXPECT_TRUE(pki::needs_renewal(facts, std::chrono::days{40}, now));
    EXPECT_TRUE(pki::needs_renewal(facts, std::chrono::days{60}, now));
    facts.not_after = now - 1s;  // already expired
    EXPECT_TRUE(pki::needs_renewal(facts, 0s, now));
    facts.not_after = Clock::time_point::max();  // 9999-12-31
    EXPECT_FALSE(pki::needs_renewal(facts, 100 * kYear, now));
    EXPECT_TRUE(pki::needs_renewal(facts, std::chrono::seconds::max(), now));
    facts.not_after = Clock::time_point::min();
    EXPECT_TRUE(pki::needs_renewal(facts, std::chrono::seconds::min(), now));
    facts.not_after = now + 1s;
    EXPECT_FALSE(pki::needs_renewal(facts, -kYear, now));
}

// ---- Private key encryption ----

TEST(PkiCaKeyEncryption, RoundTrip) {
    const std::string key = TestKey::generate().private_pem();
    const std::string blob = pki::encrypt_private_key(key, kSecret);
    EXPECT_TRUE(blob.starts_with("v1:"));
    EXPECT_EQ(blob.find("PRIVATE KEY"), std::string::npos);
    EXPECT_EQ(pki::decrypt_private_key(blob, kSecret), key);
    // A fresh nonce every time.
    EXPECT_NE(pki::encrypt_private_key(key, kSecret), blob);
    EXPECT_EQ(pki::decrypt_private_key(pki::encrypt_private_key("", kSecret), kSecret), "");
}

TEST(PkiCaKeyEncryption, WrongSecretFails) {
    const std::string blob = pki::encrypt_private_key("secret key material", kSecret);
    EXPECT_THROW(pki::decrypt_private_key(blob, "correct horse battery stapler"),
                 pki::KeyDecryptionError);
    EXPECT_THROW(pki::decrypt_private_key(blob, ""), pki::KeyDecryptionError);
    EXPECT_THROW(pki::encrypt_private_key("key", ""), std::invalid_argument);
}

TEST(PkiCaKeyEncryption, TamperedBlobFails) {
    const std::string blob = pki::encrypt_private_key("-----BEGIN PRIVATE KEY-----", kSecret);
    const auto decoded = pki::decode_base64(std::string_view(blob).substr(3));
    ASSERT_TRUE(decoded);
    // Flipping any bit of nonce, ciphertext or tag is detected.
    for (std::size_t i = 0; i < decoded->size(); ++i) {
        std::string tampered(decoded->begin(), decoded->end());
        tampered[i] = static_cast<char>(tampered[i] ^ 0x01);
        EXPECT_THROW(pki::decrypt_private_key("v1:" + crypto::base64(tampered), kSecret),
                     pki::KeyDecryptionError)
            << "byte " << i;
    }
}

TEST(PkiCaKeyEncryption, MalformedBlobsFail) {
    const std::string blob = pki::encrypt_private_key("key", kSecret);
    for (const std::string& bad :
         {std::string{}, std::string("v1:"), std::string("v2:") + blob.substr(3), blob.substr(3),
          std::string("v1:!!!!"), blob.substr(0, blob.size() - 8), blob + "AAAA",
          std::string("v1:") + crypto::base64(std::string(27, 'x'))}) {
        SCOPED_TRACE(bad);
        EXPECT_THROW(pki::decrypt_private_key(bad, kSecret), pki::KeyDecryptionError);
    }
    EXPECT_EQ(ERR_peek_error(), 0UL);
}

// ---- CRLs ----

using PkiCrl = PkiCaTest;

TEST_F(PkiCrl, IssueImportRoundTrip) {
    const std::vector<pki::RevokedCertificate> revoked{
        {"12345678901234567890", now_ - std::chrono::days{3}},
        {"42", now_ - std::chrono::hours{5}},
        {"42", now_},  // a duplicate is listed once
    };
    const pki::IssuedCrl issued =
        pki::issue_crl(*root_, revoked, now_, now_ + std::chrono::days{7}, 9);
    EXPECT_EQ(issued.number, 9U);
    EXPECT_NE(issued.pem.find("-----BEGIN X509 CRL-----"), std::string::npos);

    for (const std::string& input : {issued.pem, to_string(issued.der), crypto::base64(issued.pem),
                                     crypto::base64(to_string(issued.der))}) {
        const pki::ImportedCrl imported = pki::import_crl(input, root_->certificate, now_);
        EXPECT_EQ(imported.issuer_ski, root_->certificate.facts().ski);
        EXPECT_EQ(imported.number, "9");
        EXPECT_EQ(imported.this_update, now_);
        EXPECT_EQ(imported.next_update, now_ + std::chrono::days{7});
        EXPECT_EQ(imported.der, issued.der);
        ASSERT_EQ(imported.revoked.size(), 2U);
        std::vector<std::pair<std::string, Clock::time_point>> entries;
        for (const pki::CrlEntry& entry : imported.revoked) {
            entries.emplace_back(entry.serial, entry.revoked_at);
        }
        std::sort(entries.begin(), entries.end());
        EXPECT_EQ(entries[0],
                  std::make_pair(std::string("12345678901234567890"), now_ - std::chrono::days{3}));
        EXPECT_EQ(entries[1], std::make_pair(std::string("42"), now_ - std::chrono::hours{5}));
    }

    const pki::IssuedCrl empty = pki::issue_crl(*root_, {}, now_, now_ + std::chrono::days{1});
    EXPECT_TRUE(pki::import_crl(empty.pem, root_->certificate, now_).revoked.empty());
}

TEST_F(PkiCrl, IssuedCrlHasNumberAndAuthorityKeyId) {
    const pki::IssuedCrl issued = pki::issue_crl(*root_, {}, now_, now_ + std::chrono::days{1});
    // By default the number is the Unix time of thisUpdate: it grows without a counter.
    EXPECT_EQ(issued.number, static_cast<std::uint64_t>(Clock::to_time_t(now_)));

    const unsigned char* cursor = issued.der.data();
    const pki::X509CrlPtr crl{d2i_X509_CRL(nullptr, &cursor, static_cast<long>(issued.der.size()))};
    ASSERT_TRUE(crl);
    EXPECT_EQ(X509_CRL_get_version(crl.get()), X509_CRL_VERSION_2);
    EXPECT_EQ(X509_CRL_verify(crl.get(), X509_get0_pubkey(root_->certificate.get())), 1);
    int critical = 0;
    const pki::Asn1IntegerPtr number{static_cast<ASN1_INTEGER*>(
        X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, &critical, nullptr))};
    ASSERT_TRUE(number);
    EXPECT_EQ(critical, 0);
    std::uint64_t value = 0;
    ASSERT_EQ(ASN1_INTEGER_get_uint64(&value, number.get()), 1);
    EXPECT_EQ(value, issued.number);
    AUTHORITY_KEYID* akid = static_cast<AUTHORITY_KEYID*>(
        X509_CRL_get_ext_d2i(crl.get(), NID_authority_key_identifier, &critical, nullptr));
    ASSERT_NE(akid, nullptr);
    EXPECT_EQ(
        ASN1_OCTET_STRING_cmp(akid->keyid, X509_get0_subject_key_id(root_->certificate.get())), 0);
    AUTHORITY_KEYID_free(akid);
}

TEST_F(PkiCrl, RefusesCrlSignedByAnotherKey) {
    // Same subject name, different key: only the signature tells them apart.
    const CertifiedKey impostor = pki::generate_ca("Hub Root CA", kYear, now_);
    const pki::IssuedCrl forged =
        pki::issue_crl(impostor, {{"42", now_}}, now_, now_ + std::chrono::days{1});
    EXPECT_EQ(refusal([&] { pki::import_crl(forged.pem, root_->certificate, now_); }),
              name(PkiErrorReason::kCrlBadSignature));

    const CertifiedKey other = pki::generate_ca("Other CA", kYear, now_);
    const pki::IssuedCrl foreign =
        pki::issue_crl(other, {{"42", now_}}, now_, now_ + std::chrono::days{1});
    EXPECT_EQ(refusal([&] { pki::import_crl(foreign.pem, root_->certificate, now_); }),
              name(PkiErrorReason::kCrlIssuerMismatch));
}

TEST_F(PkiCrl, RefusesExpiredAndFutureCrls) {
    const pki::IssuedCrl stale =
        pki::issue_crl(*root_, {{"42", now_ - std::chrono::days{9}}}, now_ - std::chrono::days{8},
                       now_ - std::chrono::days{1});
    EXPECT_EQ(refusal([&] { pki::import_crl(stale.pem, root_->certificate, now_); }),
              name(PkiErrorReason::kCrlExpired));
    // It was fine while current.
    EXPECT_EQ(refusal([&] {
                  pki::import_crl(stale.pem, root_->certificate, now_ - std::chrono::days{2});
              }),
              "accepted");

    const pki::IssuedCrl future =
        pki::issue_crl(*root_, {}, now_ + std::chrono::hours{1}, now_ + std::chrono::days{7});
    EXPECT_EQ(refusal([&] { pki::import_crl(future.pem, root_->certificate, now_); }),
              name(PkiErrorReason::kCrlNotYetValid));
    // Within the allowed clock skew.
    const pki::IssuedCrl skewed =
        pki::issue_crl(*root_, {}, now_ + 1min, now_ + std::chrono::days{7});
    EXPECT_EQ(refusal([&] { pki::import_crl(skewed.pem, root_->certificate, now_); }), "accepted");
}

TEST_F(PkiCrl, RefusesWhatIsNotACrl) {
    const pki::IssuedCrl issued = pki::issue_crl(*root_, {}, now_, now_ + std::chrono::days{1});
    for (const std::string& input :
         {std::string{}, std::string("crl"), root_->certificate.pem(),
          issued.pem.substr(0, issued.pem.size() / 2), to_string(issued.der) + "x",
          std::string(pki::kMaxCrlInputBytes + 1, 'A')}) {
        SCOPED_TRACE(input.substr(0, 40));
        EXPECT_EQ(refusal([&] { pki::import_crl(input, root_->certificate, now_); }),
                  name(PkiErrorReason::kCrlUnreadable));
    }
    EXPECT_EQ(ERR_peek_error(), 0UL);
}

TEST_F(PkiCrl, RefusesDeltaCrls) {
    const pki::IssuedCrl issued = pki::issue_crl(*root_, {}, now_, now_ + std::chrono::days{1});
    const unsigned char* cursor = issued.der.data();
    const pki::X509CrlPtr crl{d2i_X509_CRL(nullptr, &cursor, static_cast<long>(issued.der.size()))};
    ASSERT_TRUE(crl);
    const pki::Asn1IntegerPtr base{ASN1_INTEGER_new()};
    ASSERT_EQ(ASN1_INTEGER_set(base.get(), 1), 1);
    ASSERT_EQ(X509_CRL_add1_ext_i2d(crl.get(), NID_delta_crl, base.get(), 1, X509V3_ADD_DEFAULT),
              1);
    const pki::EvpPkeyPtr key{pki::key_for_signing(read_key(root_->private_key_pem).get())};
    ASSERT_TRUE(key);
    ASSERT_GT(X509_CRL_sign(crl.get(), key.get(), EVP_sha256()), 0);
    unsigned char* out = nullptr;
    const int length = i2d_X509_CRL(crl.get(), &out);
    ASSERT_GT(length, 0);
    const std::string delta(reinterpret_cast<char*>(out), static_cast<std::size_t>(length));
    OPENSSL_free(out);
    EXPECT_EQ(refusal([&] { pki::import_crl(delta, root_->certificate, now_); }),
              name(PkiErrorReason::kCrlUnsupported));
}

TEST_F(PkiCrl, IssueRefusesBadInput) {
    const auto next = now_ + std::chrono::days{1};
    for (const std::string& serial : {std::string{}, std::string("-1"), std::string("12a"),
                                      std::string("0x10"), std::string(49, '9')}) {
        SCOPED_TRACE(serial);
        EXPECT_EQ(refusal([&] {
                      pki::issue_crl(*root_, {{serial, now_}}, now_, next);
                  }),
                  name(PkiErrorReason::kInvalidSerial));
    }
    EXPECT_EQ(refusal([&] { pki::issue_crl(*root_, {}, now_, now_); }),
              name(PkiErrorReason::kInvalidValidity));
    const CertifiedKey device = pki::create_device_certificate(*root_, "dev", {}, now_);
    EXPECT_EQ(refusal([&] { pki::issue_crl(device, {}, now_, next); }),
              name(PkiErrorReason::kCaUnusable));
}

TEST_F(PkiCrl, RevokedSerialFromImportedCrlIsRefusedByTheTrustSnapshot) {
    const CertifiedKey revoked = pki::create_device_certificate(*root_, "device-r", {}, now_);
    const CertifiedKey kept = pki::create_device_certificate(*root_, "device-k", {}, now_);
    const pki::IssuedCrl issued = pki::issue_crl(
        *root_, {{revoked.certificate.facts().serial, now_}}, now_, now_ + std::chrono::days{7});
    const pki::ImportedCrl imported = pki::import_crl(issued.pem, root_->certificate, now_);

    pki::TrustInputs inputs;
    inputs.cas.push_back(registered(root_->certificate, 3, 5));
    inputs.revoked_serials = pki::revoked_serials(imported);
    ASSERT_EQ(inputs.revoked_serials.size(), 1U);
    EXPECT_EQ(inputs.revoked_serials[0].issuer_ski, root_->certificate.facts().ski);
    const auto snapshot = pki::TrustSnapshot::build(inputs);
    EXPECT_EQ(snapshot->verify(revoked.certificate.get(), nullptr, now_).status,
              pki::VerifyStatus::kRevoked);
    EXPECT_EQ(snapshot->verify(kept.certificate.get(), nullptr, now_).status,
              pki::VerifyStatus::kOk);
}

TEST_F(PkiCrl, ImportsTheCrlOfACustomCa) {
    // A CA the hub does not manage (the test PKI's), publishing its own CRL.
    const auto custom = TestPki::make_root("Customer Root");
    const auto revoked = custom.issue_leaf({.cn = "device-a", .eku = Eku::kClientAuth});
    const auto kept = custom.issue_leaf({.cn = "device-b", .eku = Eku::kClientAuth});
    const CertifiedKey publisher{custom.certificate(), custom.key_pem()};
    const pki::IssuedCrl published = pki::issue_crl(publisher, {{revoked.facts().serial, now_}},
                                                    now_ - 1h, now_ + std::chrono::days{7});

    const pki::ImportedCrl imported =
        pki::import_crl(crypto::base64(published.pem), custom.certificate(), now_);
    ASSERT_EQ(imported.revoked.size(), 1U);
    EXPECT_EQ(imported.revoked[0].serial, revoked.facts().serial);

    pki::TrustInputs inputs;
    inputs.cas.push_back(custom.registered(8, 2));
    inputs.revoked_serials = pki::revoked_serials(imported);
    const auto snapshot = pki::TrustSnapshot::build(inputs);
    EXPECT_EQ(snapshot->verify(revoked.x509(), nullptr, now_).status, pki::VerifyStatus::kRevoked);
    EXPECT_EQ(snapshot->verify(kept.x509(), nullptr, now_).status, pki::VerifyStatus::kOk);

    // The hub's own root cannot vouch for the customer's CRL.
    EXPECT_EQ(refusal([&] { pki::import_crl(published.pem, root_->certificate, now_); }),
              name(PkiErrorReason::kCrlIssuerMismatch));
}

}  // namespace
}  // namespace otahub
