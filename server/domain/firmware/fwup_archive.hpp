#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace otahub::firmware {

/// An Ed25519 public key as fwup and NervesHub keep it: the raw 32 bytes.
using PublicKey = std::array<std::uint8_t, 32>;

/// Check names carried by FirmwareError.
inline constexpr std::string_view kCheckZip = "zip";
inline constexpr std::string_view kCheckLayout = "layout";
inline constexpr std::string_view kCheckSignature = "signature";
inline constexpr std::string_view kCheckMetadata = "metadata";
inline constexpr std::string_view kCheckResource = "resource";
inline constexpr std::string_view kCheckSize = "size";

/// Why an archive was refused: `check()` is one of the kCheck* names, `what()` says why.
class FirmwareError : public std::runtime_error {
  public:
    FirmwareError(std::string_view check, const std::string& message)
        : std::runtime_error(message), check_(check) {}

    /// The failed check: zip, layout, signature, metadata, resource or size.
    const std::string& check() const { return check_; }

  private:
    std::string check_;
};

/// Bounds on the work and memory one upload may cost; exceeding one fails check "size".
struct VerifyLimits {
    /// Bytes of the .fw file.
    std::uint64_t max_archive_size = 2ull << 30;
    /// ZIP entries.
    std::uint64_t max_entries = 10000;
    /// Bytes of meta.conf.
    std::uint64_t max_meta_conf = 50000;  // fwup on the device refuses 50,000 bytes or more
    /// Declared uncompressed bytes of one entry.
    std::uint64_t max_entry_size = 8ull << 30;
    /// Declared uncompressed bytes of all entries together.
    std::uint64_t max_total_size = 16ull << 30;
    /// Declared uncompressed/compressed ratio of one entry (deflate itself stays under 1032).
    std::uint64_t max_ratio = 1100;
};

/// What the hub keeps of an accepted archive.
struct FirmwareInfo {
    /// meta-uuid as fwup computes it, the value devices report as `nerves_fw_uuid`.
    std::string uuid;
    /// meta-product, meta-version, meta-platform, meta-architecture: always non-empty.
    std::string product;
    std::string version;
    std::string platform;
    std::string architecture;
    /// The optional meta-author, meta-description, meta-misc and meta-vcs-identifier.
    std::string author;
    std::string description;
    std::string misc;
    std::string vcs_identifier;
    /// meta-fwup-version: the fwup that created the archive, if it says.
    std::string fwup_version;
    /// UTC ISO 8601 (`2026-11-23T11:51:52Z`), as `fwup -m` reports meta-creation-date.
    std::string creation_date;
    /// Bytes of the .fw file.
    std::uint64_t size = 0;
    /// SHA-256 of the file, upper-case hex.
    std::string sha256;
    /// SHA-256 of each 1 MiB of the file, upper-case hex.
    std::vector<std::string> partial_sha256;
    /// The archive holds meta.conf.ed25519.
    bool has_signature = false;
    /// Index into the keys given to verify_firmware of the key that signed meta.conf.
    std::optional<std::size_t> signing_key_index;
    /// The exact bytes of meta.conf.
    std::string meta_conf;
};

/// Decodes a fwup `.pub` key (base64 of exactly 32 bytes, surrounding whitespace ignored).
std::optional<PublicKey> parse_public_key(std::string_view base64);

/// Verifies an uploaded fwup archive the way `fwup --verify` does, and more strictly about the
/// ZIP structure: meta.conf must be signed by one of `keys` (the first that verifies is
/// reported), every file-resource must match its length and BLAKE2b-256, nothing else may be
/// stored. Reads the file in chunks, never whole; throws FirmwareError when the archive is
/// refused, std::system_error when the file cannot be read. Blocking: call off the I/O threads.
FirmwareInfo verify_firmware(const std::filesystem::path& path, std::span<const PublicKey> keys,
                             const VerifyLimits& limits = {});

/// The checks of verify_firmware except the signature (signing_key_index stays empty), for
/// reading metadata of unsigned archives.
FirmwareInfo inspect_firmware(const std::filesystem::path& path, const VerifyLimits& limits = {});

}  // namespace otahub::firmware
