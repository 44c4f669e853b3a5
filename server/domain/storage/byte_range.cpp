#include "server/domain/storage/byte_range.hpp"

#include <algorithm>
#include <cctype>
#include <vector>

namespace otahub::storage {
namespace {

/// At most this many ranges in one header; more is treated as invalid (a cheap DoS otherwise).
constexpr std::size_t kMaxRanges = 64;

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
    return text;
}

/// Decimal digits to a number, saturating at UINT64_MAX; nullopt when not all digits.
std::optional<std::uint64_t> parse_digits(std::string_view text) {
    if (text.empty()) return std::nullopt;
    std::uint64_t value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        auto digit = static_cast<std::uint64_t>(c - '0');
        if (value > (UINT64_MAX - digit) / 10) {
            value = UINT64_MAX;
        } else {
            value = value * 10 + digit;
        }
    }
    return value;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        auto x = static_cast<unsigned char>(a[i]);
        auto y = static_cast<unsigned char>(b[i]);
        if (std::tolower(x) != std::tolower(y)) return false;
    }
    return true;
}

struct Span {
    std::uint64_t first;
    std::uint64_t last;  // inclusive
};

}  // namespace

std::string RangeDecision::content_range(std::uint64_t size) const {
    if (kind == Kind::kPartial) {
        return "bytes " + std::to_string(first) + "-" + std::to_string(first + length - 1) + "/" +
               std::to_string(size);
    }
    return "bytes */" + std::to_string(size);
}

RangeDecision decide_range(std::optional<std::string_view> range,
                           std::optional<std::string_view> if_range, std::string_view etag,
                           std::uint64_t size) {
    RangeDecision full;
    if (!range) return full;
    // If-Range: only the exact strong ETag keeps the Range; a date or another tag means the
    // client's copy is stale, so it gets the whole body.
    if (if_range && trim(*if_range) != etag) return full;

    auto text = trim(*range);
    auto eq = text.find('=');
    if (eq == std::string_view::npos || !iequals(trim(text.substr(0, eq)), "bytes")) return full;
    text.remove_prefix(eq + 1);

    std::vector<Span> satisfiable;
    std::size_t specs = 0;
    while (!text.empty()) {
        auto comma = text.find(',');
        auto spec = trim(text.substr(0, comma));
        text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
        if (spec.empty()) continue;  // list syntax tolerates empty elements
        if (++specs > kMaxRanges) return full;
        auto dash = spec.find('-');
        if (dash == std::string_view::npos) return full;
        auto first_text = spec.substr(0, dash);
        auto last_text = spec.substr(dash + 1);
        if (first_text.empty()) {
            // A suffix range: the last N bytes.
            auto suffix = parse_digits(last_text);
            if (!suffix) return full;
            if (*suffix > 0 && size > 0) {
                auto n = std::min(*suffix, size);
                satisfiable.push_back({size - n, size - 1});
            }
            continue;
        }
        auto first = parse_digits(first_text);
        if (!first) return full;
        std::uint64_t last = UINT64_MAX;
        if (!last_text.empty()) {
            auto parsed = parse_digits(last_text);
            if (!parsed || *parsed < *first) return full;
            last = *parsed;
        }
        if (*first < size) satisfiable.push_back({*first, std::min(last, size - 1)});
    }
    if (specs == 0) return full;
    if (satisfiable.empty()) return RangeDecision{RangeDecision::Kind::kUnsatisfiable, 0, 0};

    std::sort(satisfiable.begin(), satisfiable.end(),
              [](const Span& a, const Span& b) { return a.first < b.first; });
    Span merged = satisfiable.front();
    for (std::size_t i = 1; i < satisfiable.size(); ++i) {
        const auto& next = satisfiable[i];
        if (merged.last != UINT64_MAX && next.first > merged.last + 1) return full;  // disjoint
        merged.last = std::max(merged.last, next.last);
    }
    return RangeDecision{RangeDecision::Kind::kPartial, merged.first,
                         merged.last - merged.first + 1};
}

}  // namespace otahub::storage
