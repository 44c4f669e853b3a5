#include "tests/support/test_pki.hpp"

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <array>
#include <fstream>
#include <stdexcept>

#include "server/domain/pki/ca_registration.hpp"
#include "server/domain/pki/ec_keys.hpp"

namespace otahub::test_support {
namespace {

using pki::BioPtr;
using pki::X509Ptr;

[[noreturn]] void fail(std::string_view what) {
    std::string message{"test PKI: "};
    message.append(what);
    if (const unsigned long error = ERR_peek_last_error(); error != 0) {
        std::array<char, 256> text{};
        ERR_error_string_n(error, text.data(), text.size());
        message.append(": ").append(text.data());
    }
    ERR_clear_error();
    throw std::runtime_error(message);
}

void check(int ok, std::string_view what) {
    if (ok != 1) {
        fail(what);
    }
}

std::string bio_text(BIO* bio) {
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio, &data);
    return length > 0 ? std::string(data, static_cast<std::size_t>(length)) : std::string{};
}

std::string x509_pem(X509* cert) {
    BioPtr bio{BIO_new(BIO_s_mem())};
    if (!bio) {
        fail("BIO_new");
    }
    check(PEM_write_bio_X509(bio.get(), cert), "PEM_write_bio_X509");
    return bio_text(bio.get());
}

std::shared_ptr<X509> share(X509Ptr cert) { return {cert.release(), X509_free}; }

std::string base64(std::string_view data) {
    constexpr std::string_view kAlphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((data.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 2 < data.size(); i += 3) {
        const auto n = static_cast<std::uint32_t>(static_cast<unsigned char>(data[i]) << 16 |
                                                  static_cast<unsigned char>(data[i + 1]) << 8 |
                                                  static_cast<unsigned char>(data[i + 2]));
        out.push_back(kAlphabet[(n >> 18) & 63]);
        out.push_back(kAlphabet[(n >> 12) & 63]);
        out.push_back(kAlphabet[(n >> 6) & 63]);
        out.push_back(kAlphabet[n & 63]);
    }
    if (const std::size_t rest = data.size() - i; rest > 0) {
        std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(data[i]) << 16);
        if (rest == 2) {
            n |= static_cast<std::uint32_t>(static_cast<unsigned char>(data[i + 1]) << 8);
        }
        out.push_back(kAlphabet[(n >> 18) & 63]);
        out.push_back(kAlphabet[(n >> 12) & 63]);
        out.push_back(rest == 2 ? kAlphabet[(n >> 6) & 63] : '=');
        out.push_back('=');
    }
    return out;
}

// Everything that varies between the certificates the test PKI makes.
struct CertSpec {
    std::string cn;
    std::string organization;
    std::string serial;
    Clock::time_point not_before;
    Clock::time_point not_after;
    bool is_ca = false;
    std::optional<int> path_len;
    Eku eku = Eku::kNone;
    std::vector<std::string> san_uris;
    std::vector<std::string> san_dns;
    std::vector<std::string> san_ips;
    bool ski = true;
    bool aki = true;
};

pki::Asn1IntegerPtr make_serial(const std::string& decimal) {
    BIGNUM* raw = nullptr;
    if (decimal.empty()) {
        std::array<unsigned char, 16> bytes{};
        check(RAND_bytes(bytes.data(), static_cast<int>(bytes.size())), "RAND_bytes");
        bytes[0] = static_cast<unsigned char>((bytes[0] & 0x7F) | 0x40);  // positive, 16 bytes
        raw = BN_bin2bn(bytes.data(), static_cast<int>(bytes.size()), nullptr);
    } else if (BN_dec2bn(&raw, decimal.c_str()) == 0) {
        fail("serial is not decimal: " + decimal);
    }
    pki::BignumPtr number{raw};
    if (!number) {
        fail("BN_bin2bn");
    }
    pki::Asn1IntegerPtr serial{BN_to_ASN1_INTEGER(number.get(), nullptr)};
    if (!serial) {
        fail("BN_to_ASN1_INTEGER");
    }
    return serial;
}

pki::X509NamePtr make_name(const std::string& cn, const std::string& organization) {
    pki::X509NamePtr name{X509_NAME_new()};
    if (!name) {
        fail("X509_NAME_new");
    }
    const auto add = [&](const char* field, const std::string& value) {
        if (value.empty()) {
            return;
        }
        check(X509_NAME_add_entry_by_txt(name.get(), field, MBSTRING_UTF8,
                                         reinterpret_cast<const unsigned char*>(value.data()),
                                         static_cast<int>(value.size()), -1, 0),
              "X509_NAME_add_entry_by_txt");
    };
    add("O", organization);
    add("CN", cn);
    return name;
}

const char* eku_text(Eku eku) {
    switch (eku) {
        case Eku::kNone:
            return nullptr;
        case Eku::kClientAuth:
            return "clientAuth";
        case Eku::kServerAuth:
            return "serverAuth";
        case Eku::kClientAndServerAuth:
            return "clientAuth,serverAuth";
    }
    return nullptr;
}

void add_ext(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
    pki::X509ExtensionPtr ext{X509V3_EXT_nconf_nid(nullptr, ctx, nid, value.c_str())};
    if (!ext) {
        fail("extension " + std::string(OBJ_nid2sn(nid)) + " = " + value);
    }
    check(X509_add_ext(cert, ext.get(), -1), "X509_add_ext");
}

GENERAL_NAMES* make_general_names(const std::vector<std::string>& uris,
                                  const std::vector<std::string>& dns,
                                  const std::vector<std::string>& ips) {
    pki::GeneralNamesPtr names{GENERAL_NAMES_new()};
    if (!names) {
        fail("GENERAL_NAMES_new");
    }
    const auto push_string = [&](int type, const std::string& value) {
        GENERAL_NAME* name = GENERAL_NAME_new();
        ASN1_IA5STRING* text = ASN1_IA5STRING_new();
        if (name == nullptr || text == nullptr ||
            ASN1_STRING_set(text, value.data(), static_cast<int>(value.size())) != 1) {
            GENERAL_NAME_free(name);
            ASN1_IA5STRING_free(text);
            fail("GENERAL_NAME");
        }
        GENERAL_NAME_set0_value(name, type, text);
        sk_GENERAL_NAME_push(names.get(), name);
    };
    for (const auto& uri : uris) {
        push_string(GEN_URI, uri);
    }
    for (const auto& host : dns) {
        push_string(GEN_DNS, host);
    }
    for (const auto& ip : ips) {
        GENERAL_NAME* name = GENERAL_NAME_new();
        ASN1_OCTET_STRING* address = a2i_IPADDRESS(ip.c_str());
        if (name == nullptr || address == nullptr) {
            GENERAL_NAME_free(name);
            ASN1_OCTET_STRING_free(address);
            fail("IP address " + ip);
        }
        GENERAL_NAME_set0_value(name, GEN_IPADD, address);
        sk_GENERAL_NAME_push(names.get(), name);
    }
    return names.release();
}

// Builds and signs one certificate; `issuer` null means self-signed with `subject_key`.
std::shared_ptr<X509> build_cert(const CertSpec& spec, EVP_PKEY* subject_key, X509* issuer,
                                 EVP_PKEY* issuer_key) {
    X509Ptr cert{X509_new()};
    if (!cert) {
        fail("X509_new");
    }
    check(X509_set_version(cert.get(), X509_VERSION_3), "X509_set_version");
    const auto serial = make_serial(spec.serial);
    check(X509_set_serialNumber(cert.get(), serial.get()), "X509_set_serialNumber");
    const auto subject = make_name(spec.cn, spec.organization);
    check(X509_set_subject_name(cert.get(), subject.get()), "X509_set_subject_name");
    check(X509_set_issuer_name(cert.get(),
                               issuer != nullptr ? X509_get_subject_name(issuer) : subject.get()),
          "X509_set_issuer_name");
    if (ASN1_TIME_set(X509_getm_notBefore(cert.get()), Clock::to_time_t(spec.not_before)) ==
            nullptr ||
        ASN1_TIME_set(X509_getm_notAfter(cert.get()), Clock::to_time_t(spec.not_after)) ==
            nullptr) {
        fail("ASN1_TIME_set");
    }
    check(X509_set_pubkey(cert.get(), subject_key), "X509_set_pubkey");

    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
    if (spec.is_ca) {
        std::string constraints = "critical,CA:TRUE";
        if (spec.path_len) {
            constraints += ",pathlen:" + std::to_string(*spec.path_len);
        }
        add_ext(cert.get(), &ctx, NID_basic_constraints, constraints);
        add_ext(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
    } else {
        add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature");
    }
    if (const char* eku = eku_text(spec.eku); eku != nullptr) {
        add_ext(cert.get(), &ctx, NID_ext_key_usage, eku);
    }
    // The SKI goes first: a self-signed certificate's AKI is computed from it.
    if (spec.ski) {
        add_ext(cert.get(), &ctx, NID_subject_key_identifier, "hash");
    }
    // An AKI names the issuer's SKI, so an issuer without one gets no AKI below it.
    const bool issuer_has_ski =
        issuer != nullptr ? X509_get0_subject_key_id(issuer) != nullptr : spec.ski;
    if (spec.aki && issuer_has_ski) {
        add_ext(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");
    }
    if (!spec.san_uris.empty() || !spec.san_dns.empty() || !spec.san_ips.empty()) {
        pki::GeneralNamesPtr names{make_general_names(spec.san_uris, spec.san_dns, spec.san_ips)};
        check(
            X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT),
            "subjectAltName");
    }
    const pki::EvpPkeyPtr signing_key{pki::key_for_signing(issuer_key)};
    if (!signing_key || X509_sign(cert.get(), signing_key.get(), EVP_sha256()) <= 0) {
        fail("X509_sign");
    }
    return share(std::move(cert));
}

CertSpec leaf_spec(const LeafOptions& options) {
    CertSpec spec;
    spec.cn = options.cn;
    spec.organization = options.organization;
    spec.serial = options.serial;
    spec.not_before = options.not_before;
    spec.not_after = options.not_after;
    spec.eku = options.eku;
    spec.san_uris = options.san_uris;
    spec.san_dns = options.san_dns;
    spec.san_ips = options.san_ips;
    spec.ski = options.ski;
    spec.aki = options.aki;
    return spec;
}

CertSpec ca_spec(std::string_view cn, const CaOptions& options) {
    CertSpec spec;
    spec.cn = std::string(cn);
    spec.organization = options.organization;
    spec.serial = options.serial;
    spec.not_before = options.not_before;
    spec.not_after = options.not_after;
    spec.is_ca = true;
    spec.path_len = options.path_len;
    spec.eku = options.eku;
    spec.ski = options.ski;
    spec.aki = options.aki;
    return spec;
}

void write_text(const std::filesystem::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) {
        throw std::runtime_error("test PKI: cannot write " + path.string());
    }
}

}  // namespace

