// pki::use_legacy_ec_keys: certificate keys decoded through OpenSSL's built-in EC method must be
// the same keys, refuse what the provider path refuses, and carry mutual TLS with resumption.
// The switch is process-wide, so every test here turns it on first.
#include "server/domain/pki/ec_keys.hpp"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "server/domain/pki/openssl_ptr.hpp"
#include "server/domain/pki/trust_store.hpp"
#include "tests/support/test_pki.hpp"

namespace otahub::pki {
namespace {

using test_support::TestCa;
using test_support::TestCert;
using test_support::TestKey;
using test_support::TestPki;

void turn_on() {
    std::string why;
    ASSERT_EQ(use_legacy_ec_keys(&why), EcKeys::kLegacy) << why;
}

X509Ptr decode(const std::vector<std::uint8_t>& der) {
    const unsigned char* p = der.data();
    return X509Ptr{d2i_X509(nullptr, &p, static_cast<long>(der.size()))};
}

EvpPkeyPtr read_private_key(const std::string& pem) {
    const BioPtr bio{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
    return EvpPkeyPtr{PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)};
}

std::vector<std::uint8_t> public_key_der(EVP_PKEY* key) {
    unsigned char* out = nullptr;
    const int len = i2d_PUBKEY(key, &out);
    std::vector<std::uint8_t> der(out, out + std::max(len, 0));
    OPENSSL_free(out);
    return der;
}

TEST(PkiEcKeys, CertificateKeysComeFromTheBuiltInMethodAndAreTheSameKeys) {
    turn_on();
    EXPECT_EQ(ec_keys_in_use(), EcKeys::kLegacy);
    EXPECT_EQ(use_legacy_ec_keys(), EcKeys::kLegacy);  // a second call changes nothing

    const TestCa root = TestPki::make_root("EC Root");
    const TestCert leaf = root.issue_leaf({.cn = "device-ec"});
    const X509Ptr decoded = decode(leaf.der());
    ASSERT_TRUE(decoded);
    EVP_PKEY* key = X509_get0_pubkey(decoded.get());
    ASSERT_NE(key, nullptr);
    // A private key read from PEM stays with the providers; the decoded certificate key names
    // the built-in method.
    const EvpPkeyPtr provided = read_private_key(TestKey::generate().private_pem());
    ASSERT_TRUE(provided);
    ASSERT_NE(EVP_PKEY_get0_description(provided.get()), nullptr);
    ASSERT_NE(EVP_PKEY_get0_description(key), nullptr);
    EXPECT_STRNE(EVP_PKEY_get0_description(key), EVP_PKEY_get0_description(provided.get()));
    EXPECT_STREQ(EVP_PKEY_get0_type_name(key), "EC");
    EXPECT_EQ(EVP_PKEY_get_bits(key), 256);
    // The same key as the one the certificate was issued with, and the same encoding.
    EXPECT_EQ(EVP_PKEY_eq(key, X509_get0_pubkey(leaf.x509())), 1);
    EXPECT_EQ(public_key_der(key), public_key_der(X509_get0_pubkey(leaf.x509())));
    // The issuer's signature checks out with the CA's decoded key.
    const X509Ptr ca = decode(root.der());
    ASSERT_TRUE(ca);
    EXPECT_EQ(X509_verify(decoded.get(), X509_get0_pubkey(ca.get())), 1);
    EXPECT_EQ(X509_verify(ca.get(), X509_get0_pubkey(decoded.get())), 0);
}

TEST(PkiEcKeys, PointOffTheCurveLeavesTheCertificateWithoutAKey) {
    turn_on();
    const TestCert leaf = TestPki::make_root("EC Root").issue_leaf();
    std::vector<std::uint8_t> der = leaf.der();
    // The uncompressed point (0x04, X, Y) ends the SubjectPublicKeyInfo; change Y's last byte.
    const std::vector<std::uint8_t> spki = public_key_der(X509_get0_pubkey(leaf.x509()));
    ASSERT_GE(spki.size(), 65U);
    const auto point = std::search(der.begin(), der.end(), spki.end() - 65, spki.end());
    ASSERT_NE(point, der.end());
    point[64] ^= 0x01;
    const X509Ptr decoded = decode(der);
    ASSERT_TRUE(decoded);                                 // the structure still parses ...
    EXPECT_EQ(X509_get0_pubkey(decoded.get()), nullptr);  // ... but no key comes out of it
}

TEST(PkiEcKeys, SignaturesVerifyAndAlteredMessagesDoNot) {
    turn_on();
    // Signed by a provider key (as the hub's keys are, read from PEM), checked with the built-in
    // one.
    const EvpPkeyPtr signer_key = read_private_key(TestKey::generate().private_pem());
    ASSERT_TRUE(signer_key);
    EVP_PKEY* signer = signer_key.get();
    const std::vector<std::uint8_t> spki = public_key_der(signer);
    const unsigned char* p = spki.data();
    const EvpPkeyPtr verifier{d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size()))};
    ASSERT_TRUE(verifier);
    EXPECT_STRNE(EVP_PKEY_get0_description(verifier.get()), EVP_PKEY_get0_description(signer));

