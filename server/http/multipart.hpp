#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "server/domain/storage/firmware_store.hpp"

namespace otahub::http {

/// Bounds on what a multipart/form-data body may cost beyond the extracted file.
struct MultipartLimits {
    /// Bytes of one ordinary (non-file) field value.
    std::size_t max_field_size = 64 * 1024;
    /// Bytes of one part's header block.
    std::size_t max_header_size = 16 * 1024;
    /// Parts in the body.
    std::size_t max_parts = 100;
};

/// The outcome of extract_multipart_file.
struct MultipartFile {
    /// The extracted part's bytes (removed when this object dies, unless released); empty path
    /// when the body had no part of that name.
    storage::ScopedFile file;
    /// Bytes of the extracted part.
    std::uint64_t size = 0;
    /// The part's `filename` parameter, if it had one.
    std::string filename;
    /// The other parts without a filename, by name (`ttl` → "3600"); the first of a name wins.
    std::map<std::string, std::string> fields;
};

/// The boundary of a `multipart/form-data; boundary=...` Content-Type, or nullopt when the
/// type is something else or the boundary is missing or invalid (RFC 2046: 1-70 characters).
std::optional<std::string> multipart_boundary(std::string_view content_type);

/// Streams a spooled multipart/form-data body (never holding it in memory) and copies the part
/// named `file_field` to a new file in `output_dir`, keeping the small fields. Throws ApiError
/// 400 on a malformed or truncated body, two parts named `file_field`, or a field over the
/// limits; ApiError 507 when the disk is full; std::system_error on other I/O errors.
/// Blocking: call off the I/O threads.
MultipartFile extract_multipart_file(const std::filesystem::path& body, std::string_view boundary,
                                     std::string_view file_field,
                                     const std::filesystem::path& output_dir,
                                     const MultipartLimits& limits = {});

}  // namespace otahub::http