// ---- TestKey ----

TestKey TestKey::generate() {
    EVP_PKEY* key = pki::generate_ec_key("P-256");  // a provider key, as the hub's own are
    if (key == nullptr) {
        fail("generate_ec_key");
    }
    return TestKey{std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free)};
}

std::string TestKey::private_pem() const {
    BioPtr bio{BIO_new(BIO_s_mem())};
    if (!bio) {
        fail("BIO_new");
    }
    check(PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr),
          "PEM_write_bio_PrivateKey");
    return bio_text(bio.get());
}

std::string TestKey::public_pem() const {
    BioPtr bio{BIO_new(BIO_s_mem())};
    if (!bio) {
        fail("BIO_new");
    }
    check(PEM_write_bio_PUBKEY(bio.get(), key_.get()), "PEM_write_bio_PUBKEY");
    return bio_text(bio.get());
}

// ---- TestCert ----

TestCert::TestCert(std::shared_ptr<X509> cert, TestKey key,
                   std::vector<std::shared_ptr<X509>> issuers)
    : cert_(std::move(cert)), key_(std::move(key)), issuers_(std::move(issuers)) {}

pki::CertificateFacts TestCert::facts() const { return certificate().facts(); }

pki::Certificate TestCert::certificate() const {
    auto parsed = pki::Certificate::from_x509(pki::share_x509(cert_.get()));
    if (!parsed) {
        fail("the hub cannot read a test certificate");
    }
    return std::move(*parsed);
}

