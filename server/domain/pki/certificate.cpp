#include "server/domain/pki/certificate.hpp"

#include <openssl/pem.h>

#include <array>
#include <ctime>

namespace otahub::pki {
namespace {

using Clock = std::chrono::system_clock;

// A password callback that refuses: a crafted "Proc-Type: 4,ENCRYPTED" header must never make
// OpenSSL's default callback prompt on a terminal.
int refuse_password(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*userdata*/) { return -1; }

std::string_view trim(std::string_view text) {
    constexpr std::string_view kSpace = " \t\r\n\f\v";
    const auto first = text.find_first_not_of(kSpace);
    if (first == std::string_view::npos) {
        return {};
    }
    const auto last = text.find_last_not_of(kSpace);
    return text.substr(first, last - first + 1);
}

bool looks_like_pem(std::string_view text) {
    return text.find("-----BEGIN ") != std::string_view::npos;
}

std::string asn1_string_text(const ASN1_STRING* value) {
    if (value == nullptr) {
        return {};
    }
    const auto* data = ASN1_STRING_get0_data(value);
    const int length = ASN1_STRING_length(value);
    if (data == nullptr || length <= 0) {
        return {};
    }
    return std::string(reinterpret_cast<const char*>(data), static_cast<std::size_t>(length));
}

std::optional<std::string> name_line(const X509_NAME* name) {
    BioPtr bio{BIO_new(BIO_s_mem())};
    if (!bio || name == nullptr) {
        return std::nullopt;
    }
    // RFC 2253, but keep UTF-8 instead of escaping every non-ASCII byte.
    const unsigned long flags = XN_FLAG_RFC2253 & ~static_cast<unsigned long>(ASN1_STRFLGS_ESC_MSB);
    if (X509_NAME_print_ex(bio.get(), name, 0, flags) < 0) {
        return std::nullopt;
    }
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio.get(), &data);
    if (length < 0) {
        return std::nullopt;
    }
    return std::string(data, static_cast<std::size_t>(length));
}

std::optional<std::string> common_name_of(const X509_NAME* name) {
    const int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (index < 0) {
        return std::string{};
    }
    const X509_NAME_ENTRY* entry = X509_NAME_get_entry(name, index);
    unsigned char* utf8 = nullptr;
    const int length = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(entry));
    if (length < 0) {
        return std::nullopt;
    }
    std::string cn(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length));
    OPENSSL_free(utf8);
    return cn;
}

std::optional<Clock::time_point> to_time_point(const ASN1_TIME* time) {
    std::tm tm{};
    if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) {
        return std::nullopt;
    }
    using namespace std::chrono;
    const year_month_day date{year{tm.tm_year + 1900}, month{static_cast<unsigned>(tm.tm_mon + 1)},
                              day{static_cast<unsigned>(tm.tm_mday)}};
    if (!date.ok()) {
        return std::nullopt;
    }
    const auto since_epoch = sys_days{date}.time_since_epoch() + hours{tm.tm_hour} +
                             minutes{tm.tm_min} + seconds{tm.tm_sec};
    // The clock counts nanoseconds in 64 bits (years 1678..2262); certificates say 9999.
    const auto max_seconds = duration_cast<seconds>(Clock::duration::max());
    const auto min_seconds = duration_cast<seconds>(Clock::duration::min());
    if (since_epoch >= max_seconds) {
        return Clock::time_point::max();
    }
    if (since_epoch <= min_seconds) {
        return Clock::time_point::min();
    }
    return Clock::time_point{duration_cast<Clock::duration>(since_epoch)};
}

std::optional<std::string> serial_text(const ASN1_INTEGER* serial, bool decimal) {
    BignumPtr number{ASN1_INTEGER_to_BN(serial, nullptr)};
    if (!number) {
        return std::nullopt;
    }
    char* text = decimal ? BN_bn2dec(number.get()) : BN_bn2hex(number.get());
    if (text == nullptr) {
        return std::nullopt;
    }
    std::string result(text);
    OPENSSL_free(text);
    return result;
}

std::optional<std::vector<std::uint8_t>> spki_der(X509* cert) {
    X509_PUBKEY* key = X509_get_X509_PUBKEY(cert);
    if (key == nullptr) {
        return std::nullopt;
    }
    const int length = i2d_X509_PUBKEY(key, nullptr);
    if (length <= 0) {
        return std::nullopt;
    }
    std::vector<std::uint8_t> der(static_cast<std::size_t>(length));
    unsigned char* out = der.data();
    if (i2d_X509_PUBKEY(key, &out) != length) {
        return std::nullopt;
    }
    return der;
}

std::optional<std::string> sha1_hex(std::span<const std::uint8_t> data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    if (EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha1(), nullptr) != 1) {
        return std::nullopt;
    }
    return to_hex_upper({digest.data(), length});
}

