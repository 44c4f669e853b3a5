#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace otahub::firmware {

/// A meta.conf that is not libconfuse text, or that fwup itself would refuse to load.
class MetaConfError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// One `file-resource "NAME" { ... }` block of meta.conf.
struct FileResource {
    /// The section title; the archive stores the bytes as `data/<name>`.
    std::string name;
    /// fwup's sparse map: data and hole lengths alternating, data first (one element if dense).
    std::vector<std::uint64_t> length;
    /// Bytes stored in the archive: the sum of the data segments of `length`.
    std::uint64_t data_size = 0;
    /// The `blake2b-256` value as written (fwup writes 64 lower-case hex digits); empty if absent.
    std::string blake2b_256;
};

/// The parts of meta.conf the hub uses.
struct MetaConf {
    /// The top-level `meta-*` options fwup knows (`meta-product`, ...), by option name; always
    /// holds the computed `meta-uuid`, and `meta-creation-date` only if the text sets it.
    std::map<std::string, std::string, std::less<>> meta;
    /// The file-resource blocks, in order of appearance.
    std::vector<FileResource> resources;

    /// The value of a `meta-*` option, or an empty string when it is not set.
    std::string get(std::string_view key) const;
};

/// fwup's meta-uuid of these exact bytes: BLAKE2b-256 over fwup's namespace UUID and the bytes,
/// version nibble forced to 5, first 16 bytes as lower-case 8-4-4-4-12 text.
std::string fwup_meta_uuid(std::string_view meta_conf);

/// Parses meta.conf as fwup 1.x loads it from an archive (libconfuse syntax, unknown options
/// ignored, parsing stops at a NUL byte); throws MetaConfError. Safe on any input.
MetaConf parse_meta_conf(std::string_view meta_conf);

/// Initialises libsodium once (thread-safe); throws std::runtime_error if it cannot.
void ensure_sodium();

}  // namespace otahub::firmware