std::string TestCert::cert_pem() const { return x509_pem(cert_.get()); }

std::string TestCert::chain_pem() const {
    std::string pem;
    // The last issuer is the root, which a peer never needs to send.
    for (std::size_t i = 0; i + 1 < issuers_.size(); ++i) {
        pem += x509_pem(issuers_[i].get());
    }
    return pem;
}

std::string TestCert::fullchain_pem() const { return cert_pem() + chain_pem(); }

std::string TestCert::cert_pem_base64() const { return base64(cert_pem()); }

std::vector<std::uint8_t> TestCert::der() const {
    const int length = i2d_X509(cert_.get(), nullptr);
    if (length <= 0) {
        fail("i2d_X509");
    }
    std::vector<std::uint8_t> der(static_cast<std::size_t>(length));
    unsigned char* out = der.data();
    i2d_X509(cert_.get(), &out);
    return der;
}

CertFiles TestCert::write_files(const std::filesystem::path& dir, std::string_view name) const {
    std::filesystem::create_directories(dir);
    const std::string base{name};
    CertFiles files;
    files.cert = dir / (base + ".crt");
    files.key = dir / (base + ".key");
    files.fullchain = dir / (base + "-fullchain.crt");
    write_text(files.cert, cert_pem());
    write_text(files.key, key_pem());
    std::filesystem::permissions(
        files.key, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    write_text(files.fullchain, fullchain_pem());
    if (const std::string chain = chain_pem(); !chain.empty()) {
        files.chain = dir / (base + "-chain.crt");
        write_text(files.chain, chain);
    }
    return files;
}

// ---- TestCa ----

TestCert TestCa::issue_leaf(const LeafOptions& options) const {
    TestKey key = options.key ? *options.key : TestKey::generate();
    auto cert = build_cert(leaf_spec(options), key.get(), cert_.get(), key_.get());
    std::vector<std::shared_ptr<X509>> issuers{cert_};
    issuers.insert(issuers.end(), issuers_.begin(), issuers_.end());
    return TestCert{std::move(cert), std::move(key), std::move(issuers)};
}

TestCa TestCa::issue_intermediate(std::string_view cn, const CaOptions& options) const {
    TestKey key = options.key ? *options.key : TestKey::generate();
    auto cert = build_cert(ca_spec(cn, options), key.get(), cert_.get(), key_.get());
    std::vector<std::shared_ptr<X509>> issuers{cert_};
    issuers.insert(issuers.end(), issuers_.begin(), issuers_.end());
    return TestCa{std::move(cert), std::move(key), std::move(issuers)};
}

TestCert TestCa::issue_server_cert(LeafOptions options) const {
    if (options.eku == Eku::kClientAuth) {
        options.eku = Eku::kServerAuth;
    }
    if (options.san_dns.empty()) {
        options.san_dns.emplace_back("localhost");
    }
    if (options.san_ips.empty()) {
        options.san_ips.emplace_back("127.0.0.1");
    }
    return issue_leaf(options);
}

TestCert TestCa::issue_verification_cert(std::string_view token, TokenPlacement placement) const {
    LeafOptions options;
    options.eku = Eku::kNone;
    if (placement == TokenPlacement::kSanUri) {
        options.cn = "CA registration verification";
        options.san_uris.push_back(std::string(pki::kVerifyUriPrefix) + std::string(token));
    } else {
        options.cn = std::string(token);
    }
    return issue_leaf(options);
}

pki::RegisteredCa TestCa::registered(std::int64_t id, std::int64_t org_id, bool active) const {
    const pki::CertificateFacts ca_facts = facts();
    pki::RegisteredCa ca;
    ca.id = id;
    ca.org_id = org_id;
    ca.serial = ca_facts.serial;
    ca.ski = ca_facts.ski;
    ca.active = active;
    ca.der = ca_facts.der;
    return ca;
}

// ---- TestPki ----

TestCa TestPki::make_root(std::string_view cn, const CaOptions& options) {
    TestKey key = options.key ? *options.key : TestKey::generate();
    auto cert = build_cert(ca_spec(cn, options), key.get(), nullptr, key.get());
    return TestCa{std::move(cert), std::move(key), {}};
}

TestCert TestPki::make_self_signed_leaf(const LeafOptions& options) {
    TestKey key = options.key ? *options.key : TestKey::generate();
    auto cert = build_cert(leaf_spec(options), key.get(), nullptr, key.get());
    return TestCert{std::move(cert), std::move(key), {}};
}

std::string TestPki::make_csr(const TestKey& key, std::string_view cn,
                              const std::vector<std::string>& san_uris) {
    pki::X509ReqPtr request{X509_REQ_new()};
    if (!request) {
        fail("X509_REQ_new");
    }
    check(X509_REQ_set_version(request.get(), X509_REQ_VERSION_1), "X509_REQ_set_version");
    const auto subject = make_name(std::string(cn), {});
    check(X509_REQ_set_subject_name(request.get(), subject.get()), "X509_REQ_set_subject_name");
    check(X509_REQ_set_pubkey(request.get(), key.get()), "X509_REQ_set_pubkey");
    if (!san_uris.empty()) {
        pki::GeneralNamesPtr names{make_general_names(san_uris, {}, {})};
        STACK_OF(X509_EXTENSION)* extensions = nullptr;
        const bool added =
            X509V3_add1_i2d(&extensions, NID_subject_alt_name, names.get(), 0, 0) == 1 &&
            X509_REQ_add_extensions(request.get(), extensions) == 1;
        sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
        if (!added) {
            fail("CSR subjectAltName");
        }
    }
    const pki::EvpPkeyPtr signing_key{pki::key_for_signing(key.get())};
    if (!signing_key || X509_REQ_sign(request.get(), signing_key.get(), EVP_sha256()) <= 0) {
        fail("X509_REQ_sign");
    }
    BioPtr bio{BIO_new(BIO_s_mem())};
    if (!bio) {
        fail("BIO_new");
    }
    check(PEM_write_bio_X509_REQ(bio.get(), request.get()), "PEM_write_bio_X509_REQ");
    return bio_text(bio.get());
}

// ---- TLS over memory ----

namespace {

constexpr std::string_view kSessionContext = "otahub-test";

void use_identity(SSL_CTX* ctx, const TestCert& cert, bool send_chain) {
    check(SSL_CTX_use_certificate(ctx, cert.x509()), "SSL_CTX_use_certificate");
    check(SSL_CTX_use_PrivateKey(ctx, cert.key().get()), "SSL_CTX_use_PrivateKey");
    check(SSL_CTX_check_private_key(ctx), "SSL_CTX_check_private_key");
    if (!send_chain) {
        return;
    }
    const auto& issuers = cert.issuers();
    for (std::size_t i = 0; i + 1 < issuers.size(); ++i) {
        check(static_cast<int>(SSL_CTX_add1_chain_cert(ctx, issuers[i].get())),
              "SSL_CTX_add1_chain_cert");
    }
}

struct AlertLog {
    int received = -1;
    int sent = -1;
};

void record_alert(const SSL* ssl, int where, int value) {
    if ((where & SSL_CB_ALERT) == 0 || (value >> 8) != SSL3_AL_FATAL) {
        return;
    }
    auto* log = static_cast<AlertLog*>(SSL_get_app_data(ssl));
    if (log == nullptr) {
        return;
    }
    int& slot = (where & SSL_CB_READ) != 0 ? log->received : log->sent;
    if (slot < 0) {
        slot = value & 0xFF;
    }
}

enum class Progress { kRunning, kDone, kFailed };

Progress step(SSL* ssl, std::string* error) {
    ERR_clear_error();
    const int result = SSL_do_handshake(ssl);
    if (result == 1) {
        return Progress::kDone;
    }
    const int code = SSL_get_error(ssl, result);
    if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) {
        return Progress::kRunning;
    }
    if (error != nullptr && error->empty()) {
        const char* reason = ERR_reason_error_string(ERR_peek_last_error());
        *error = reason != nullptr ? reason : "handshake failed";
    }
    ERR_clear_error();
    return Progress::kFailed;
}

bool exchange(SSL* from, SSL* to, std::string_view message) {
    ERR_clear_error();
    if (SSL_write(from, message.data(), static_cast<int>(message.size())) !=
        static_cast<int>(message.size())) {
        ERR_clear_error();
        return false;
    }
    std::array<char, 64> buffer{};
    const int read = SSL_read(to, buffer.data(), static_cast<int>(buffer.size()));
    ERR_clear_error();
    return read == static_cast<int>(message.size()) &&
           std::string_view(buffer.data(), message.size()) == message;
}

}  // namespace

