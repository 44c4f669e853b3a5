#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace otahub::storage {

/// How to answer a GET of a whole representation given its Range and If-Range headers.
struct RangeDecision {
    enum class Kind {
        kFull,           // 200 with the whole body (no Range, an ignored or invalid one)
        kPartial,        // 206 with bytes [first, first + length)
        kUnsatisfiable,  // 416 with `Content-Range: bytes */size`
    };
    Kind kind = Kind::kFull;
    std::uint64_t first = 0;
    std::uint64_t length = 0;

    /// `bytes first-last/size` for a partial answer, `bytes */size` for an unsatisfiable one.
    std::string content_range(std::uint64_t size) const;
};

/// Decides a byte-range request as RFC 9110 §14 describes it for a resource of `size` bytes
/// with strong validator `etag` (quoted): an If-Range that is not that exact ETag, a Range in
/// another unit or with a syntax error is ignored (whole body); ranges that merge into one
/// contiguous span are served as one part; disjoint multiple ranges get the whole body.
RangeDecision decide_range(std::optional<std::string_view> range,
                           std::optional<std::string_view> if_range, std::string_view etag,
                           std::uint64_t size);

}  // namespace otahub::storage
