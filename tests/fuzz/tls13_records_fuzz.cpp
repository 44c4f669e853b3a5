// libFuzzer harness for the hub's TLS 1.3 record layer (net::Tls13Records): what a device sends
// after its handshake. The input picks the suite, then describes the byte stream as chunks: raw
// bytes (headers and ciphertext the fuzzer makes up), or records this harness seals with the
// client's real key (any inner content type, payload and padding, so alerts, KeyUpdate and
// unexpected types are reached past the authentication tag). The record layer reads it all in
// small pieces; every answer it sends is discarded. Built and run by tests/fuzz/run.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "server/net/tls13_records.hpp"

namespace {

using otahub::net::Tls13Records;

struct Suite {
    std::uint16_t id;
    const EVP_CIPHER* (*cipher)();
    const EVP_MD* (*digest)();
    std::size_t key_bytes;
};

constexpr Suite kSuites[] = {
    {0x1301, EVP_aes_128_gcm, EVP_sha256, 16},
    {0x1302, EVP_aes_256_gcm, EVP_sha384, 32},
    {0x1303, EVP_chacha20_poly1305, EVP_sha256, 32},
};

// HKDF-Expand-Label with an empty context, one HMAC block (written independently of the code
// under test, so a shared mistake would not cancel out).
void expand_label(const EVP_MD* md, const std::uint8_t* secret, std::size_t secret_bytes,
                  std::string_view label, std::uint8_t* out, std::size_t length) {
    std::vector<std::uint8_t> info = {static_cast<std::uint8_t>(length >> 8),
                                      static_cast<std::uint8_t>(length),
                                      static_cast<std::uint8_t>(6 + label.size())};
    for (char c : std::string_view("tls13 ")) info.push_back(static_cast<std::uint8_t>(c));
    for (char c : label) info.push_back(static_cast<std::uint8_t>(c));
    info.push_back(0);
    info.push_back(1);
    std::uint8_t block[EVP_MAX_MD_SIZE];
    unsigned int block_bytes = 0;
    HMAC(md, secret, static_cast<int>(secret_bytes), info.data(), info.size(), block, &block_bytes);
    std::memcpy(out, block, length);
}

// The client's side: seals records the way a TLS 1.3 client does.
class ClientSealer {
  public:
    ClientSealer(const Suite& suite, const std::uint8_t* secret, std::size_t secret_bytes)
        : ctx_(EVP_CIPHER_CTX_new()) {
        std::uint8_t key[32];
        expand_label(suite.digest(), secret, secret_bytes, "key", key, suite.key_bytes);
        expand_label(suite.digest(), secret, secret_bytes, "iv", iv_.data(), iv_.size());
        EVP_EncryptInit_ex(ctx_, suite.cipher(), nullptr, key, nullptr);
    }
    ~ClientSealer() { EVP_CIPHER_CTX_free(ctx_); }
    ClientSealer(const ClientSealer&) = delete;
    ClientSealer& operator=(const ClientSealer&) = delete;

    void seal(std::uint8_t type, const std::uint8_t* data, std::size_t size, std::size_t padding,
              std::vector<std::uint8_t>& wire) {
        std::vector<std::uint8_t> inner(data, data + size);
        inner.push_back(type);
        inner.resize(inner.size() + padding, 0);
        const std::size_t total = inner.size() + 16;
        const std::uint8_t header[5] = {0x17, 0x03, 0x03, static_cast<std::uint8_t>(total >> 8),
                                        static_cast<std::uint8_t>(total)};
        std::array<std::uint8_t, 12> nonce = iv_;
        for (int i = 0; i < 8; ++i)
            nonce[11 - i] ^= static_cast<std::uint8_t>(sequence_ >> (8 * i));
        ++sequence_;
        std::vector<std::uint8_t> out(inner.size() + 16);
        int n = 0;
        EVP_EncryptInit_ex(ctx_, nullptr, nullptr, nullptr, nonce.data());
        EVP_EncryptUpdate(ctx_, nullptr, &n, header, 5);
        EVP_EncryptUpdate(ctx_, out.data(), &n, inner.data(), static_cast<int>(inner.size()));
        EVP_EncryptFinal_ex(ctx_, out.data() + n, &n);
        EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, 16, out.data() + inner.size());
        wire.insert(wire.end(), header, header + 5);
        wire.insert(wire.end(), out.begin(), out.end());
    }

  private:
    EVP_CIPHER_CTX* ctx_;
    std::array<std::uint8_t, 12> iv_{};
    std::uint64_t sequence_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const Suite& suite = kSuites[data[0] % 3];
    const std::size_t piece = 1 + data[1] % 64;  // how many bytes each receive hands over
    data += 2;
    size -= 2;
    const std::size_t hash_bytes = suite.digest == EVP_sha384 ? 48 : 32;
    std::array<std::uint8_t, 48> client_secret{};
    std::array<std::uint8_t, 48> server_secret{};
    for (std::size_t i = 0; i < 48; ++i) {
        client_secret[i] = static_cast<std::uint8_t>(i);
        server_secret[i] = static_cast<std::uint8_t>(0x80 + i);
    }
    auto records = Tls13Records::from_secrets(suite.id, {client_secret.data(), hash_bytes},
                                              {server_secret.data(), hash_bytes}, 0, 0);
    if (!records) __builtin_trap();
    ClientSealer client(suite, client_secret.data(), hash_bytes);

    // Chunks: [kind][length][bytes...]; kind 0 raw, 1 a sealed record whose first byte is the
    // inner content type, 2 the same with that many zero bytes of padding.
    std::vector<std::uint8_t> wire;
    while (size >= 2) {
        const std::uint8_t kind = data[0] % 3;
        std::size_t length = std::min<std::size_t>(data[1], size - 2);
        const std::uint8_t* chunk = data + 2;
        data += 2 + length;
        size -= 2 + length;
        if (kind == 0 || length == 0) {
            wire.insert(wire.end(), chunk, chunk + length);
        } else {
            client.seal(chunk[0], chunk + 1, length - 1, kind == 2 ? length * 8 : 0, wire);
        }
    }

    std::size_t offset = 0;
    const Tls13Records::Transport receive = [&](void* buffer, std::size_t bytes) -> std::ptrdiff_t {
        if (offset == wire.size()) return 0;
        const std::size_t n = std::min({bytes, piece, wire.size() - offset});
        std::memcpy(buffer, wire.data() + offset, n);
        offset += n;
        return static_cast<std::ptrdiff_t>(n);
    };
    const Tls13Records::Sender send = [](const void*, std::size_t bytes) -> std::ptrdiff_t {
        return static_cast<std::ptrdiff_t>(bytes);
    };
    char out[100];
    for (int i = 0; i < 4096; ++i) {
        const auto result = records->read(out, sizeof out, receive, send);
        if (result.status != Tls13Records::Status::kDone) break;
        if (result.bytes == 0 || result.bytes > sizeof out) __builtin_trap();
    }
    (void)records->write("pong", 4, send);
    (void)records->close_notify(send);
    return 0;
}
