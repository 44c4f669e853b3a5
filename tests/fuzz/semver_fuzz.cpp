// libFuzzer harness for the version and requirement parsers (server/domain/semver.hpp).
// The input is "<version>\n<requirement>" (no newline: both are the whole input).
// Checks: nothing throws or crashes; an accepted version re-parses from its canonical text to an
// equal version; compare is antisymmetric and reflexive; matching never disagrees with match().
// Built and run by tests/fuzz/run (see tests/fuzz/README.md).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/domain/semver.hpp"

namespace {

namespace semver = otahub::semver;

void check(bool condition) {
    if (!condition) {
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    std::string_view version_text = input;
    std::string_view requirement_text = input;
    if (auto newline = input.find('\n'); newline != std::string_view::npos) {
        version_text = input.substr(0, newline);
        requirement_text = input.substr(newline + 1);
    }

    auto version = semver::parse_version(version_text);
    if (version) {
        auto canonical = version->to_string();
        auto again = semver::parse_version(canonical);
        check(again.has_value());
        check(semver::compare(*version, *again) == 0);
        check(again->to_string() == canonical);
        check(semver::compare(*version, *version) == 0);
    }
    auto requirement = semver::Requirement::parse(requirement_text);
    if (requirement) {
        check(requirement->source() == requirement_text);
        check(!requirement->alternatives().empty());
    }
    auto result = semver::match(version_text, requirement_text);
    if (!requirement) {
        check(result == semver::MatchResult::kInvalidRequirement);
    } else if (!version) {
        check(result == semver::MatchResult::kInvalidVersion);
    } else {
        bool matches = requirement->matches(*version);
        check(result == (matches ? semver::MatchResult::kMatch : semver::MatchResult::kNoMatch));
        // A version compared with a second one parsed from the other half of the input.
        if (auto other = semver::parse_version(requirement_text)) {
            check(semver::compare(*version, *other) == -semver::compare(*other, *version));
        }
    }
    return 0;
}
