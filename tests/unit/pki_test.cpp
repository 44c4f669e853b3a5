#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <array>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "server/common/api_error.hpp"
#include "server/domain/pki/ca_registration.hpp"
#include "server/domain/pki/certificate.hpp"
#include "server/domain/pki/ec_keys.hpp"
#include "server/domain/pki/trust_store.hpp"
#include "tests/support/test_pki.hpp"

namespace otahub {
namespace test_support {

// Readable parameter values in gtest failure messages.
void PrintTo(TlsVersion version, std::ostream* out) {
    *out << (version == TlsVersion::kTls12 ? "TLS 1.2" : "TLS 1.3");
}

}  // namespace test_support
namespace {

using namespace std::chrono_literals;
using pki::CaRegistrationError;
using pki::Certificate;
using pki::CertificateFacts;
using pki::TrustInputs;
using pki::TrustSnapshot;
using pki::VerifyStatus;
using test_support::Clock;
using test_support::Eku;
using test_support::TestCa;
using test_support::TestCert;
using test_support::TestPki;
using test_support::TlsVersion;

Clock::time_point utc(int y, unsigned m, unsigned d, int hour = 0, int minute = 0) {
    return Clock::time_point{std::chrono::sys_days{std::chrono::year{y} / m / d} +
                             std::chrono::hours{hour} + std::chrono::minutes{minute}};
}

std::string base64_of(const std::vector<std::uint8_t>& bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
    const int length = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes.data(),
                                       static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(length));
    return out;
}

std::string base64_of(const std::string& text) {
    return base64_of(std::vector<std::uint8_t>(text.begin(), text.end()));
}

std::string sha1_hex(const std::vector<std::uint8_t>& data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha1(), nullptr);
    return pki::to_hex_upper({digest.data(), length});
}

// NervesHub's own test fixtures (nerves_hub_web test/fixtures/ssl): the device certificate of
// the worked example in nerveshub.md §8 and the device root CA (itself an intermediate) above it.
constexpr std::string_view kNervesHubDevice1234 = R"(-----BEGIN CERTIFICATE-----
MIIB1TCCAXugAwIBAgIVALcm8JEi1515feKwPkxZcw608NKxMAoGCCqGSM49BAMC
MDcxEjAQBgNVBAoMCU5lcnZlc0h1YjEhMB8GA1UEAwwYTmVydmVzSHViIERldmlj
ZSBSb290IENBMCAXDTIyMTIxNTIwMDAwMFoYDzIwNTIxMjE1MjEwMDAwWjAnMQ8w
DQYDVQQKDAZqb25qb24xFDASBgNVBAMMC2RldmljZS0xMjM0MFkwEwYHKoZIzj0C
AQYIKoZIzj0DAQcDQgAEy5JVwfwEDb5FbE8FAO4AlmHCYZQ8BdzktReVlhP6z9wu
++kKp63tj4GotzYoggVf0yzgErgc//qXqM28m3lz6qNyMHAwCQYDVR0TBAIwADAO
BgNVHQ8BAf8EBAMCBaAwEwYDVR0lBAwwCgYIKwYBBQUHAwIwHQYDVR0OBBYEFPoW
vEac9ZmsUpynbzO9NRGCZcNyMB8GA1UdIwQYMBaAFMqnD17uZuXJklUfWZ905hzB
jQ9+MAoGCCqGSM49BAMCA0gAMEUCIQC1CIzHeyzBAWfLOJ2sW9URdg5RVuL268BY
TW5VB2GcnwIgHFOpjq/L4t92KQCoZK4aXlIHetlaxyPgGFvgwnMmqAw=
-----END CERTIFICATE-----
)";

constexpr std::string_view kNervesHubDeviceRootCa = R"(-----BEGIN CERTIFICATE-----
MIIBzzCCAXagAwIBAgIVAILE+ubwOReM8S+8ONiNz7/ngkFOMAoGCCqGSM49BAMC
MDAxEjAQBgNVBAoMCU5lcnZlc0h1YjEaMBgGA1UEAwwRTmVydmVzSHViIFJvb3Qg
Q0EwHhcNMjIxMjE1MjAwMDAwWhcNMzIxMjE1MjEwMDAwWjA3MRIwEAYDVQQKDAlO
ZXJ2ZXNIdWIxITAfBgNVBAMMGE5lcnZlc0h1YiBEZXZpY2UgUm9vdCBDQTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABHgXL5I7o6ixfSjtsNDJE2RpCjyMOD5BoBt6
kIlce6JIGp+6vZf0SKQ/QiScvjvd8qyQpLCv2FUozvwZGXqtypKjZjBkMA4GA1Ud
DwEB/wQEAwIBhjAdBgNVHQ4EFgQUyqcPXu5m5cmSVR9Zn3TmHMGND34wHwYDVR0j
BBgwFoAUnodE+D5eK3KYAZqskw+OpnJUMGQwEgYDVR0TAQH/BAgwBgEB/wIBADAK
BggqhkjOPQQDAgNHADBEAiBF25I26FmFDTggDv37MgGiXQWQVObXfhgg57T8HNWN
uAIgG3grbN94gvLjuq5raZM0oyW+8s44Ns4oHYDUGPIsofo=
-----END CERTIFICATE-----
)";

// ---- Certificate facts ----

TEST(PkiCertificate, NervesHubFixtureMatchesWorkedExample) {
    const auto cert = Certificate::parse(kNervesHubDevice1234);
    ASSERT_TRUE(cert);
    const CertificateFacts& facts = cert->facts();
    EXPECT_EQ(facts.serial, "1045613695714186912254463319762296380650727461553");
    EXPECT_EQ(facts.serial_hex, "B726F09122D79D797DE2B03E4C59730EB4F0D2B1");
    EXPECT_EQ(facts.fingerprint, "3017332607368673A2EF0E2B1BF832A61A653F5E");
    EXPECT_EQ(facts.public_key_fingerprint, "FA16BC469CF599AC529CA76F33BD35118265C372");
    EXPECT_EQ(facts.aki, "CAA70F5EEE66E5C992551F599F74E61CC18D0F7E");
    EXPECT_EQ(facts.ski, "FA16BC469CF599AC529CA76F33BD35118265C372");
    EXPECT_EQ(facts.common_name, "device-1234");
    EXPECT_EQ(facts.subject, "CN=device-1234,O=jonjon");
    EXPECT_EQ(facts.issuer, "CN=NervesHub Device Root CA,O=NervesHub");
    EXPECT_EQ(facts.not_before, utc(2022, 12, 15, 20));
    EXPECT_EQ(facts.not_after, utc(2052, 12, 15, 21));
    EXPECT_FALSE(facts.is_ca);
    EXPECT_TRUE(facts.has_eku);
    EXPECT_TRUE(facts.eku_client_auth);
    EXPECT_FALSE(facts.eku_server_auth);
    EXPECT_TRUE(facts.san_uris.empty());
    EXPECT_EQ(sha1_hex(facts.der), facts.fingerprint);

    const auto root = Certificate::parse(kNervesHubDeviceRootCa);
    ASSERT_TRUE(root);
    EXPECT_TRUE(root->facts().is_ca);
    EXPECT_EQ(root->facts().ski, facts.aki);
    EXPECT_EQ(root->facts().common_name, "NervesHub Device Root CA");
}

TEST(PkiCertificate, GeneratedCertificateFacts) {
    const auto root = TestPki::make_root("Device Root");
    const auto not_before = utc(2025, 1, 2, 3, 4);
    const auto not_after = utc(2027, 5, 6, 7, 8);
    const auto leaf = root.issue_leaf({.cn = "device-1",
                                       .serial = "123456789012345678901234567890",
                                       .eku = Eku::kClientAuth,
                                       .not_before = not_before,
                                       .not_after = not_after,
                                       .san_uris = {"urn:example:a", "urn:example:b"},
                                       .san_dns = {"device-1.local"},
                                       .organization = "Acme"});
    const CertificateFacts facts = leaf.facts();
    EXPECT_EQ(facts.serial, "123456789012345678901234567890");
    EXPECT_EQ(facts.serial_hex, "018EE90FF6C373E0EE4E3F0AD2");  // whole bytes, as openssl prints
    EXPECT_EQ(facts.common_name, "device-1");
    EXPECT_EQ(facts.subject, "CN=device-1,O=Acme");
    EXPECT_EQ(facts.issuer, "CN=Device Root");
    EXPECT_EQ(facts.not_before, not_before);
    EXPECT_EQ(facts.not_after, not_after);
    EXPECT_FALSE(facts.is_ca);
    EXPECT_TRUE(facts.has_eku);
    EXPECT_TRUE(facts.eku_client_auth);
    EXPECT_EQ(facts.san_uris, (std::vector<std::string>{"urn:example:a", "urn:example:b"}));
    EXPECT_EQ(facts.san_dns, (std::vector<std::string>{"device-1.local"}));
    EXPECT_EQ(facts.der, leaf.der());
    EXPECT_EQ(facts.fingerprint, sha1_hex(leaf.der()));
    EXPECT_EQ(facts.fingerprint.size(), 40U);
    EXPECT_EQ(facts.ski.size(), 40U);
    EXPECT_EQ(facts.aki, root.facts().ski);
    EXPECT_TRUE(facts.valid_at(utc(2026, 1, 1)));
    EXPECT_FALSE(facts.valid_at(utc(2028, 1, 1)));

    const CertificateFacts root_facts = root.facts();
    EXPECT_TRUE(root_facts.is_ca);
    EXPECT_FALSE(root_facts.has_eku);
    EXPECT_EQ(root_facts.aki, root_facts.ski);
}