    const std::string message = "firmware 1.2.3";
    const EvpMdCtxPtr sign_ctx{EVP_MD_CTX_new()};
    ASSERT_EQ(EVP_DigestSignInit(sign_ctx.get(), nullptr, EVP_sha256(), nullptr, signer), 1);
    std::size_t sig_len = 0;
    ASSERT_EQ(
        EVP_DigestSign(sign_ctx.get(), nullptr, &sig_len,
                       reinterpret_cast<const unsigned char*>(message.data()), message.size()),
        1);
    std::vector<unsigned char> sig(sig_len);
    ASSERT_EQ(
        EVP_DigestSign(sign_ctx.get(), sig.data(), &sig_len,
                       reinterpret_cast<const unsigned char*>(message.data()), message.size()),
        1);
    sig.resize(sig_len);

    const auto verify = [&](const std::string& text) {
        const EvpMdCtxPtr ctx{EVP_MD_CTX_new()};
        if (EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, verifier.get()) != 1) {
            return -1;
        }
        return EVP_DigestVerify(ctx.get(), sig.data(), sig.size(),
                                reinterpret_cast<const unsigned char*>(text.data()), text.size());
    };
    EXPECT_EQ(verify(message), 1);
    EXPECT_EQ(verify("firmware 1.2.4"), 0);
}

// A provider key on `curve`, with its point and parameters encoded as asked ("" leaves OpenSSL's
// default: uncompressed, named curve).
EvpPkeyPtr provider_key(const char* curve, const char* point_format = "",
                        const char* encoding = "") {
    EvpPkeyPtr key{generate_ec_key(curve)};
    if (!key) return key;
    if (*point_format != '\0' &&
        EVP_PKEY_set_utf8_string_param(key.get(), OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                       point_format) != 1) {
        return nullptr;
    }
    if (*encoding != '\0' &&
        EVP_PKEY_set_utf8_string_param(key.get(), OSSL_PKEY_PARAM_EC_ENCODING, encoding) != 1) {
        return nullptr;
    }
    return key;
}

EvpPkeyPtr decode_public_key(const std::vector<std::uint8_t>& spki) {
    const unsigned char* p = spki.data();
    return EvpPkeyPtr{d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size()))};
}

