#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace otahub::semver {

/// Longest version text accepted; anything longer is an invalid version.
inline constexpr std::size_t kMaxVersionLength = 256;
/// Longest requirement text accepted; anything longer is an invalid requirement.
inline constexpr std::size_t kMaxRequirementLength = 1024;

/// A SemVer 2.0 version as Elixir's `Version` reads it: MAJOR.MINOR.PATCH[-pre][+build].
struct Version {
    std::uint64_t major = 0;
    std::uint64_t minor = 0;
    std::uint64_t patch = 0;
    /// Pre-release identifiers; all-digit ones compare numerically and sort before the others.
    std::vector<std::string> pre;
    /// Build identifiers; never part of precedence.
    std::vector<std::string> build;

    /// The canonical text, e.g. "1.2.3-rc.1+build.5".
    std::string to_string() const;
};

/// Parses a version exactly as Elixir's `Version.parse/1`; numbers beyond 64 bits are invalid.
std::optional<Version> parse_version(std::string_view text);

/// SemVer precedence: negative, zero or positive as `a` is lower, equal or higher (build ignored).
int compare(const Version& a, const Version& b);

/// A comparison operator of a requirement clause.
enum class Operator {
    kEqual,         // == (also a bare version)
    kNotEqual,      // != or ! (deprecated in Elixir, still accepted)
    kGreater,       // >
    kGreaterEqual,  // >=
    kLess,          // <
    kLessEqual,     // <=
    kCompatible,    // ~>
};

/// One `<op> <version>` clause of a requirement.
struct Comparator {
    Operator op = Operator::kEqual;
    /// The operand; for `~> 2.1` the patch is stored as 0 and `has_patch` is false.
    Version version;
    bool has_patch = true;

    /// Whether `candidate` satisfies this clause (pre-releases allowed, as Elixir's default).
    bool matches(const Version& candidate) const;
};

/// An Elixir `Version` requirement: clauses joined by `and` / `or`, `and` binding tighter.
class Requirement {
  public:
    /// Parses like Elixir 1.14's `Version.parse_requirement/1`; "" is invalid here.
    static std::optional<Requirement> parse(std::string_view text);

    /// Whether `version` satisfies the requirement, as `Version.match?/2` with default options.
    bool matches(const Version& version) const;
    /// The text the requirement was parsed from.
    const std::string& source() const { return source_; }
    /// The clauses in disjunctive form: any group whose clauses all match satisfies it.
    const std::vector<std::vector<Comparator>>& alternatives() const { return alternatives_; }

  private:
    Requirement() = default;

    std::string source_;
    std::vector<std::vector<Comparator>> alternatives_;
};

/// The outcome of matching a version text against a requirement text.
enum class MatchResult { kMatch, kNoMatch, kInvalidVersion, kInvalidRequirement };

/// `Version.match?(version, requirement)` on texts; the requirement is checked first, as Elixir
/// does.
MatchResult match(std::string_view version, std::string_view requirement);

}  // namespace otahub::semver