TEST(PkiCertificate, EkuAndKeyIdentifierVariants) {
    const auto root = TestPki::make_root("Device Root");
    const auto server_only = root.issue_leaf({.eku = Eku::kServerAuth}).facts();
    EXPECT_TRUE(server_only.has_eku);
    EXPECT_FALSE(server_only.eku_client_auth);
    EXPECT_TRUE(server_only.eku_server_auth);
    const auto no_eku = root.issue_leaf({.eku = Eku::kNone, .ski = false, .aki = false}).facts();
    EXPECT_FALSE(no_eku.has_eku);
    EXPECT_FALSE(no_eku.eku_client_auth);
    EXPECT_TRUE(no_eku.ski.empty());
    EXPECT_TRUE(no_eku.aki.empty());
}

TEST(PkiCertificate, PublicKeyFingerprintFollowsTheKey) {
    const auto root = TestPki::make_root("Device Root");
    const auto first = root.issue_leaf({.cn = "device-1"});
    const auto rotated = root.issue_leaf({.cn = "device-1", .key = first.key()});
    const auto other_key = root.issue_leaf({.cn = "device-1"});
    EXPECT_NE(first.facts().fingerprint, rotated.facts().fingerprint);
    EXPECT_EQ(first.facts().public_key_fingerprint, rotated.facts().public_key_fingerprint);
    EXPECT_NE(first.facts().public_key_fingerprint, other_key.facts().public_key_fingerprint);
}

TEST(PkiCertificate, ParsesPemDerAndBase64Forms) {
    const auto leaf = TestPki::make_root("Device Root").issue_leaf();
    const std::string expected = leaf.facts().fingerprint;
    const std::vector<std::uint8_t> der = leaf.der();
    const std::string der_text(der.begin(), der.end());
    const std::vector<std::string> inputs = {
        leaf.cert_pem(),
        "\n  " + leaf.cert_pem() + "\n\n",
        "Bag Attributes: whatever\n" + leaf.cert_pem(),
        leaf.cert_pem_base64(),
        base64_of(leaf.cert_pem()) + "\n",
        der_text,
        base64_of(der),
        leaf.fullchain_pem() + leaf.key_pem(),
    };
    for (const auto& input : inputs) {
        const auto parsed = Certificate::parse(input);
        ASSERT_TRUE(parsed) << input;
        EXPECT_EQ(parsed->facts().fingerprint, expected);
    }
    const auto from_der = Certificate::from_der(der);
    ASSERT_TRUE(from_der);
    EXPECT_EQ(from_der->facts().fingerprint, expected);
    ASSERT_TRUE(Certificate::parse(from_der->pem()));
    EXPECT_EQ(Certificate::parse(from_der->pem())->facts().der, der);

    const Certificate copy = *from_der;  // copies share the X509 safely
    EXPECT_EQ(X509_cmp(copy.get(), from_der->get()), 0);
}

TEST(PkiCertificate, RefusesWhatIsNotACertificate) {
    const auto leaf = TestPki::make_root("Device Root").issue_leaf();
    std::vector<std::uint8_t> der = leaf.der();
    const std::string pem = leaf.cert_pem();
    std::string truncated_pem = pem;
    truncated_pem.erase(truncated_pem.size() / 2, 40);
    std::vector<std::uint8_t> trailing = der;
    trailing.push_back(0);
    const std::vector<std::uint8_t> truncated_der(der.begin(), der.end() - 10);
    std::string encrypted_header = pem;
    encrypted_header.insert(pem.find('\n') + 1,
                            "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,"
                            "00112233445566778899AABBCCDDEEFF\n\n");
    const std::vector<std::string> inputs = {
        "",
        "   \n",
        "hello",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\n",
        truncated_pem,
        encrypted_header,  // must be refused without prompting for a password
        leaf.key_pem(),
        std::string(trailing.begin(), trailing.end()),
        std::string(truncated_der.begin(), truncated_der.end()),
        base64_of(truncated_der),
        base64_of(std::string("not a certificate")),
        "Zm9v!!",
        std::string(pki::kMaxCertificateInputBytes + 1, 'A'),
        std::string(1, '\0'),
        std::string("0\x82\xff\xff", 4),
    };
    for (const auto& input : inputs) {
        EXPECT_FALSE(Certificate::parse(input)) << input.substr(0, 80);
    }
    EXPECT_FALSE(Certificate::from_der({}));
    EXPECT_FALSE(Certificate::from_pem(""));
    EXPECT_FALSE(Certificate::from_x509(nullptr));
    EXPECT_FALSE(pki::read_certificate_facts(nullptr));
    EXPECT_EQ(ERR_peek_error(), 0UL) << "parsing must leave OpenSSL's error queue clean";
}

TEST(PkiCertificate, ClampsValidityBeyondTheClockRange) {
    const auto root = TestPki::make_root("Device Root");
    const auto leaf = root.issue_leaf();
    pki::X509Ptr forever{X509_dup(leaf.x509())};
    ASSERT_TRUE(forever);
    ASSERT_EQ(ASN1_TIME_set_string(X509_getm_notAfter(forever.get()), "99991231235959Z"), 1);
    const pki::EvpPkeyPtr key{pki::key_for_signing(root.key().get())};
    ASSERT_GT(X509_sign(forever.get(), key.get(), EVP_sha256()), 0);
    const auto cert = Certificate::from_x509(std::move(forever));
    ASSERT_TRUE(cert);
    EXPECT_EQ(cert->facts().not_after, Clock::time_point::max());
    EXPECT_TRUE(cert->facts().valid_at(utc(2200, 1, 1)));
}

