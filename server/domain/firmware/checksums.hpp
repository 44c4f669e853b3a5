#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace otahub::firmware {

/// The chunk NervesHub hashes for `partials_checksums`: 1 MiB.
inline constexpr std::uint64_t kPartialChunkSize = 1ull << 20;

/// A file's size and SHA-256 digests, as upper-case hex.
struct FileDigest {
    /// Bytes read.
    std::uint64_t size = 0;
    /// SHA-256 of the whole file.
    std::string sha256;
    /// SHA-256 of each chunk in order (the last may be shorter); empty for an empty file.
    std::vector<std::string> partial_sha256;
};

/// Reads the file once in chunks and digests it; throws std::system_error if it cannot be read.
FileDigest digest_file(const std::filesystem::path& path,
                       std::uint64_t chunk_size = kPartialChunkSize);

/// SHA-256 of each `chunk_size` piece of the file, upper-case hex; throws like digest_file.
std::vector<std::string> sha256_chunks(const std::filesystem::path& path,
                                       std::uint64_t chunk_size = kPartialChunkSize);

/// Upper-case hex of bytes.
std::string hex_upper(std::span<const std::uint8_t> bytes);

}  // namespace otahub::firmware