// Fills the subjectAltName lists; false when the extension is present but undecodable.
bool read_san(X509* cert, CertificateFacts& facts) {
    int critical = 0;
    GeneralNamesPtr names{static_cast<GENERAL_NAMES*>(
        X509_get_ext_d2i(cert, NID_subject_alt_name, &critical, nullptr))};
    if (!names) {
        // -1: absent; anything else: present twice or malformed.
        return critical == -1;
    }
    for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
        const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
        if (name->type == GEN_URI) {
            facts.san_uris.push_back(asn1_string_text(name->d.uniformResourceIdentifier));
        } else if (name->type == GEN_DNS) {
            facts.san_dns.push_back(asn1_string_text(name->d.dNSName));
        }
    }
    return true;
}

// Reads basicConstraints; nullopt when present but undecodable.
std::optional<bool> read_is_ca(X509* cert) {
    int critical = 0;
    BasicConstraintsPtr constraints{static_cast<BASIC_CONSTRAINTS*>(
        X509_get_ext_d2i(cert, NID_basic_constraints, &critical, nullptr))};
    if (!constraints) {
        if (critical == -1) {
            return false;
        }
        return std::nullopt;
    }
    return constraints->ca != 0;
}

constexpr std::int8_t base64_value(char c) {
    if (c >= 'A' && c <= 'Z') {
        return static_cast<std::int8_t>(c - 'A');
    }
    if (c >= 'a' && c <= 'z') {
        return static_cast<std::int8_t>(c - 'a' + 26);
    }
    if (c >= '0' && c <= '9') {
        return static_cast<std::int8_t>(c - '0' + 52);
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

}  // namespace

std::string to_hex_upper(std::span<const std::uint8_t> bytes) {
    constexpr std::string_view kDigits = "0123456789ABCDEF";
    std::string hex;
    hex.reserve(bytes.size() * 2);
    for (const std::uint8_t byte : bytes) {
        hex.push_back(kDigits[byte >> 4]);
        hex.push_back(kDigits[byte & 0x0F]);
    }
    return hex;
}

std::optional<std::vector<std::uint8_t>> decode_base64(std::string_view text) {
    std::vector<std::uint8_t> out;
    out.reserve(text.size() / 4 * 3);
    std::uint32_t buffer = 0;
    int bits = 0;
    std::size_t symbols = 0;
    std::size_t padding = 0;
    for (const char c : text) {
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v') {
            continue;
        }
        if (c == '=') {
            ++padding;
            continue;
        }
        const std::int8_t value = base64_value(c);
        if (value < 0 || padding > 0) {
            return std::nullopt;  // unknown symbol, or data after padding
        }
        ++symbols;
        buffer = (buffer << 6) | static_cast<std::uint32_t>(value);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<std::uint8_t>((buffer >> bits) & 0xFF));
        }
    }
    if (symbols % 4 == 1 || padding > 2 || (padding > 0 && (symbols + padding) % 4 != 0)) {
        return std::nullopt;
    }
    // Leftover bits must be zero, so each text has one decoding.
    if (bits > 0 && (buffer & ((1U << bits) - 1)) != 0) {
        return std::nullopt;
    }
    return out;
}

std::optional<CertificateFacts> read_certificate_facts(X509* cert) {
    if (cert == nullptr) {
        return std::nullopt;
    }
    const OpensslErrorScope errors;
    // Decodes and caches the extensions; a certificate whose extensions do not decode is refused.
    if ((X509_get_extension_flags(cert) & EXFLAG_INVALID) != 0) {
        return std::nullopt;
    }
    CertificateFacts facts;
    auto serial = serial_text(X509_get0_serialNumber(cert), true);
    auto serial_hex = serial_text(X509_get0_serialNumber(cert), false);
    auto common_name = common_name_of(X509_get_subject_name(cert));
    auto subject = name_line(X509_get_subject_name(cert));
    auto issuer = name_line(X509_get_issuer_name(cert));
    auto not_before = to_time_point(X509_get0_notBefore(cert));
    auto not_after = to_time_point(X509_get0_notAfter(cert));
    auto is_ca = read_is_ca(cert);
    if (!serial || !serial_hex || !common_name || !subject || !issuer || !not_before ||
        !not_after || !is_ca) {
        return std::nullopt;
    }
    facts.serial = std::move(*serial);
    facts.serial_hex = std::move(*serial_hex);
    facts.common_name = std::move(*common_name);
    facts.subject = std::move(*subject);
    facts.issuer = std::move(*issuer);
    facts.not_before = *not_before;
    facts.not_after = *not_after;
    facts.is_ca = *is_ca;

    if (const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(cert); ski != nullptr) {
        facts.ski = to_hex_upper(
            {ASN1_STRING_get0_data(ski), static_cast<std::size_t>(ASN1_STRING_length(ski))});
    }
    if (const ASN1_OCTET_STRING* aki = X509_get0_authority_key_id(cert); aki != nullptr) {
        facts.aki = to_hex_upper(
            {ASN1_STRING_get0_data(aki), static_cast<std::size_t>(ASN1_STRING_length(aki))});
    }

    facts.has_eku = (X509_get_extension_flags(cert) & EXFLAG_XKUSAGE) != 0;
    if (facts.has_eku) {
        const std::uint32_t usage = X509_get_extended_key_usage(cert);
        facts.eku_client_auth = (usage & XKU_SSL_CLIENT) != 0;
        facts.eku_server_auth = (usage & XKU_SSL_SERVER) != 0;
    }
    if (!read_san(cert, facts)) {
        return std::nullopt;
    }

    const int der_length = i2d_X509(cert, nullptr);
    if (der_length <= 0) {
        return std::nullopt;
    }
    facts.der.resize(static_cast<std::size_t>(der_length));
    unsigned char* out = facts.der.data();
    if (i2d_X509(cert, &out) != der_length) {
        return std::nullopt;
    }
    auto fingerprint = sha1_hex(facts.der);
    auto key_der = spki_der(cert);
    if (!fingerprint || !key_der) {
        return std::nullopt;
    }
    auto key_fingerprint = sha1_hex(*key_der);
    if (!key_fingerprint) {
        return std::nullopt;
    }
    facts.fingerprint = std::move(*fingerprint);
    facts.public_key_fingerprint = std::move(*key_fingerprint);
    return facts;
}