TEST(PkiCertificate, ParsesChains) {
    const auto root = TestPki::make_root("Device Root");
    const auto intermediate = root.issue_intermediate("Device Intermediate");
    const auto leaf = intermediate.issue_leaf();
    const auto chain = pki::parse_certificate_chain(leaf.fullchain_pem());
    ASSERT_EQ(chain.size(), 2U);
    EXPECT_EQ(chain[0].facts().common_name, "device-1");
    EXPECT_EQ(chain[1].facts().common_name, "Device Intermediate");
    EXPECT_EQ(leaf.chain_pem(), intermediate.cert_pem());
    EXPECT_TRUE(pki::parse_certificate_chain("").empty());
    EXPECT_TRUE(pki::parse_certificate_chain(leaf.cert_pem() + leaf.key_pem()).empty());
    EXPECT_TRUE(
        pki::parse_certificate_chain(
            leaf.cert_pem() + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .empty());
}

TEST(PkiCertificate, Base64Decoding) {
    const auto text = [](std::string_view in) -> std::optional<std::string> {
        auto bytes = pki::decode_base64(in);
        if (!bytes) {
            return std::nullopt;
        }
        return std::string(bytes->begin(), bytes->end());
    };
    EXPECT_EQ(text(""), "");
    EXPECT_EQ(text("Zg=="), "f");
    EXPECT_EQ(text("Zm8="), "fo");
    EXPECT_EQ(text("Zm9v"), "foo");
    EXPECT_EQ(text("Zm9vYg=="), "foob");
    EXPECT_EQ(text("Zm9v\r\nYmFy\n"), "foobar");
    EXPECT_EQ(text("Zm9vYg"), "foob");  // unpadded is accepted
    EXPECT_FALSE(text("Zg="));
    EXPECT_FALSE(text("Zh=="));  // non-zero leftover bits
    EXPECT_FALSE(text("Zm9vY"));
    EXPECT_FALSE(text("Zm=9v"));
    EXPECT_FALSE(text("Zm9v-_"));
}

// ---- CA registration ----

class PkiCaRegistration : public ::testing::Test {
  protected:
    const Clock::time_point now_ = Clock::now();
    const std::string token_ = "SFMyNTY.g2gDbQAAAAUxLW9yZ2EAAAAA.c2lnbmF0dXJl";
    const TestCa ca_ = TestPki::make_root("Acme Device CA", {.organization = "Acme"});

    pki::CaRegistrationResult validate(const std::string& ca_pem, const std::string& verification) {
        return pki::validate_ca_registration(ca_pem, verification, token_, now_);
    }

    static void expect_refused(const pki::CaRegistrationResult& result, CaRegistrationError reason,
                               std::string_view field) {
        EXPECT_FALSE(result.ok());
        EXPECT_FALSE(result.ca);
        ASSERT_TRUE(result.failure);
        EXPECT_EQ(result.failure->reason, reason) << pki::to_string(result.failure->reason);
        EXPECT_EQ(result.failure->field, field);
        EXPECT_FALSE(result.failure->message.empty());
    }
};

TEST_F(PkiCaRegistration, AcceptsTokenInSanUri) {
    const auto result = validate(ca_.cert_pem(), ca_.issue_verification_cert(token_).cert_pem());
    ASSERT_TRUE(result.ok()) << result.failure->message;
    EXPECT_FALSE(result.failure);
    EXPECT_EQ(result.token_form, pki::TokenForm::kSanUri);
    EXPECT_EQ(result.ca->facts().fingerprint, ca_.facts().fingerprint);
    EXPECT_EQ(result.ca->facts().ski, ca_.facts().ski);
    EXPECT_EQ(result.ca->facts().serial, ca_.facts().serial);
}

TEST_F(PkiCaRegistration, AcceptsTokenAsCommonName) {
    const auto verification =
        ca_.issue_verification_cert(token_, test_support::TokenPlacement::kCommonName);
    const auto result = validate(ca_.cert_pem(), verification.cert_pem());
    ASSERT_TRUE(result.ok()) << result.failure->message;
    EXPECT_EQ(result.token_form, pki::TokenForm::kCommonName);
}

TEST_F(PkiCaRegistration, AcceptsBase64OfPemAsTheApiSendsIt) {
    const auto result =
        validate(ca_.cert_pem_base64(), ca_.issue_verification_cert(token_).cert_pem_base64());
    EXPECT_TRUE(result.ok());
}

TEST_F(PkiCaRegistration, AcceptsAnIntermediateCa) {
    const auto intermediate = ca_.issue_intermediate("Acme Line 2");
    const auto result =
        validate(intermediate.cert_pem(), intermediate.issue_verification_cert(token_).cert_pem());
    EXPECT_TRUE(result.ok());
}

TEST_F(PkiCaRegistration, RefusesCaThatIsNotPem) {
    expect_refused(validate("not a certificate", ca_.issue_verification_cert(token_).cert_pem()),
                   CaRegistrationError::kCaUnreadable, "cert");
    expect_refused(validate("", ca_.issue_verification_cert(token_).cert_pem()),
                   CaRegistrationError::kCaUnreadable, "cert");
}

TEST_F(PkiCaRegistration, RefusesCertificateThatIsNotACa) {
    const auto leaf = ca_.issue_leaf({.cn = "device-1"});
    expect_refused(validate(leaf.cert_pem(), ca_.issue_verification_cert(token_).cert_pem()),
                   CaRegistrationError::kNotCa, "cert");
}

TEST_F(PkiCaRegistration, RefusesCaWithoutSubjectKeyIdentifier) {
    const auto no_ski = TestPki::make_root("No SKI CA", {.ski = false, .aki = false});
    expect_refused(validate(no_ski.cert_pem(), no_ski.issue_verification_cert(token_).cert_pem()),
                   CaRegistrationError::kNoSubjectKeyIdentifier, "cert");
}

TEST_F(PkiCaRegistration, RefusesExpiredCa) {
    const auto expired =
        TestPki::make_root("Old CA", {.not_before = now_ - 24h * 800, .not_after = now_ - 24h});
    expect_refused(validate(expired.cert_pem(), expired.issue_verification_cert(token_).cert_pem()),
                   CaRegistrationError::kCaExpired, "cert");
}

TEST_F(PkiCaRegistration, RefusesUnreadableVerificationCertificate) {
    expect_refused(validate(ca_.cert_pem(), "garbage"),
                   CaRegistrationError::kVerificationUnreadable, "verification_cert");
}

TEST_F(PkiCaRegistration, RefusesExpiredVerificationCertificate) {
    pki::X509Ptr expired{X509_dup(ca_.issue_verification_cert(token_).x509())};
    ASSERT_TRUE(expired);
    ASSERT_TRUE(ASN1_TIME_set(X509_getm_notAfter(expired.get()), Clock::to_time_t(now_ - 1h)));
    const pki::EvpPkeyPtr key{pki::key_for_signing(ca_.key().get())};
    ASSERT_GT(X509_sign(expired.get(), key.get(), EVP_sha256()), 0);
    const auto expired_pem = Certificate::from_x509(std::move(expired))->pem();
    expect_refused(validate(ca_.cert_pem(), expired_pem), CaRegistrationError::kVerificationExpired,
                   "verification_cert");
}

TEST_F(PkiCaRegistration, RefusesVerificationSignedByAnotherKey) {
    // Same subject name, different key: only the signature tells them apart.
    const auto impostor = TestPki::make_root("Acme Device CA", {.organization = "Acme"});
    expect_refused(validate(ca_.cert_pem(), impostor.issue_verification_cert(token_).cert_pem()),
                   CaRegistrationError::kVerificationNotSignedByCa, "verification_cert");
    const auto other = TestPki::make_root("Other CA");
    expect_refused(validate(ca_.cert_pem(), other.issue_verification_cert(token_).cert_pem()),
                   CaRegistrationError::kVerificationNotSignedByCa, "verification_cert");
    // A self-signed verification certificate proves nothing.
    const auto self_signed = TestPki::make_self_signed_leaf({.cn = token_});
    expect_refused(validate(ca_.cert_pem(), self_signed.cert_pem()),
                   CaRegistrationError::kVerificationNotSignedByCa, "verification_cert");
}

TEST_F(PkiCaRegistration, RefusesVerificationSignedByTheKeyUnderAnotherName) {
    const auto same_key = TestPki::make_root("Renamed CA", {.key = ca_.key()});
    expect_refused(validate(ca_.cert_pem(), same_key.issue_verification_cert(token_).cert_pem()),
                   CaRegistrationError::kVerificationNotSignedByCa, "verification_cert");
}

TEST_F(PkiCaRegistration, RefusesWrongToken) {
    expect_refused(
        validate(ca_.cert_pem(), ca_.issue_verification_cert("another-token").cert_pem()),
        CaRegistrationError::kTokenMismatch, "verification_cert");
    expect_refused(
        validate(ca_.cert_pem(), ca_.issue_verification_cert(
                                        "another-token", test_support::TokenPlacement::kCommonName)
                                     .cert_pem()),
        CaRegistrationError::kTokenMismatch, "verification_cert");
    // A prefix or extension of the token is not the token.
    expect_refused(validate(ca_.cert_pem(), ca_.issue_verification_cert(token_ + "x").cert_pem()),
                   CaRegistrationError::kTokenMismatch, "verification_cert");
    expect_refused(
        validate(ca_.cert_pem(),
                 ca_.issue_verification_cert(token_.substr(0, token_.size() - 1)).cert_pem()),
        CaRegistrationError::kTokenMismatch, "verification_cert");
}

TEST_F(PkiCaRegistration, RefusesMissingToken) {
    const auto bare = ca_.issue_leaf({.cn = "", .eku = Eku::kNone});
    expect_refused(validate(ca_.cert_pem(), bare.cert_pem()), CaRegistrationError::kTokenMissing,
                   "verification_cert");
    const auto other_uri = ca_.issue_leaf({.cn = "", .san_uris = {"urn:example:other"}});
    expect_refused(validate(ca_.cert_pem(), other_uri.cert_pem()),
                   CaRegistrationError::kTokenMissing, "verification_cert");
}

TEST_F(PkiCaRegistration, EmptyExpectedTokenNeverMatches) {
    const auto empty_uri = ca_.issue_leaf({.cn = "", .san_uris = {"urn:nerveshub:verify:"}});
    const auto result =
        pki::validate_ca_registration(ca_.cert_pem(), empty_uri.cert_pem(), "", now_);
    expect_refused(result, CaRegistrationError::kTokenMismatch, "verification_cert");
}

TEST_F(PkiCaRegistration, FailureBecomesA422WithTheField) {
    const auto result = validate(ca_.issue_leaf().cert_pem(), "");
    ASSERT_TRUE(result.failure);
    const ApiError error = pki::to_api_error(*result.failure);
    EXPECT_EQ(error.code(), ErrorCode::kUnprocessable);
    EXPECT_EQ(http_status(error.code()), 422);
    EXPECT_EQ(error.fields()["cert"][0], result.failure->message);
}

// ---- Trust snapshot, without TLS ----

TEST(PkiTrustSnapshot, EmptySnapshotTrustsNothing) {
    const auto leaf = TestPki::make_root("Device Root").issue_leaf();
    const auto result = TrustSnapshot::empty()->verify(leaf.x509(), nullptr, Clock::now());
    EXPECT_EQ(result.status, VerifyStatus::kUnknownCa);
    EXPECT_EQ(result.x509_error, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
    ASSERT_TRUE(result.leaf);
    EXPECT_EQ(result.leaf->common_name, "device-1");
    EXPECT_EQ(TrustSnapshot::empty()->verify(nullptr, nullptr, Clock::now()).status,
              VerifyStatus::kInvalidCertificate);
}

TEST(PkiTrustSnapshot, VerifiesAtTheInjectedTime) {
    const auto root = TestPki::make_root(
        "Device Root", {.not_before = utc(2029, 1, 1), .not_after = utc(2040, 1, 1)});
    const auto leaf =
        root.issue_leaf({.not_before = utc(2030, 1, 1), .not_after = utc(2031, 1, 1)});
    const auto snapshot = TrustSnapshot::build({.cas = {root.registered(7, 70)}});
    EXPECT_EQ(snapshot->trusted_ca_count(), 1U);

    const auto ok = snapshot->verify(leaf.x509(), nullptr, utc(2030, 6, 1));
    ASSERT_TRUE(ok.ok()) << pki::to_string(ok.status);
    ASSERT_TRUE(ok.ca);
    EXPECT_EQ(ok.ca->id, 7);
    EXPECT_EQ(ok.ca->org_id, 70);
    EXPECT_EQ(ok.ca->depth, 1);
    EXPECT_EQ(ok.ca->ski, root.facts().ski);
    EXPECT_EQ(ok.x509_error, X509_V_OK);

    const auto early = snapshot->verify(leaf.x509(), nullptr, utc(2029, 6, 1));
    EXPECT_EQ(early.status, VerifyStatus::kNotYetValid);
    EXPECT_EQ(early.x509_error, X509_V_ERR_CERT_NOT_YET_VALID);
    EXPECT_EQ(early.error_depth, 0);
    const auto late = snapshot->verify(leaf.x509(), nullptr, utc(2032, 1, 1));
    EXPECT_EQ(late.status, VerifyStatus::kExpired);
    EXPECT_EQ(late.x509_error, X509_V_ERR_CERT_HAS_EXPIRED);
}

TEST(PkiTrustSnapshot, NervesHubFixtureAnchorsAtTheRegisteredDeviceRoot) {
    // "NervesHub Device Root CA" is itself issued by "NervesHub Root CA", which is not
    // registered: the registered intermediate must anchor on its own (partial chain).
    const auto device = Certificate::parse(kNervesHubDevice1234);
    const auto device_root = Certificate::parse(kNervesHubDeviceRootCa);
    ASSERT_TRUE(device && device_root);
    pki::RegisteredCa ca{.id = 3, .org_id = 30, .der = device_root->facts().der};
    auto snapshot = TrustSnapshot::build({.cas = {ca}});

    const auto ok = snapshot->verify(device->get(), nullptr, utc(2024, 1, 1));
    ASSERT_TRUE(ok.ok()) << pki::to_string(ok.status);
    EXPECT_EQ(ok.ca->id, 3);
    EXPECT_EQ(ok.ca->ski, "CAA70F5EEE66E5C992551F599F74E61CC18D0F7E");
    EXPECT_EQ(ok.leaf->serial, "1045613695714186912254463319762296380650727461553");

    // The device root expires in 2032: refused while CA expiry is checked, accepted when not
    // (NervesHub's `check_expiration: false`).
    const auto expired_ca = snapshot->verify(device->get(), nullptr, utc(2033, 1, 1));
    EXPECT_EQ(expired_ca.status, VerifyStatus::kExpired);
    EXPECT_EQ(expired_ca.error_depth, 1);
    ca.check_expiration = false;
    snapshot = TrustSnapshot::build({.cas = {ca}});
    EXPECT_TRUE(snapshot->verify(device->get(), nullptr, utc(2033, 1, 1)).ok());
}

TEST(PkiTrustSnapshot, SkipsUnreadableCas) {
    const auto root = TestPki::make_root("Device Root");
    auto broken = root.registered(2, 20);
    broken.der.resize(broken.der.size() / 2);
    pki::RegisteredCa empty{.id = 3, .org_id = 30};
    const auto snapshot = TrustSnapshot::build({.cas = {broken, empty, root.registered(1, 10)}});
    EXPECT_EQ(snapshot->trusted_ca_count(), 1U);
    EXPECT_EQ(snapshot->skipped_ca_ids(), (std::vector<std::int64_t>{2, 3}));
    EXPECT_TRUE(snapshot->verify(root.issue_leaf().x509(), nullptr, Clock::now()).ok());
}

TEST(PkiTrustSnapshot, RevocationInputsAreNormalized) {
    const auto root = TestPki::make_root("Device Root");
    const auto leaf = root.issue_leaf({.serial = "42"});
    std::string colons;
    for (std::size_t i = 0; i < leaf.facts().fingerprint.size(); i += 2) {
        colons += (i == 0 ? "" : ":") + leaf.facts().fingerprint.substr(i, 2);
    }
    for (auto& c : colons) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    const auto by_fingerprint =
        TrustSnapshot::build({.cas = {root.registered(1, 10)}, .revoked_fingerprints = {colons}});
    EXPECT_EQ(by_fingerprint->verify(leaf.x509(), nullptr, Clock::now()).status,
              VerifyStatus::kRevoked);
    const auto by_serial = TrustSnapshot::build(
        {.cas = {root.registered(1, 10)},
         .revoked_serials = {{.issuer_ski = root.facts().ski, .serial = "0042"}}});
    EXPECT_EQ(by_serial->verify(leaf.x509(), nullptr, Clock::now()).status, VerifyStatus::kRevoked);
    const auto other_issuer =
        TrustSnapshot::build({.cas = {root.registered(1, 10)},
                              .revoked_serials = {{.issuer_ski = "00112233", .serial = "42"}}});
    EXPECT_TRUE(other_issuer->verify(leaf.x509(), nullptr, Clock::now()).ok());
}

TEST(PkiTrustSnapshot, TrustStoreSwapsSnapshots) {
    const auto root = TestPki::make_root("Device Root");
    const auto leaf = root.issue_leaf();
    pki::TrustStore store;
    const auto before = store.current();
    EXPECT_EQ(before->verify(leaf.x509(), nullptr, Clock::now()).status, VerifyStatus::kUnknownCa);
    store.replace(TrustSnapshot::build({.cas = {root.registered(1, 10)}}));
    EXPECT_TRUE(store.provider()()->verify(leaf.x509(), nullptr, Clock::now()).ok());
    // A reader keeps the snapshot it took; null never replaces the current one.
    EXPECT_EQ(before->verify(leaf.x509(), nullptr, Clock::now()).status, VerifyStatus::kUnknownCa);
    store.replace(nullptr);
    EXPECT_TRUE(store.current()->verify(leaf.x509(), nullptr, Clock::now()).ok());
}

// ---- The TLS handshake matrix, in memory ----

class PkiHandshake : public ::testing::TestWithParam<TlsVersion> {
  protected:
    const TestCa server_root_ = TestPki::make_root("Hub Server Root");
    const TestCert server_cert_ = server_root_.issue_server_cert();
    const TestCa device_root_ = TestPki::make_root("Device Root", {.organization = "Org A"});
    pki::TrustStore store_;
    std::vector<pki::Refusal> refusals_;

    test_support::HandshakeOutcome connect(const TrustInputs& inputs, const TestCert* client,
                                           bool send_chain = true,
                                           pki::ClientVerificationOptions options = {}) {
        store_.replace(TrustSnapshot::build(inputs));
        return connect_with(store_.provider(), client, send_chain, std::move(options));
    }

    test_support::HandshakeOutcome connect_with(
        std::function<std::shared_ptr<const TrustSnapshot>()> provider, const TestCert* client,
        bool send_chain = true, pki::ClientVerificationOptions options = {}) {
        options.on_refusal = [this](const pki::Refusal& refusal) { refusals_.push_back(refusal); };
        auto server_ctx = test_support::make_server_ctx(server_cert_);
        pki::install_client_verification(server_ctx.get(), std::move(provider), std::move(options));
        auto client_ctx =
            test_support::make_client_ctx(GetParam(), server_root_, client, send_chain);
        return test_support::run_memory_handshake(server_ctx.get(), client_ctx.get());
    }

    static pki::VerifyResult expect_accepted(const test_support::HandshakeOutcome& outcome,
                                             std::int64_t ca_id, std::int64_t org_id) {
        EXPECT_TRUE(outcome.client_ok) << outcome.client_received_alert_text;
        EXPECT_TRUE(outcome.server_ok) << outcome.server_error;
        EXPECT_EQ(outcome.client_received_alert, -1) << outcome.client_received_alert_text;
        EXPECT_EQ(SSL_get_verify_result(outcome.server.get()), X509_V_OK);
        const auto result = pki::verification_result(outcome.server.get());
        EXPECT_TRUE(result);
        if (!result) {
            return {};
        }
        EXPECT_TRUE(result->ok()) << pki::to_string(result->status);
        EXPECT_TRUE(result->ca);
        if (result->ca) {
            EXPECT_EQ(result->ca->id, ca_id);
            EXPECT_EQ(result->ca->org_id, org_id);
        }
        // The verified chain is exposed to OpenSSL users too.
        EXPECT_NE(SSL_get0_verified_chain(outcome.server.get()), nullptr);
        return *result;
    }

    void expect_refused(const test_support::HandshakeOutcome& outcome, int alert,
                        VerifyStatus status) {
        EXPECT_FALSE(outcome.client_ok);
        EXPECT_FALSE(outcome.server_ok);
        EXPECT_EQ(outcome.client_received_alert, alert)
            << "client got \"" << outcome.client_received_alert_text << "\", expected \""
            << SSL_alert_desc_string_long(alert) << "\"";
        EXPECT_EQ(outcome.server_sent_alert, alert);
        EXPECT_EQ(outcome.server_error, "certificate verify failed");
        const auto result = pki::verification_result(outcome.server.get());
        ASSERT_TRUE(result);
        EXPECT_EQ(result->status, status) << pki::to_string(result->status);
        EXPECT_EQ(SSL_get_verify_result(outcome.server.get()), result->x509_error);
        ASSERT_EQ(refusals_.size(), 1U);
        EXPECT_EQ(refusals_.back().reason, status);
        EXPECT_EQ(refusals_.back().x509_error, result->x509_error);
    }
};

TEST_P(PkiHandshake, GoodLeafMatchesItsRegisteredRoot) {
    const auto leaf = device_root_.issue_leaf({.cn = "device-1"});
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)}}, &leaf);
    const auto result = expect_accepted(outcome, 1, 10);
    ASSERT_TRUE(result.leaf);
    EXPECT_EQ(result.leaf->common_name, "device-1");
    EXPECT_EQ(result.leaf->fingerprint, leaf.facts().fingerprint);
    EXPECT_TRUE(refusals_.empty());
}

