#include "server/domain/accounts.hpp"

#include <argon2.h>

#include <array>
#include <cstring>
#include <stdexcept>

#include "server/domain/crypto.hpp"

namespace otahub {
namespace {

// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
constexpr uint32_t kArgonTime = 2;
constexpr uint32_t kArgonMemoryKib = 19 * 1024;
constexpr uint32_t kArgonLanes = 1;
constexpr std::size_t kSaltBytes = 16;
constexpr std::size_t kHashBytes = 32;

uint32_t crc32(std::string_view data) {
    uint32_t crc = 0xffffffffu;
    for (unsigned char c : data) {
        crc ^= c;
        for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

std::string base62(std::string_view bytes) {
    static constexpr std::string_view kDigits =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    std::string number(bytes);
    std::string out;
    // Repeated division of the big-endian byte string by 62.
    while (!number.empty()) {
        std::string quotient;
        unsigned remainder = 0;
        for (unsigned char c : number) {
            unsigned acc = remainder * 256 + c;
            unsigned q = acc / 62;
            remainder = acc % 62;
            if (!quotient.empty() || q != 0) quotient.push_back(static_cast<char>(q));
        }
        out.push_back(kDigits[remainder]);
        number = std::move(quotient);
    }
    return {out.rbegin(), out.rend()};
}

}  // namespace

std::string_view to_string(Role role) {
    switch (role) {
        case Role::kAdmin: return "admin";
        case Role::kManage: return "manage";
        case Role::kView: return "view";
    }
    return "view";
}

std::optional<Role> parse_role(std::string_view text) {
    if (text == "admin") return Role::kAdmin;
    if (text == "manage") return Role::kManage;
    if (text == "view") return Role::kView;
    return std::nullopt;
}

bool valid_org_name(std::string_view name) {
    if (name.empty() || name.size() > 64) return false;
    auto alnum = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    };
    if (!alnum(name.front())) return false;
    for (char c : name) {
        if (!alnum(c) && c != '_' && c != '-' && c != '.') return false;
    }
    return true;
}

bool valid_product_name(std::string_view name) {
    if (name.empty() || name.size() > 100) return false;
    for (unsigned char c : name) {
        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\' || c == '?' || c == '#') return false;
    }
    return name.front() != ' ' && name.back() != ' ';
}

bool valid_email(std::string_view email) {
    if (email.size() < 3 || email.size() > 254) return false;
    auto at = email.find('@');
    if (at == std::string_view::npos || at == 0 || at + 1 >= email.size()) return false;
    if (email.find('@', at + 1) != std::string_view::npos) return false;
    for (unsigned char c : email) {
        if (c <= 0x20 || c == 0x7f) return false;
    }
    return true;
}

std::string generate_token() {
    std::string bytes = crypto::random_bytes(32);
    uint32_t crc = crc32(bytes);
    for (int shift = 24; shift >= 0; shift -= 8) {
        bytes.push_back(static_cast<char>((crc >> shift) & 0xff));
    }
    return "nhu_" + base62(bytes);
}

std::string token_digest(std::string_view token) { return crypto::sha256(token); }

std::string hash_password(std::string_view password) {
    std::string salt = crypto::random_bytes(kSaltBytes);
    std::size_t length = argon2_encodedlen(kArgonTime, kArgonMemoryKib, kArgonLanes, kSaltBytes,
                                           kHashBytes, Argon2_id);
    std::string encoded(length, '\0');
    int rc = argon2id_hash_encoded(kArgonTime, kArgonMemoryKib, kArgonLanes, password.data(),
                                   password.size(), salt.data(), salt.size(), kHashBytes,
                                   encoded.data(), encoded.size());
    if (rc != ARGON2_OK) throw std::runtime_error(argon2_error_message(rc));
    encoded.resize(std::strlen(encoded.c_str()));
    return encoded;
}

bool verify_password(std::string_view password, const std::string& encoded) {
    if (encoded.rfind("$argon2id$", 0) != 0) return false;
    return argon2id_verify(encoded.c_str(), password.data(), password.size()) == ARGON2_OK;
}

}  // namespace otahub