pki::SslCtxPtr make_server_ctx(const TestCert& server_cert) {
    pki::SslCtxPtr ctx{SSL_CTX_new(TLS_server_method())};
    if (!ctx) {
        fail("SSL_CTX_new");
    }
    check(SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION), "min proto");
    use_identity(ctx.get(), server_cert, true);
    check(SSL_CTX_set_session_id_context(
              ctx.get(), reinterpret_cast<const unsigned char*>(kSessionContext.data()),
              static_cast<unsigned int>(kSessionContext.size())),
          "SSL_CTX_set_session_id_context");
    return ctx;
}

pki::SslCtxPtr make_client_ctx(TlsVersion version, const TestCa& server_root,
                               const TestCert* client_cert, bool send_chain) {
    pki::SslCtxPtr ctx{SSL_CTX_new(TLS_client_method())};
    if (!ctx) {
        fail("SSL_CTX_new");
    }
    const int pinned = version == TlsVersion::kTls12 ? TLS1_2_VERSION : TLS1_3_VERSION;
    check(SSL_CTX_set_min_proto_version(ctx.get(), pinned), "min proto");
    check(SSL_CTX_set_max_proto_version(ctx.get(), pinned), "max proto");
    check(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), server_root.x509()),
          "X509_STORE_add_cert");
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    // Send exactly what we configured: no chain built from the client's own trust store.
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_NO_AUTO_CHAIN);
    if (client_cert != nullptr) {
        use_identity(ctx.get(), *client_cert, send_chain);
    }
    return ctx;
}