TEST_P(PkiHandshake, TakingTheResultLeavesNothingOnTheConnection) {
    const auto leaf = device_root_.issue_leaf({.cn = "device-2"});
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)}}, &leaf);
    expect_accepted(outcome, 1, 10);
    const auto taken = pki::take_verification_result(outcome.server.get());
    ASSERT_TRUE(taken);
    EXPECT_TRUE(taken->ok());
    ASSERT_TRUE(taken->leaf);
    EXPECT_EQ(taken->leaf->common_name, "device-2");
    EXPECT_FALSE(taken->leaf->der.empty());
    // Gone from the SSL: neither a second take nor a read finds it.
    EXPECT_FALSE(pki::take_verification_result(outcome.server.get()));
    EXPECT_FALSE(pki::verification_result(outcome.server.get()));
    EXPECT_FALSE(pki::take_verification_result(nullptr));
}

TEST_P(PkiHandshake, LeafViaIntermediateSentByTheDevice) {
    const auto intermediate = device_root_.issue_intermediate("Device Intermediate");
    const auto leaf = intermediate.issue_leaf();
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)}}, &leaf);
    const auto result = expect_accepted(outcome, 1, 10);
    ASSERT_TRUE(result.ca);
    EXPECT_EQ(result.ca->depth, 2);
}

