#include "server/domain/firmware/checksums.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <system_error>

#include <openssl/evp.h>

namespace otahub::firmware {
namespace {

constexpr std::size_t kReadBuffer = 256 * 1024;

struct FileCloser {
    void operator()(std::FILE* file) const { std::fclose(file); }
};

struct DigestFree {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

using DigestContext = std::unique_ptr<EVP_MD_CTX, DigestFree>;

DigestContext new_sha256() {
    DigestContext ctx(EVP_MD_CTX_new());
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
        throw std::runtime_error("OpenSSL could not start a SHA-256 digest");
    }
    return ctx;
}

void update(EVP_MD_CTX* ctx, const std::uint8_t* data, std::size_t size) {
    if (EVP_DigestUpdate(ctx, data, size) != 1) {
        throw std::runtime_error("OpenSSL SHA-256 update failed");
    }
}

std::string finish(EVP_MD_CTX* ctx) {
    std::array<std::uint8_t, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(ctx, digest.data(), &length) != 1) {
        throw std::runtime_error("OpenSSL SHA-256 final failed");
    }
    return hex_upper(std::span(digest.data(), length));
}

}  // namespace

std::string hex_upper(std::span<const std::uint8_t> bytes) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (auto byte : bytes) {
        out += kHex[byte >> 4];
        out += kHex[byte & 0x0f];
    }
    return out;
}

FileDigest digest_file(const std::filesystem::path& path, std::uint64_t chunk_size) {
    if (chunk_size == 0) {
        throw std::invalid_argument("digest_file: chunk_size must be positive");
    }
    std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
    if (!file) {
        throw std::system_error(errno, std::generic_category(), "cannot open " + path.string());
    }
    FileDigest result;
    auto whole = new_sha256();
    DigestContext chunk;
    std::uint64_t in_chunk = 0;
    std::vector<std::uint8_t> buffer(kReadBuffer);
    for (;;) {
        auto got = std::fread(buffer.data(), 1, buffer.size(), file.get());
        if (got == 0) {
            if (std::ferror(file.get()) != 0) {
                throw std::system_error(errno, std::generic_category(),
                                        "cannot read " + path.string());
            }
            break;
        }
        result.size += got;
        update(whole.get(), buffer.data(), got);
        std::size_t offset = 0;
        while (offset < got) {
            if (!chunk) {
                chunk = new_sha256();
                in_chunk = 0;
            }
            auto take = static_cast<std::size_t>(
                std::min<std::uint64_t>(got - offset, chunk_size - in_chunk));
            update(chunk.get(), buffer.data() + offset, take);
            offset += take;
            in_chunk += take;
            if (in_chunk == chunk_size) {
                result.partial_sha256.push_back(finish(chunk.get()));
                chunk.reset();
            }
        }
    }
    if (chunk) {
        result.partial_sha256.push_back(finish(chunk.get()));
    }
    result.sha256 = finish(whole.get());
    return result;
}

std::vector<std::string> sha256_chunks(const std::filesystem::path& path,
                                       std::uint64_t chunk_size) {
    return digest_file(path, chunk_size).partial_sha256;
}

}  // namespace otahub::firmware