// The built-in method decodes certificate keys with curves built once (ec_curves_shared); a key
// decoded that way is the provider's key, bit for bit, on every curve and in every encoding.
TEST(PkiEcKeys, KeysOnSharedAndOtherCurvesDecodeToTheSameKeys) {
    turn_on();
    EXPECT_TRUE(ec_curves_shared());
    struct Case {
        const char* curve;
        int bits;
        const char* point_format;
        const char* encoding;
    };
    for (const Case& c :
         {Case{"P-256", 256, "", ""}, Case{"P-384", 384, "", ""}, Case{"P-521", 521, "", ""},
          Case{"P-256", 256, "compressed", ""}, Case{"P-256", 256, "", "explicit"},
          // Not one of the shared curves: built for the key, as OpenSSL does.
          Case{"secp256k1", 256, "", ""}}) {
        SCOPED_TRACE(std::string(c.curve) + " " + c.point_format + " " + c.encoding);
        const EvpPkeyPtr original = provider_key(c.curve, c.point_format, c.encoding);
        ASSERT_TRUE(original);
        const std::vector<std::uint8_t> spki = public_key_der(original.get());
        ASSERT_FALSE(spki.empty());
        const EvpPkeyPtr decoded = decode_public_key(spki);
        ASSERT_TRUE(decoded);
        EXPECT_STRNE(EVP_PKEY_get0_description(decoded.get()),
                     EVP_PKEY_get0_description(original.get()));
        EXPECT_EQ(EVP_PKEY_get_bits(decoded.get()), c.bits);
        EXPECT_EQ(EVP_PKEY_eq(decoded.get(), original.get()), 1);
        // Encoded again as it came: named curve or explicit parameters, compressed or not.
        EXPECT_EQ(public_key_der(decoded.get()), spki);
        // Room for an ECDSA signature on that curve (what libssl sizes its buffers by).
        EXPECT_EQ(EVP_PKEY_get_size(decoded.get()), EVP_PKEY_get_size(original.get()));
    }
}

TEST(PkiEcKeys, DecodedKeysCompareByPointAndPrintTheirCurve) {
    turn_on();
    const EvpPkeyPtr a = decode_public_key(public_key_der(provider_key("P-256").get()));
    const EvpPkeyPtr a_again = decode_public_key(public_key_der(a.get()));
    const EvpPkeyPtr b = decode_public_key(public_key_der(provider_key("P-256").get()));
    const EvpPkeyPtr other_curve = decode_public_key(public_key_der(provider_key("P-384").get()));
    ASSERT_TRUE(a && a_again && b && other_curve);
    EXPECT_EQ(EVP_PKEY_eq(a.get(), a_again.get()), 1);
    EXPECT_EQ(EVP_PKEY_eq(a.get(), b.get()), 0);
    EXPECT_NE(EVP_PKEY_eq(a.get(), other_curve.get()), 1);

    const BioPtr out{BIO_new(BIO_s_mem())};
    ASSERT_EQ(EVP_PKEY_print_public(out.get(), a.get(), 2, nullptr), 1);
    char* text = nullptr;
    const long length = BIO_get_mem_data(out.get(), &text);
    const std::string printed(text, static_cast<std::size_t>(length));
    EXPECT_NE(printed.find("Public-Key: (256 bit)"), std::string::npos) << printed;
    EXPECT_NE(printed.find("pub:\n      04:"), std::string::npos) << printed;  // the point
    EXPECT_NE(printed.find("prime256v1"), std::string::npos) << printed;
}

TEST(PkiEcKeys, MalformedKeysAreRefused) {
    turn_on();
    std::vector<std::uint8_t> spki = public_key_der(provider_key("P-256").get());
    ASSERT_GE(spki.size(), 65U);
    // The point cut short, and a point whose first byte names no encoding (0x02/0x03 compressed,
    // 0x04 uncompressed, 0x06/0x07 hybrid).
    std::vector<std::uint8_t> short_point = spki;
    short_point.pop_back();
    EXPECT_FALSE(decode_public_key(short_point));
    std::vector<std::uint8_t> bad_form = spki;
    bad_form[bad_form.size() - 65] = 0x08;
    EXPECT_FALSE(decode_public_key(bad_form));
    // A curve OID OpenSSL does not know (prime256v1's last arc changed).
    const std::vector<std::uint8_t> p256_oid = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                                0xce, 0x3d, 0x03, 0x01, 0x07};
    const auto oid = std::search(spki.begin(), spki.end(), p256_oid.begin(), p256_oid.end());
    ASSERT_NE(oid, spki.end());
    std::vector<std::uint8_t> unknown_curve = spki;
    unknown_curve[static_cast<std::size_t>(oid - spki.begin()) + p256_oid.size() - 1] = 0x7f;
    EXPECT_FALSE(decode_public_key(unknown_curve));
}