TEST_P(PkiHandshake, LeafViaUnsentIntermediateIsUnknownCa) {
    const auto leaf = device_root_.issue_intermediate("Device Intermediate").issue_leaf();
    const auto outcome =
        connect({.cas = {device_root_.registered(1, 10)}}, &leaf, /*send_chain=*/false);
    expect_refused(outcome, SSL_AD_UNKNOWN_CA, VerifyStatus::kUnknownCa);
}

TEST_P(PkiHandshake, RegisteredIntermediateIsATrustAnchor) {
    const auto intermediate = device_root_.issue_intermediate("Device Intermediate");
    const auto leaf = intermediate.issue_leaf();
    const auto outcome =
        connect({.cas = {intermediate.registered(2, 20)}}, &leaf, /*send_chain=*/false);
    expect_accepted(outcome, 2, 20);
}

TEST_P(PkiHandshake, DeepestRegisteredCaWinsAcrossOrgs) {
    const auto intermediate = device_root_.issue_intermediate("Device Intermediate");
    const auto leaf = intermediate.issue_leaf();
    const TrustInputs inputs{
        .cas = {device_root_.registered(1, 10), intermediate.registered(2, 20)}};
    expect_accepted(connect(inputs, &leaf), 2, 20);
    expect_accepted(connect(inputs, &leaf, /*send_chain=*/false), 2, 20);
}

TEST_P(PkiHandshake, ExpiredRootAboveARegisteredIntermediateDoesNotMatter) {
    const auto old_root = TestPki::make_root(
        "Old Root", {.not_before = Clock::now() - 24h * 800, .not_after = Clock::now() - 24h});
    const auto intermediate = old_root.issue_intermediate("Device Intermediate");
    const auto leaf = intermediate.issue_leaf();
    const auto outcome =
        connect({.cas = {old_root.registered(1, 10), intermediate.registered(2, 20)}}, &leaf);
    expect_accepted(outcome, 2, 20);
}

TEST_P(PkiHandshake, UnregisteredCaWithTheSameNamesIsUnknownCa) {
    const auto rogue_root = TestPki::make_root("Device Root", {.organization = "Org A"});
    const auto rogue = rogue_root.issue_leaf({.cn = "device-1"});
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)}}, &rogue);
    expect_refused(outcome, SSL_AD_UNKNOWN_CA, VerifyStatus::kUnknownCa);
    EXPECT_EQ(refusals_.back().common_name, "device-1");
    EXPECT_EQ(refusals_.back().serial, rogue.facts().serial);
    EXPECT_EQ(refusals_.back().fingerprint, rogue.facts().fingerprint);
    EXPECT_EQ(refusals_.back().issuer, "CN=Device Root,O=Org A");
}

TEST_P(PkiHandshake, ForgedIssuerWithoutKeyIdentifierFailsItsSignature) {
    const auto rogue_root = TestPki::make_root("Device Root", {.organization = "Org A"});
    const auto forged = rogue_root.issue_leaf({.cn = "device-1", .aki = false});
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)}}, &forged);
    expect_refused(outcome, SSL_AD_DECRYPT_ERROR, VerifyStatus::kBadSignature);
}

TEST_P(PkiHandshake, SelfSignedDeviceCertificateIsUnknownCa) {
    const auto self_signed = TestPki::make_self_signed_leaf({.cn = "device-1"});
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)}}, &self_signed);
    expect_refused(outcome, SSL_AD_UNKNOWN_CA, VerifyStatus::kUnknownCa);
}

TEST_P(PkiHandshake, ExpiredLeafIsCertificateExpired) {
    const auto leaf =
        device_root_.issue_leaf({.not_before = Clock::now() - 48h, .not_after = Clock::now() - 1h});
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)}}, &leaf);
    expect_refused(outcome, SSL_AD_CERTIFICATE_EXPIRED, VerifyStatus::kExpired);
}

TEST_P(PkiHandshake, NotYetValidLeafIsBadCertificate) {
    const auto leaf =
        device_root_.issue_leaf({.not_before = Clock::now() + 1h, .not_after = Clock::now() + 48h});
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)}}, &leaf);
    expect_refused(outcome, SSL_AD_BAD_CERTIFICATE, VerifyStatus::kNotYetValid);
}

TEST_P(PkiHandshake, ServerAuthOnlyEkuIsUnsupportedCertificate) {
    const auto leaf = device_root_.issue_leaf({.eku = Eku::kServerAuth});
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)}}, &leaf);
    expect_refused(outcome, SSL_AD_UNSUPPORTED_CERTIFICATE, VerifyStatus::kInvalidPurpose);
}

TEST_P(PkiHandshake, LeafWithoutEkuIsAccepted) {
    const auto leaf = device_root_.issue_leaf({.eku = Eku::kNone});
    expect_accepted(connect({.cas = {device_root_.registered(1, 10)}}, &leaf), 1, 10);
}

TEST_P(PkiHandshake, RevokedLeafIsCertificateRevoked) {
    const auto leaf = device_root_.issue_leaf();
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)},
                                  .revoked_fingerprints = {leaf.facts().fingerprint}},
                                 &leaf);
    expect_refused(outcome, SSL_AD_CERTIFICATE_REVOKED, VerifyStatus::kRevoked);
}

TEST_P(PkiHandshake, RevokedSerialOfTheIssuerIsCertificateRevoked) {
    const auto leaf = device_root_.issue_leaf();
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)},
                                  .revoked_serials = {{.issuer_ski = device_root_.facts().ski,
                                                       .serial = leaf.facts().serial}}},
                                 &leaf);
    expect_refused(outcome, SSL_AD_CERTIFICATE_REVOKED, VerifyStatus::kRevoked);
}

