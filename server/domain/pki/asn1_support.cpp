#include "server/domain/pki/asn1_support.hpp"

#include <openssl/ec.h>
#include <openssl/rand.h>

#include <array>
#include <ctime>

#include "server/domain/pki/certificate.hpp"

namespace otahub::pki::detail {
namespace {

using Clock = std::chrono::system_clock;

// RFC 5280 caps serials at 20 octets; 49 decimal digits can exceed that, 48 cannot reach it.
constexpr std::size_t kMaxSerialDigits = 49;
constexpr int kMaxSerialBytes = 20;

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

}  // namespace

int refuse_password(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*userdata*/) { return -1; }

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

Asn1TimePtr to_asn1_time(Clock::time_point time, std::chrono::seconds offset) {
    constexpr long long kSecondsPerDay = 24 * 60 * 60;
    // ASN1_TIME_adj takes whole days as an int; anything near that range fails later anyway.
    constexpr long long kMaxDays = 10'000LL * 366;
    const long long days = offset.count() / kSecondsPerDay;
    if (days > kMaxDays || days < -kMaxDays) {
        return nullptr;
    }
    const long seconds = static_cast<long>(offset.count() % kSecondsPerDay);
    return Asn1TimePtr{
        ASN1_TIME_adj(nullptr, Clock::to_time_t(time), static_cast<int>(days), seconds)};
}

std::optional<std::string> to_decimal(const ASN1_INTEGER* value) {
    BignumPtr number{ASN1_INTEGER_to_BN(value, nullptr)};
    if (!number) {
        return std::nullopt;
    }
    char* text = BN_bn2dec(number.get());
    if (text == nullptr) {
        return std::nullopt;
    }
    std::string result(text);
    OPENSSL_free(text);
    return result;
}

Asn1IntegerPtr parse_decimal_serial(std::string_view decimal) {
    if (decimal.empty() || decimal.size() > kMaxSerialDigits ||
        decimal.find_first_not_of("0123456789") != std::string_view::npos) {
        return nullptr;
    }
    const std::string text(decimal);
    BIGNUM* raw = nullptr;
    if (BN_dec2bn(&raw, text.c_str()) != static_cast<int>(text.size())) {
        BN_free(raw);
        return nullptr;
    }
    const BignumPtr number{raw};
    // The DER INTEGER needs a leading zero octet when the top bit is set.
    if (BN_num_bits(number.get()) / 8 + 1 > kMaxSerialBytes) {
        return nullptr;
    }
    return Asn1IntegerPtr{BN_to_ASN1_INTEGER(number.get(), nullptr)};
}

Asn1IntegerPtr random_serial() {
    std::array<unsigned char, 16> bytes{};
    BignumPtr number;
    do {
        if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
            return nullptr;
        }
        bytes[0] &= 0x7F;  // positive, so DER needs no leading zero octet: 16 octets at most
        number.reset(BN_bin2bn(bytes.data(), static_cast<int>(bytes.size()), nullptr));
        if (!number) {
            return nullptr;
        }
    } while (BN_is_zero(number.get()));
    return Asn1IntegerPtr{BN_to_ASN1_INTEGER(number.get(), nullptr)};
}

const EVP_MD* signing_digest(EVP_PKEY* key) {
    switch (EVP_PKEY_get_base_id(key)) {
        case EVP_PKEY_ED25519:
        case EVP_PKEY_ED448:
            return nullptr;
        case EVP_PKEY_EC: {
            std::array<char, 64> group{};
            std::size_t length = 0;
            if (EVP_PKEY_get_group_name(key, group.data(), group.size(), &length) == 1 &&
                (EC_curve_nist2nid(group.data()) == NID_secp384r1 ||
                 OBJ_txt2nid(group.data()) == NID_secp384r1)) {
                return EVP_sha384();
            }
            return EVP_sha256();
        }
        default:
            return EVP_sha256();
    }
}

std::optional<Unwrapped> unwrap_encoding(std::string_view input, std::size_t max_bytes) {
    if (input.size() > max_bytes) {
        return std::nullopt;
    }
    const std::string_view text = trim(input);
    if (text.empty()) {
        return std::nullopt;
    }
    if (looks_like_pem(text)) {
        return Unwrapped{true, std::string(text)};
    }
    // DER never decodes as base64 (its length octets are not ASCII), so try base64 first.
    if (auto decoded = decode_base64(text); decoded && !decoded->empty()) {
        std::string bytes(reinterpret_cast<const char*>(decoded->data()), decoded->size());
        const bool pem = looks_like_pem(bytes);
        return Unwrapped{pem, std::move(bytes)};
    }
    if (static_cast<unsigned char>(input.front()) == 0x30) {  // DER SEQUENCE
        return Unwrapped{false, std::string(input)};
    }
    return std::nullopt;
}

}  // namespace otahub::pki::detail