// EC_KEY calls read what the built-in method made (deprecated in OpenSSL 3, as the method is).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

// An EC context of the built-in method (what libssl gets for a key share once the ENGINE is on).
EvpPkeyCtxPtr builtin_ctx() {
    return EvpPkeyCtxPtr{EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr)};
}

int curve_of(EVP_PKEY* key) {
    const EC_KEY* ec = EVP_PKEY_get0_EC_KEY(key);
    const EC_GROUP* group = ec != nullptr ? EC_KEY_get0_group(ec) : nullptr;
    return group != nullptr ? EC_GROUP_get_curve_name(group) : NID_undef;
}

std::vector<std::uint8_t> derive(EVP_PKEY* mine, EVP_PKEY* peer) {
    const EvpPkeyCtxPtr ctx{EVP_PKEY_CTX_new(mine, nullptr)};
    std::size_t length = 0;
    if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
        EVP_PKEY_derive_set_peer(ctx.get(), peer) != 1 ||
        EVP_PKEY_derive(ctx.get(), nullptr, &length) != 1) {
        return {};
    }
    std::vector<std::uint8_t> secret(length);
    if (EVP_PKEY_derive(ctx.get(), secret.data(), &length) != 1) return {};
    secret.resize(length);
    return secret;
}

// libssl's key share (names as libssl gives them): parameters for a named group, a key pair on
// them, the peer's point set from its encoding, a shared secret. Through the shared curves for
// P-256/384/521, through OpenSSL's own control for the others; the same keys either way.
TEST(PkiEcKeys, KeySharesOnEveryCurveAgreeOnTheSecret) {
    turn_on();
    ASSERT_TRUE(ec_curves_shared());
    for (const auto& [name, nid, bits] :
         {std::tuple{"prime256v1", NID_X9_62_prime256v1, 256},
          std::tuple{"secp384r1", NID_secp384r1, 384}, std::tuple{"secp521r1", NID_secp521r1, 521},
          std::tuple{"secp256k1", NID_secp256k1, 256}}) {
        SCOPED_TRACE(name);
        // Parameters, then a key from them (ssl_generate_param_group, then ssl_generate_pkey).
        const EvpPkeyCtxPtr params_ctx = builtin_ctx();
        ASSERT_TRUE(params_ctx);
        ASSERT_EQ(EVP_PKEY_paramgen_init(params_ctx.get()), 1);
        ASSERT_EQ(EVP_PKEY_CTX_set_group_name(params_ctx.get(), name), 1);
        EVP_PKEY* raw = nullptr;
        ASSERT_EQ(EVP_PKEY_paramgen(params_ctx.get(), &raw), 1);
        const EvpPkeyPtr params{raw};
        EXPECT_EQ(curve_of(params.get()), nid);
        const EvpPkeyCtxPtr from_params{EVP_PKEY_CTX_new(params.get(), nullptr)};
        ASSERT_EQ(EVP_PKEY_keygen_init(from_params.get()), 1);
        raw = nullptr;
        ASSERT_EQ(EVP_PKEY_keygen(from_params.get(), &raw), 1);
        const EvpPkeyPtr mine{raw};
        // A key straight from a named group (a client's key share).
        const EvpPkeyCtxPtr named = builtin_ctx();
        ASSERT_EQ(EVP_PKEY_keygen_init(named.get()), 1);
        ASSERT_EQ(EVP_PKEY_CTX_set_group_name(named.get(), name), 1);
        raw = nullptr;
        ASSERT_EQ(EVP_PKEY_keygen(named.get(), &raw), 1);
        const EvpPkeyPtr peer{raw};
        for (EVP_PKEY* key : {mine.get(), peer.get()}) {
            EXPECT_EQ(curve_of(key), nid);
            EXPECT_EQ(EVP_PKEY_get_bits(key), bits);
            EXPECT_EQ(EC_KEY_check_key(EVP_PKEY_get0_EC_KEY(key)), 1);
        }
        EXPECT_EQ(EVP_PKEY_eq(mine.get(), peer.get()), 0);
        // The peer's point as it travels (the key share's encoding) set on our parameters.
        unsigned char* point = nullptr;
        const std::size_t point_length = EVP_PKEY_get1_encoded_public_key(peer.get(), &point);
        ASSERT_GT(point_length, 0U);
        const EvpPkeyPtr received{EVP_PKEY_new()};
        ASSERT_EQ(EVP_PKEY_copy_parameters(received.get(), params.get()), 1);
        EXPECT_EQ(EVP_PKEY_set1_encoded_public_key(received.get(), point, point_length), 1);
        OPENSSL_free(point);
        const std::vector<std::uint8_t> ours = derive(mine.get(), received.get());
        EXPECT_FALSE(ours.empty());
        EXPECT_EQ(ours, derive(peer.get(), mine.get()));
    }
}