TEST_P(PkiHandshake, RefusalsReachTheStoreObserverWithTheCaTheChainReached) {
    std::vector<pki::Refusal> seen;
    store_.set_refusal_observer([&seen](const pki::Refusal& r) { seen.push_back(r); });
    const auto leaf = device_root_.issue_leaf();
    const auto revoked = connect({.cas = {device_root_.registered(7, 70)},
                                  .revoked_serials = {{.issuer_ski = device_root_.facts().ski,
                                                       .serial = leaf.facts().serial}}},
                                 &leaf);
    expect_refused(revoked, SSL_AD_CERTIFICATE_REVOKED, VerifyStatus::kRevoked);
    ASSERT_EQ(seen.size(), 1U);
    EXPECT_EQ(seen[0].reason, VerifyStatus::kRevoked);
    EXPECT_EQ(seen[0].ca_id, 7);
    EXPECT_EQ(seen[0].org_id, 70);
    EXPECT_EQ(seen[0].serial, leaf.facts().serial);
    EXPECT_EQ(refusals_.back().ca_id, 7) << "the context's own hook sees the CA too";

    // An expired leaf names its CA; a certificate of an unknown CA names none.
    refusals_.clear();
    const auto stale =
        device_root_.issue_leaf({.not_before = Clock::now() - 48h, .not_after = Clock::now() - 1h});
    expect_refused(connect({.cas = {device_root_.registered(7, 70)}}, &stale),
                   SSL_AD_CERTIFICATE_EXPIRED, VerifyStatus::kExpired);
    ASSERT_EQ(seen.size(), 2U);
    EXPECT_EQ(seen[1].ca_id, 7);
    refusals_.clear();
    const auto foreign = TestPki::make_root("Stranger Root").issue_leaf();
    expect_refused(connect({.cas = {device_root_.registered(7, 70)}}, &foreign), SSL_AD_UNKNOWN_CA,
                   VerifyStatus::kUnknownCa);
    ASSERT_EQ(seen.size(), 3U);
    EXPECT_EQ(seen[2].ca_id, 0);
    EXPECT_EQ(seen[2].org_id, 0);

    // Accepted handshakes are not reported; a throwing observer changes nothing.
    expect_accepted(connect({.cas = {device_root_.registered(7, 70)}}, &leaf), 7, 70);
    EXPECT_EQ(seen.size(), 3U);
    store_.set_refusal_observer([](const pki::Refusal&) { throw std::runtime_error("boom"); });
    refusals_.clear();
    expect_refused(connect({.cas = {device_root_.registered(7, 70)}}, &foreign), SSL_AD_UNKNOWN_CA,
                   VerifyStatus::kUnknownCa);
}

TEST_P(PkiHandshake, AProviderOtherThanTheStoreReportsOnlyToTheContextHook) {
    std::vector<pki::Refusal> seen;
    store_.set_refusal_observer([&seen](const pki::Refusal& r) { seen.push_back(r); });
    store_.replace(TrustSnapshot::build({.cas = {device_root_.registered(1, 10)}}));
    const auto foreign = TestPki::make_root("Stranger Root").issue_leaf();
    const auto outcome = connect_with([this] { return store_.current(); }, &foreign);
    expect_refused(outcome, SSL_AD_UNKNOWN_CA, VerifyStatus::kUnknownCa);
    EXPECT_TRUE(seen.empty());
}

TEST_P(PkiHandshake, RevokedIntermediateRevokesItsDevices) {
    const auto intermediate = device_root_.issue_intermediate("Device Intermediate");
    const auto leaf = intermediate.issue_leaf();
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)},
                                  .revoked_fingerprints = {intermediate.facts().fingerprint}},
                                 &leaf);
    expect_refused(outcome, SSL_AD_CERTIFICATE_REVOKED, VerifyStatus::kRevoked);
    EXPECT_EQ(pki::verification_result(outcome.server.get())->error_depth, 1);
}

TEST_P(PkiHandshake, InactiveCaIsUnknownCa) {
    const auto leaf = device_root_.issue_leaf();
    const auto outcome =
        connect({.cas = {device_root_.registered(1, 10, /*active=*/false)}}, &leaf);
    expect_refused(outcome, SSL_AD_UNKNOWN_CA, VerifyStatus::kUnknownCa);
}

TEST_P(PkiHandshake, ExpiredCaIsRefusedOnlyWhenItsExpirationIsChecked) {
    const auto old_root = TestPki::make_root(
        "Old Root", {.not_before = Clock::now() - 24h * 800, .not_after = Clock::now() - 24h});
    const auto leaf = old_root.issue_leaf();
    auto ca = old_root.registered(1, 10);
    expect_refused(connect({.cas = {ca}}, &leaf), SSL_AD_CERTIFICATE_EXPIRED,
                   VerifyStatus::kExpired);
    ca.check_expiration = false;
    expect_accepted(connect({.cas = {ca}}, &leaf), 1, 10);
}

TEST_P(PkiHandshake, RotationWithTheSameKeyIsAccepted) {
    const auto old_cert = device_root_.issue_leaf({.cn = "device-1"});
    const auto new_cert = device_root_.issue_leaf({.cn = "device-1", .key = old_cert.key()});
    const TrustInputs inputs{.cas = {device_root_.registered(1, 10)}};
    const auto old_result = expect_accepted(connect(inputs, &old_cert), 1, 10);
    const auto new_result = expect_accepted(connect(inputs, &new_cert), 1, 10);
    ASSERT_TRUE(old_result.leaf && new_result.leaf);
    EXPECT_NE(old_result.leaf->fingerprint, new_result.leaf->fingerprint);
    EXPECT_EQ(old_result.leaf->public_key_fingerprint, new_result.leaf->public_key_fingerprint);
}

TEST_P(PkiHandshake, SameCommonNameWithAnotherKeyPassesTlsWithADifferentKeyFingerprint) {
    // The handshake only vouches for the CA; binding a key to a device is the authenticator's
    // job, which it does with the public key fingerprint reported here.
    const auto first = device_root_.issue_leaf({.cn = "device-1"});
    const auto second = device_root_.issue_leaf({.cn = "device-1"});
    const TrustInputs inputs{.cas = {device_root_.registered(1, 10)}};
    const auto a = expect_accepted(connect(inputs, &first), 1, 10);
    const auto b = expect_accepted(connect(inputs, &second), 1, 10);
    ASSERT_TRUE(a.leaf && b.leaf);
    EXPECT_EQ(a.leaf->common_name, b.leaf->common_name);
    EXPECT_NE(a.leaf->public_key_fingerprint, b.leaf->public_key_fingerprint);
}

TEST_P(PkiHandshake, DisabledDeviceIsBadCertificate) {
    const auto leaf = device_root_.issue_leaf({.cn = "device-1"});
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)},
                                  .disabled_devices = {{.org_id = 10, .identifier = "device-1"}}},
                                 &leaf);
    expect_refused(outcome, SSL_AD_BAD_CERTIFICATE, VerifyStatus::kDeviceDisabled);
    // The same identifier disabled in another org does not matter.
    refusals_.clear();
    expect_accepted(connect({.cas = {device_root_.registered(1, 10)},
                             .disabled_devices = {{.org_id = 11, .identifier = "device-1"}}},
                            &leaf),
                    1, 10);
}

TEST_P(PkiHandshake, NoCertificateIsRefusedWhenRequired) {
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)}}, nullptr);
    EXPECT_FALSE(outcome.client_ok);
    EXPECT_FALSE(outcome.server_ok);
    const int expected =
        GetParam() == TlsVersion::kTls13 ? SSL_AD_CERTIFICATE_REQUIRED : SSL_AD_HANDSHAKE_FAILURE;
    EXPECT_EQ(outcome.client_received_alert, expected) << outcome.client_received_alert_text;
    EXPECT_FALSE(pki::verification_result(outcome.server.get()));
    EXPECT_TRUE(refusals_.empty());  // OpenSSL refuses before any verification runs
}

TEST_P(PkiHandshake, NoCertificateIsAllowedWhenOptional) {
    const auto outcome = connect({.cas = {device_root_.registered(1, 10)}}, nullptr, true,
                                 {.require_certificate = false});
    EXPECT_TRUE(outcome.client_ok);
    EXPECT_TRUE(outcome.server_ok);
    EXPECT_FALSE(pki::verification_result(outcome.server.get()));
}

TEST_P(PkiHandshake, MissingSnapshotIsInternalError) {
    const auto leaf = device_root_.issue_leaf();
    const auto outcome = connect_with([] { return std::shared_ptr<const TrustSnapshot>{}; }, &leaf);
    expect_refused(outcome, SSL_AD_INTERNAL_ERROR, VerifyStatus::kUnavailable);
    const auto throwing = connect_with(
        []() -> std::shared_ptr<const TrustSnapshot> { throw std::runtime_error("db down"); },
        &leaf);
    EXPECT_EQ(throwing.client_received_alert, SSL_AD_INTERNAL_ERROR);
}

TEST_P(PkiHandshake, SnapshotSwapTakesEffectOnTheNextHandshake) {
    const auto leaf = device_root_.issue_leaf();
    expect_refused(connect({}, &leaf), SSL_AD_UNKNOWN_CA, VerifyStatus::kUnknownCa);
    store_.replace(TrustSnapshot::build({.cas = {device_root_.registered(1, 10)}}));
    expect_accepted(connect_with(store_.provider(), &leaf), 1, 10);
}