HandshakeOutcome run_memory_handshake(SSL_CTX* server_ctx, SSL_CTX* client_ctx,
                                      SSL_SESSION* resume) {
    HandshakeOutcome outcome;
    outcome.client.reset(SSL_new(client_ctx));
    outcome.server.reset(SSL_new(server_ctx));
    if (!outcome.client || !outcome.server) {
        fail("SSL_new");
    }
    if (resume != nullptr) {
        check(SSL_set_session(outcome.client.get(), resume), "SSL_set_session");
    }
    BIO* client_io = nullptr;
    BIO* server_io = nullptr;
    check(BIO_new_bio_pair(&client_io, 0, &server_io, 0), "BIO_new_bio_pair");
    SSL_set_bio(outcome.client.get(), client_io, client_io);
    SSL_set_bio(outcome.server.get(), server_io, server_io);
    SSL_set_connect_state(outcome.client.get());
    SSL_set_accept_state(outcome.server.get());

    AlertLog client_log;
    AlertLog server_log;
    SSL_set_app_data(outcome.client.get(), &client_log);
    SSL_set_app_data(outcome.server.get(), &server_log);
    SSL_set_info_callback(outcome.client.get(), record_alert);
    SSL_set_info_callback(outcome.server.get(), record_alert);

    Progress client = Progress::kRunning;
    Progress server = Progress::kRunning;
    std::string client_error;
    // Each round moves at least one flight when the handshake can progress; a few dozen rounds
    // are far more than TLS needs, and the bound guarantees termination.
    for (int round = 0; round < 32; ++round) {
        if (client == Progress::kRunning) {
            client = step(outcome.client.get(), &client_error);
        }
        if (server == Progress::kRunning) {
            server = step(outcome.server.get(), &outcome.server_error);
        }
        if (client != Progress::kRunning && server != Progress::kRunning) {
            break;
        }
    }
    if (client == Progress::kDone) {
        // A TLS 1.3 client is done before the server has judged its certificate: reading is
        // what delivers the server's verdict (data, or an alert).
        if (server == Progress::kDone) {
            outcome.client_ok = exchange(outcome.server.get(), outcome.client.get(), "ping");
            outcome.server_ok =
                outcome.client_ok && exchange(outcome.client.get(), outcome.server.get(), "pong");
        } else {
            std::array<char, 16> buffer{};
            SSL_read(outcome.client.get(), buffer.data(), static_cast<int>(buffer.size()));
            ERR_clear_error();
        }
    }

    SSL_set_app_data(outcome.client.get(), nullptr);
    SSL_set_app_data(outcome.server.get(), nullptr);
    outcome.client_received_alert = client_log.received;
    outcome.server_sent_alert = server_log.sent;
    if (client_log.received >= 0) {
        outcome.client_received_alert_text = SSL_alert_desc_string_long(client_log.received);
    }
    return outcome;
}

}  // namespace otahub::test_support