TEST(PkiEcKeys, OtherControlsAfterASharedCurveStillApply) {
    turn_on();
    // Explicit parameters asked for after the curve: OpenSSL's control gets the curve first.
    const EvpPkeyCtxPtr ctx = builtin_ctx();
    ASSERT_EQ(EVP_PKEY_paramgen_init(ctx.get()), 1);
    ASSERT_EQ(EVP_PKEY_CTX_set_group_name(ctx.get(), "prime256v1"), 1);
    ASSERT_EQ(EVP_PKEY_CTX_set_ec_param_enc(ctx.get(), OPENSSL_EC_EXPLICIT_CURVE), 1);
    EVP_PKEY* raw = nullptr;
    ASSERT_EQ(EVP_PKEY_paramgen(ctx.get(), &raw), 1);
    const EvpPkeyPtr params{raw};
    const EC_GROUP* group = EC_KEY_get0_group(EVP_PKEY_get0_EC_KEY(params.get()));
    ASSERT_NE(group, nullptr);
    EXPECT_EQ(EC_GROUP_get_asn1_flag(group), OPENSSL_EC_EXPLICIT_CURVE);
    // A context whose application data is someone else's keeps it, and still gets its curve.
    int owner_data = 0;
    const EvpPkeyCtxPtr owned = builtin_ctx();
    ASSERT_EQ(EVP_PKEY_paramgen_init(owned.get()), 1);
    EVP_PKEY_CTX_set_app_data(owned.get(), &owner_data);
    ASSERT_EQ(EVP_PKEY_CTX_set_group_name(owned.get(), "prime256v1"), 1);
    EXPECT_EQ(EVP_PKEY_CTX_get_app_data(owned.get()), &owner_data);
    raw = nullptr;
    ASSERT_EQ(EVP_PKEY_paramgen(owned.get(), &raw), 1);
    const EvpPkeyPtr owned_params{raw};
    EXPECT_EQ(curve_of(owned_params.get()), NID_X9_62_prime256v1);
    EXPECT_EQ(EVP_PKEY_CTX_get_app_data(owned.get()), &owner_data);
    // A curve that is not named anywhere is refused as before.
    const EvpPkeyCtxPtr unknown = builtin_ctx();
    ASSERT_EQ(EVP_PKEY_paramgen_init(unknown.get()), 1);
    EXPECT_NE(EVP_PKEY_CTX_set_ec_paramgen_curve_nid(unknown.get(), NID_sha256), 1);
    ERR_clear_error();
}

#pragma GCC diagnostic pop