TEST_P(PkiHandshake, VerificationUsesTheInjectedClock) {
    const auto root = TestPki::make_root(
        "Device Root", {.not_before = utc(2029, 1, 1), .not_after = utc(2040, 1, 1)});
    const auto leaf =
        root.issue_leaf({.not_before = utc(2030, 1, 1), .not_after = utc(2031, 1, 1)});
    const TrustInputs inputs{.cas = {root.registered(5, 50)}};
    expect_accepted(connect(inputs, &leaf, true, {.clock = [] { return utc(2030, 6, 1); }}), 5, 50);
    expect_refused(connect(inputs, &leaf, true, {.clock = [] { return utc(2031, 6, 1); }}),
                   SSL_AD_CERTIFICATE_EXPIRED, VerifyStatus::kExpired);
}

TEST_P(PkiHandshake, ThrowingRefusalHookDoesNotChangeTheOutcome) {
    const auto leaf = TestPki::make_self_signed_leaf();
    auto server_ctx = test_support::make_server_ctx(server_cert_);
    store_.replace(TrustSnapshot::build({.cas = {device_root_.registered(1, 10)}}));
    pki::install_client_verification(
        server_ctx.get(), store_.provider(),
        {.on_refusal = [](const pki::Refusal&) { throw std::runtime_error("log full"); }});
    auto client_ctx = test_support::make_client_ctx(GetParam(), server_root_, &leaf);
    const auto outcome = test_support::run_memory_handshake(server_ctx.get(), client_ctx.get());
    EXPECT_EQ(outcome.client_received_alert, SSL_AD_UNKNOWN_CA);
    ASSERT_TRUE(pki::verification_result(outcome.server.get()));
    EXPECT_EQ(pki::verification_result(outcome.server.get())->status, VerifyStatus::kUnknownCa);
}

TEST_P(PkiHandshake, EveryConnectionIsVerifiedAfreshWithoutResumption) {
    const auto leaf = device_root_.issue_leaf();
    auto server_ctx = test_support::make_server_ctx(server_cert_);
    store_.replace(TrustSnapshot::build({.cas = {device_root_.registered(1, 10)}}));
    pki::install_client_verification(server_ctx.get(), store_.provider());
    auto client_ctx = test_support::make_client_ctx(GetParam(), server_root_, &leaf);
    const auto first = test_support::run_memory_handshake(server_ctx.get(), client_ctx.get());
    expect_accepted(first, 1, 10);
    const std::unique_ptr<SSL_SESSION, decltype(&SSL_SESSION_free)> session{
        SSL_get1_session(first.client.get()), SSL_SESSION_free};
    ASSERT_TRUE(session);

    // The device is revoked meanwhile: offering the old session must not skip the check.
    store_.replace(TrustSnapshot::build({.cas = {device_root_.registered(1, 10)},
                                         .revoked_fingerprints = {leaf.facts().fingerprint}}));
    const auto second =
        test_support::run_memory_handshake(server_ctx.get(), client_ctx.get(), session.get());
    EXPECT_EQ(SSL_session_reused(second.server.get()), 0);
    EXPECT_EQ(second.client_received_alert, SSL_AD_CERTIFICATE_REVOKED);
    EXPECT_FALSE(second.server_ok);
}

TEST(PkiTrustSnapshot, ConcurrentVerificationOfOneSnapshot) {
    const auto root = TestPki::make_root("Device Root");
    const auto intermediate = root.issue_intermediate("Device Intermediate");
    const auto good = intermediate.issue_leaf({.cn = "good"});
    const auto revoked = intermediate.issue_leaf({.cn = "revoked"});
    const auto rogue = TestPki::make_root("Device Root").issue_leaf({.cn = "rogue"});
    const auto snapshot = TrustSnapshot::build(
        {.cas = {root.registered(1, 10)}, .revoked_fingerprints = {revoked.facts().fingerprint}});
    pki::X509StackPtr chain{sk_X509_new_null()};
    ASSERT_TRUE(chain);
    ASSERT_GT(sk_X509_push(chain.get(), pki::share_x509(intermediate.x509()).release()), 0);

    std::atomic<int> mismatches{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 50; ++i) {
                const auto now = Clock::now();
                mismatches += snapshot->verify(good.x509(), chain.get(), now).ok() ? 0 : 1;
                mismatches += snapshot->verify(revoked.x509(), chain.get(), now).status ==
                                      VerifyStatus::kRevoked
                                  ? 0
                                  : 1;
                mismatches +=
                    snapshot->verify(rogue.x509(), nullptr, now).status == VerifyStatus::kUnknownCa
                        ? 0
                        : 1;
            }
        });
    }
    for (auto& thread : threads) {
        thread.join();
    }
    EXPECT_EQ(mismatches.load(), 0);
}

// The snapshot's cache of accepted certificates (TrustSnapshot::verify): what it skips must never
// change an outcome.
pki::X509StackPtr stack_of(std::initializer_list<X509*> certs) {
    pki::X509StackPtr stack{sk_X509_new_null()};
    for (X509* cert : certs) {
        if (!stack || sk_X509_push(stack.get(), pki::share_x509(cert).release()) <= 0) {
            throw std::bad_alloc{};
        }
    }
    return stack;
}

/// `count` device certificates of `root`, named device-0, device-1, ...
std::vector<TestCert> leaves_of(const TestCa& root, int count) {
    std::vector<TestCert> leaves;
    for (int i = 0; i < count; ++i) {
        leaves.push_back(root.issue_leaf({.cn = "device-" + std::to_string(i)}));
    }
    return leaves;
}

TEST(PkiTrustSnapshot, AcceptedCertificateIsRememberedWhileItsChainIsValid) {
    const auto root = TestPki::make_root(
        "Device Root", {.not_before = utc(2029, 1, 1), .not_after = utc(2040, 1, 1)});
    const auto intermediate = root.issue_intermediate(
        "Device Intermediate", {.not_before = utc(2029, 1, 1), .not_after = utc(2030, 9, 1)});
    const auto leaf =
        intermediate.issue_leaf({.not_before = utc(2030, 1, 1), .not_after = utc(2031, 1, 1)});
    const auto snapshot = TrustSnapshot::build({.cas = {root.registered(7, 70)}});
    const auto sent = stack_of({leaf.x509(), intermediate.x509()});

    const auto first = snapshot->verify(leaf.x509(), sent.get(), utc(2030, 6, 1));
    ASSERT_TRUE(first.ok()) << pki::to_string(first.status);
    EXPECT_EQ(snapshot->verify_cache_stats().entries, 1U);
    EXPECT_EQ(snapshot->verify_cache_stats().hits, 0U);

    pki::X509StackPtr chain;
    const auto again = snapshot->verify(leaf.x509(), sent.get(), utc(2030, 7, 1), &chain);
    ASSERT_TRUE(again.ok()) << pki::to_string(again.status);
    EXPECT_EQ(snapshot->verify_cache_stats().hits, 1U);
    ASSERT_TRUE(again.ca && first.ca);
    EXPECT_EQ(again.ca->id, 7);
    EXPECT_EQ(again.ca->org_id, 70);
    EXPECT_EQ(again.ca->depth, 2);
    EXPECT_EQ(again.ca->ski, first.ca->ski);
    ASSERT_TRUE(again.leaf);
    EXPECT_EQ(again.leaf->fingerprint, leaf.facts().fingerprint);
    ASSERT_TRUE(chain);
    ASSERT_EQ(sk_X509_num(chain.get()), 3);
    EXPECT_EQ(X509_cmp(sk_X509_value(chain.get(), 0), leaf.x509()), 0);
    EXPECT_EQ(X509_cmp(sk_X509_value(chain.get(), 1), intermediate.x509()), 0);
    EXPECT_EQ(X509_cmp(sk_X509_value(chain.get(), 2), root.x509()), 0);

    // The intermediate expires before the leaf: OpenSSL's verdict, not the remembered one.
    const auto late = snapshot->verify(leaf.x509(), sent.get(), utc(2030, 10, 1));
    EXPECT_EQ(late.status, VerifyStatus::kExpired);
    EXPECT_EQ(late.error_depth, 1);
    const auto early = snapshot->verify(leaf.x509(), sent.get(), utc(2029, 12, 1));
    EXPECT_EQ(early.status, VerifyStatus::kNotYetValid);
    EXPECT_EQ(early.error_depth, 0);
    EXPECT_EQ(snapshot->verify_cache_stats().hits, 1U);
}