Certificate::Certificate(X509Ptr cert, CertificateFacts facts)
    : cert_(std::move(cert)), facts_(std::move(facts)) {}

Certificate::Certificate(const Certificate& other)
    : cert_(share_x509(other.cert_.get())), facts_(other.facts_) {}

Certificate& Certificate::operator=(const Certificate& other) {
    if (this != &other) {
        cert_ = share_x509(other.cert_.get());
        facts_ = other.facts_;
    }
    return *this;
}

std::optional<Certificate> Certificate::from_x509(X509Ptr cert) {
    auto facts = read_certificate_facts(cert.get());
    if (!facts) {
        return std::nullopt;
    }
    return Certificate{std::move(cert), std::move(*facts)};
}

std::optional<Certificate> Certificate::from_pem(std::string_view pem) {
    if (pem.empty() || pem.size() > kMaxCertificateInputBytes) {
        return std::nullopt;
    }
    const OpensslErrorScope errors;
    BioPtr bio{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
    if (!bio) {
        return std::nullopt;
    }
    X509Ptr cert{PEM_read_bio_X509(bio.get(), nullptr, refuse_password, nullptr)};
    return from_x509(std::move(cert));
}

std::optional<Certificate> Certificate::from_der(std::span<const std::uint8_t> der) {
    if (der.empty() || der.size() > kMaxCertificateInputBytes) {
        return std::nullopt;
    }
    const OpensslErrorScope errors;
    const unsigned char* cursor = der.data();
    X509Ptr cert{d2i_X509(nullptr, &cursor, static_cast<long>(der.size()))};
    if (!cert || cursor != der.data() + der.size()) {
        return std::nullopt;
    }
    return from_x509(std::move(cert));
}

std::optional<Certificate> Certificate::parse(std::string_view input) {
    if (input.size() > kMaxCertificateInputBytes) {
        return std::nullopt;
    }
    const std::string_view text = trim(input);
    if (text.empty()) {
        return std::nullopt;
    }
    if (looks_like_pem(text)) {
        return from_pem(text);
    }
    if (static_cast<unsigned char>(input.front()) == 0x30) {  // DER SEQUENCE
        auto der = from_der({reinterpret_cast<const std::uint8_t*>(input.data()), input.size()});
        if (der) {
            return der;
        }
    }
    auto decoded = decode_base64(text);
    if (!decoded || decoded->empty()) {
        return std::nullopt;
    }
    const std::string_view decoded_text{reinterpret_cast<const char*>(decoded->data()),
                                        decoded->size()};
    if (looks_like_pem(decoded_text)) {
        return from_pem(decoded_text);
    }
    return from_der(*decoded);
}

std::string Certificate::pem() const {
    BioPtr bio{BIO_new(BIO_s_mem())};
    if (!bio || PEM_write_bio_X509(bio.get(), cert_.get()) != 1) {
        return {};
    }
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio.get(), &data);
    return length > 0 ? std::string(data, static_cast<std::size_t>(length)) : std::string{};
}

std::vector<Certificate> parse_certificate_chain(std::string_view pem) {
    std::vector<Certificate> chain;
    if (pem.empty() || pem.size() > kMaxCertificateInputBytes) {
        return chain;
    }
    const OpensslErrorScope errors;
    BioPtr bio{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
    if (!bio) {
        return chain;
    }
    const auto blocks = [&] {
        std::size_t count = 0;
        for (auto at = pem.find("-----BEGIN "); at != std::string_view::npos;
             at = pem.find("-----BEGIN ", at + 1)) {
            ++count;
        }
        return count;
    }();
    while (true) {
        X509Ptr cert{PEM_read_bio_X509(bio.get(), nullptr, refuse_password, nullptr)};
        if (!cert) {
            break;
        }
        auto parsed = Certificate::from_x509(std::move(cert));
        if (!parsed) {
            chain.clear();
            break;
        }
        chain.push_back(std::move(*parsed));
    }
    if (chain.size() != blocks) {
        chain.clear();  // a block that is not a certificate, or one that did not parse
    }
    return chain;
}

}  // namespace otahub::pki