// Mutual TLS against the hub's own client verification, tickets on as the device endpoint has
// them: accepted, resumed, and the refusals still refuse.
class PkiEcKeysHandshake : public ::testing::Test {
  protected:
    void SetUp() override { turn_on(); }

    const TestCa server_root_ = TestPki::make_root("EC Server Root");
    const TestCert server_cert_ = server_root_.issue_server_cert();
    const TestCa device_root_ = TestPki::make_root("EC Device Root", {.organization = "Org A"});
    TrustStore store_;
    SslCtxPtr server_ctx_;

    test_support::HandshakeOutcome connect(const TestCert& client, SSL_SESSION* resume = nullptr) {
        if (!server_ctx_) {
            store_.replace(TrustSnapshot::build({.cas = {device_root_.registered(1, 10)}}));
            server_ctx_ = test_support::make_server_ctx(server_cert_);
            install_client_verification(server_ctx_.get(), store_.provider());
            SSL_CTX_clear_options(server_ctx_.get(), SSL_OP_NO_TICKET);
            SSL_CTX_set_num_tickets(server_ctx_.get(), 1);
        }
        client_ctx_ =
            test_support::make_client_ctx(test_support::TlsVersion::kTls13, server_root_, &client);
        return test_support::run_memory_handshake(server_ctx_.get(), client_ctx_.get(), resume);
    }

  private:
    SslCtxPtr client_ctx_;
};

TEST_F(PkiEcKeysHandshake, AcceptsThenResumesARegisteredDevice) {
    const TestCert leaf = device_root_.issue_leaf({.cn = "device-1"});
    const auto first = connect(leaf);
    ASSERT_TRUE(first.server_ok) << first.server_error;
    ASSERT_TRUE(first.client_ok) << first.client_received_alert_text;
    const auto result = verification_result(first.server.get());
    ASSERT_TRUE(result);
    EXPECT_TRUE(result->ok());
    ASSERT_TRUE(result->ca);
    EXPECT_EQ(result->ca->id, 1);
    EXPECT_EQ(SSL_session_reused(first.server.get()), 0);
    const std::unique_ptr<SSL_SESSION, decltype(&SSL_SESSION_free)> session{
        SSL_get1_session(first.client.get()), SSL_SESSION_free};
    ASSERT_TRUE(session);
    ASSERT_EQ(SSL_SESSION_is_resumable(session.get()), 1);

    const auto second = connect(leaf, session.get());
    ASSERT_TRUE(second.server_ok) << second.server_error;
    EXPECT_EQ(SSL_session_reused(second.server.get()), 1);
    // The certificate came back out of the ticket, decoded through the built-in method too.
    const X509* peer = SSL_get0_peer_certificate(second.server.get());
    ASSERT_NE(peer, nullptr);
    EXPECT_EQ(X509_cmp(peer, leaf.x509()), 0);
    EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(peer), X509_get0_pubkey(leaf.x509())), 1);
}

TEST_F(PkiEcKeysHandshake, RefusesAForgedSignatureAndAnUnknownCa) {
    // Same issuer name, no key identifier to tell them apart: only the signature can.
    const TestCa rogue_root = TestPki::make_root("EC Device Root", {.organization = "Org A"});
    const auto forged = connect(rogue_root.issue_leaf({.cn = "device-1", .aki = false}));
    EXPECT_FALSE(forged.server_ok);
    EXPECT_EQ(forged.client_received_alert, SSL_AD_DECRYPT_ERROR);
    ASSERT_TRUE(verification_result(forged.server.get()));
    EXPECT_EQ(verification_result(forged.server.get())->status, VerifyStatus::kBadSignature);

    const auto unknown = connect(TestPki::make_root("Elsewhere").issue_leaf({.cn = "device-2"}));
    EXPECT_FALSE(unknown.server_ok);
    EXPECT_EQ(unknown.client_received_alert, SSL_AD_UNKNOWN_CA);
}

}  // namespace
}  // namespace otahub::pki