TEST(PkiTrustSnapshot, RememberedCertificateNeedsTheSameIntermediates) {
    const auto root = TestPki::make_root("Device Root");
    const auto intermediate = root.issue_intermediate("Device Intermediate");
    const auto leaf = intermediate.issue_leaf();
    const auto snapshot = TrustSnapshot::build({.cas = {root.registered(1, 10)}});
    const auto now = Clock::now();

    const auto sent = stack_of({leaf.x509(), intermediate.x509()});
    ASSERT_TRUE(snapshot->verify(leaf.x509(), sent.get(), now).ok());
    EXPECT_EQ(snapshot->verify(leaf.x509(), nullptr, now).status, VerifyStatus::kUnknownCa);
    const auto leaf_only = stack_of({leaf.x509()});
    EXPECT_EQ(snapshot->verify(leaf.x509(), leaf_only.get(), now).status, VerifyStatus::kUnknownCa);
    EXPECT_EQ(snapshot->verify_cache_stats().hits, 0U);
    // The same intermediates without the leaf's own copy: the same inputs.
    const auto without_leaf = stack_of({intermediate.x509()});
    EXPECT_TRUE(snapshot->verify(leaf.x509(), without_leaf.get(), now).ok());
    EXPECT_EQ(snapshot->verify_cache_stats().hits, 1U);

    // A device sending only its certificate, or a resumed session (no chain), share one entry.
    const auto direct = root.issue_leaf();
    const auto direct_sent = stack_of({direct.x509()});
    ASSERT_TRUE(snapshot->verify(direct.x509(), direct_sent.get(), now).ok());
    EXPECT_TRUE(snapshot->verify(direct.x509(), nullptr, now).ok());
    EXPECT_EQ(snapshot->verify_cache_stats().hits, 2U);
}

TEST(PkiTrustSnapshot, RememberedCertificateOfAnExpiredCaFollowsTheCasExpiryRule) {
    const auto root = TestPki::make_root(
        "Device Root", {.not_before = utc(2029, 1, 1), .not_after = utc(2031, 1, 1)});
    const auto leaf =
        root.issue_leaf({.not_before = utc(2030, 1, 1), .not_after = utc(2035, 1, 1)});
    auto ca = root.registered(1, 10);

    const auto checked = TrustSnapshot::build({.cas = {ca}});
    ASSERT_TRUE(checked->verify(leaf.x509(), nullptr, utc(2030, 6, 1)).ok());
    const auto after = checked->verify(leaf.x509(), nullptr, utc(2032, 1, 1));
    EXPECT_EQ(after.status, VerifyStatus::kExpired);
    EXPECT_EQ(after.error_depth, 1);
    EXPECT_EQ(checked->verify_cache_stats().hits, 0U);

    ca.check_expiration = false;
    const auto unchecked = TrustSnapshot::build({.cas = {ca}});
    ASSERT_TRUE(unchecked->verify(leaf.x509(), nullptr, utc(2030, 6, 1)).ok());
    EXPECT_TRUE(unchecked->verify(leaf.x509(), nullptr, utc(2032, 1, 1)).ok());
    EXPECT_EQ(unchecked->verify_cache_stats().hits, 1U);
    // Not valid yet is never forgiven.
    EXPECT_EQ(unchecked->verify(leaf.x509(), nullptr, utc(2028, 1, 1)).status,
              VerifyStatus::kNotYetValid);
}

TEST(PkiTrustSnapshot, RefusalsAreNotRemembered) {
    const auto root = TestPki::make_root("Device Root");
    const auto revoked = root.issue_leaf({.cn = "revoked"});
    const auto rogue = TestPki::make_root("Device Root").issue_leaf({.cn = "rogue"});
    const auto disabled = root.issue_leaf({.cn = "device-1"});
    const auto snapshot =
        TrustSnapshot::build({.cas = {root.registered(1, 10)},
                              .revoked_fingerprints = {revoked.facts().fingerprint},
                              .disabled_devices = {{.org_id = 10, .identifier = "device-1"}}});
    for (int i = 0; i < 2; ++i) {
        EXPECT_EQ(snapshot->verify(revoked.x509(), nullptr, Clock::now()).status,
                  VerifyStatus::kRevoked);
        EXPECT_EQ(snapshot->verify(disabled.x509(), nullptr, Clock::now()).status,
                  VerifyStatus::kDeviceDisabled);
        EXPECT_EQ(snapshot->verify(rogue.x509(), nullptr, Clock::now()).status,
                  VerifyStatus::kUnknownCa);
    }
    EXPECT_EQ(snapshot->verify_cache_stats().entries, 0U);
    EXPECT_EQ(snapshot->verify_cache_stats().hits, 0U);
}

TEST(PkiTrustSnapshot, VerifyCacheKeepsItsLimit) {
    const auto root = TestPki::make_root("Device Root");
    const auto leaves = leaves_of(root, 5);
    const TrustInputs inputs{.cas = {root.registered(1, 10)}};
    const auto none = TrustSnapshot::build(inputs, 0);
    const auto two = TrustSnapshot::build(inputs, 2);
    for (int round = 0; round < 2; ++round) {
        for (const auto& leaf : leaves) {
            EXPECT_TRUE(none->verify(leaf.x509(), nullptr, Clock::now()).ok());
            EXPECT_TRUE(two->verify(leaf.x509(), nullptr, Clock::now()).ok());
            EXPECT_LE(two->verify_cache_stats().entries, 2U);
        }
    }
    EXPECT_EQ(none->verify_cache_stats().entries, 0U);
    EXPECT_EQ(none->verify_cache_stats().hits, 0U);
    EXPECT_EQ(two->verify_cache_stats().entries, 2U);
    // The last one verified is there.
    EXPECT_TRUE(two->verify(leaves.back().x509(), nullptr, Clock::now()).ok());
    EXPECT_GE(two->verify_cache_stats().hits, 1U);
}

TEST(PkiTrustSnapshot, AFullVerifyCacheForgetsTheOldestFirst) {
    const auto root = TestPki::make_root("Device Root");
    const auto leaves = leaves_of(root, 100);
    const auto snapshot = TrustSnapshot::build({.cas = {root.registered(1, 10)}}, 32);
    for (const auto& leaf : leaves) {
        ASSERT_TRUE(snapshot->verify(leaf.x509(), nullptr, Clock::now()).ok());
    }
    EXPECT_EQ(snapshot->verify_cache_stats().entries, 32U);
    // The 32 accepted last are all there (newest first, so that a miss could not push out one
    // still to come), and the one before them is not.
    for (std::size_t i = leaves.size(); i-- > leaves.size() - 32;) {
        ASSERT_TRUE(snapshot->verify(leaves[i].x509(), nullptr, Clock::now()).ok());
    }
    EXPECT_EQ(snapshot->verify_cache_stats().hits, 32U);
    ASSERT_TRUE(snapshot->verify(leaves[leaves.size() - 33].x509(), nullptr, Clock::now()).ok());
    EXPECT_EQ(snapshot->verify_cache_stats().hits, 32U);
    EXPECT_EQ(snapshot->verify_cache_stats().entries, 32U);
}

std::string tls_version_name(const ::testing::TestParamInfo<TlsVersion>& param) {
    return param.param == TlsVersion::kTls12 ? "Tls12" : "Tls13";
}

INSTANTIATE_TEST_SUITE_P(Pki, PkiHandshake,
                         ::testing::Values(TlsVersion::kTls12, TlsVersion::kTls13),
                         tls_version_name);

// ---- Test PKI outputs ----

TEST(PkiTestPki, WritesFilesAndCsrs) {
    const auto root = TestPki::make_root("Device Root");
    const auto intermediate = root.issue_intermediate("Device Intermediate");
    const auto leaf = intermediate.issue_leaf({.cn = "device-9"});
    const auto dir = std::filesystem::temp_directory_path() /
                     ("otahub-pki-test-" + leaf.facts().fingerprint.substr(0, 12));
    const auto files = leaf.write_files(dir, "device-9");
    EXPECT_TRUE(std::filesystem::exists(files.cert));
    EXPECT_TRUE(std::filesystem::exists(files.key));
    EXPECT_TRUE(std::filesystem::exists(files.fullchain));
    EXPECT_TRUE(std::filesystem::exists(files.chain));
    EXPECT_EQ(std::filesystem::status(files.key).permissions() & std::filesystem::perms::group_read,
              std::filesystem::perms::none);
    // The files load into OpenSSL as a server would load them.
    pki::SslCtxPtr ctx{SSL_CTX_new(TLS_server_method())};
    ASSERT_TRUE(ctx);
    EXPECT_EQ(SSL_CTX_use_certificate_chain_file(ctx.get(), files.fullchain.c_str()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx.get(), files.key.c_str(), SSL_FILETYPE_PEM), 1);
    EXPECT_EQ(SSL_CTX_check_private_key(ctx.get()), 1);
    EXPECT_TRUE(root.write_files(dir, "root").chain.empty());
    std::filesystem::remove_all(dir);

    const auto key = test_support::TestKey::generate();
    const std::string csr = TestPki::make_csr(key, "device-10", {"urn:example:x"});
    EXPECT_NE(csr.find("-----BEGIN CERTIFICATE REQUEST-----"), std::string::npos);
    pki::BioPtr bio{BIO_new_mem_buf(csr.data(), static_cast<int>(csr.size()))};
    pki::X509ReqPtr request{PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr)};
    ASSERT_TRUE(request);
    EXPECT_EQ(X509_REQ_verify(request.get(), X509_REQ_get0_pubkey(request.get())), 1);
    EXPECT_EQ(EVP_PKEY_eq(X509_REQ_get0_pubkey(request.get()), key.get()), 1);
    EXPECT_NE(key.public_pem().find("BEGIN PUBLIC KEY"), std::string::npos);
}

}  // namespace
}  // namespace otahub
