#include "server/domain/semver.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <utility>

namespace otahub::semver {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool all_digits(std::string_view text) {
    return !text.empty() && std::ranges::all_of(text, is_digit);
}

// SemVer identifier characters; Elixir checks the same set ([0-9A-Za-z-]).
bool is_identifier(std::string_view text) {
    return !text.empty() && std::ranges::all_of(text, [](char c) {
        return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
    });
}

// A numeric part: digits only, no leading zero, fits in 64 bits (Elixir has bignums; we refuse).
std::optional<std::uint64_t> parse_number(std::string_view text) {
    if (!all_digits(text) || (text.size() > 1 && text.front() == '0')) {
        return std::nullopt;
    }
    constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();
    std::uint64_t value = 0;
    for (char c : text) {
        auto digit = static_cast<std::uint64_t>(c - '0');
        if (value > (kMax - digit) / 10) {
            return std::nullopt;
        }
        value = value * 10 + digit;
    }
    return value;
}

// Splits a dot-separated identifier list; every part must be a non-empty identifier.
std::optional<std::vector<std::string>> parse_identifiers(std::string_view text,
                                                          bool numeric_rule) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (true) {
        std::size_t dot = text.find('.', start);
        std::string_view part = text.substr(
            start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (!is_identifier(part)) {
            return std::nullopt;
        }
        // Numeric pre-release identifiers must not have leading zeros.
        if (numeric_rule && all_digits(part) && part.size() > 1 && part.front() == '0') {
            return std::nullopt;
        }
        parts.emplace_back(part);
        if (dot == std::string_view::npos) {
            return parts;
        }
        start = dot + 1;
    }
}

struct Parsed {
    Version version;
    bool has_patch = true;
};

// Elixir's Version.Parser.parse_version/2: `approximate` lets the patch be omitted (for `~>`).
std::optional<Parsed> parse_impl(std::string_view text, bool approximate) {
    if (text.empty() || text.size() > kMaxVersionLength) {
        return std::nullopt;
    }
    std::string_view with_pre = text;
    std::optional<std::string_view> build;
    if (auto plus = text.find('+'); plus != std::string_view::npos) {
        with_pre = text.substr(0, plus);
        build = text.substr(plus + 1);
    }
    std::string_view core = with_pre;
    std::optional<std::string_view> pre;
    if (auto dash = with_pre.find('-'); dash != std::string_view::npos) {
        core = with_pre.substr(0, dash);
        pre = with_pre.substr(dash + 1);
    }

    std::array<std::string_view, 3> numbers;
    std::size_t count = 0;
    std::size_t start = 0;
    while (true) {
        if (count == numbers.size()) {
            return std::nullopt;  // a fourth numeric part
        }
        std::size_t dot = core.find('.', start);
        numbers[count++] = core.substr(
            start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (dot == std::string_view::npos) {
            break;
        }
        start = dot + 1;
    }
    if (count < 2 || (count == 2 && !approximate)) {
        return std::nullopt;
    }

    Parsed parsed;
    auto major = parse_number(numbers[0]);
    auto minor = parse_number(numbers[1]);
    if (!major || !minor) {
        return std::nullopt;
    }
    parsed.version.major = *major;
    parsed.version.minor = *minor;
    if (count == 3) {
        auto patch = parse_number(numbers[2]);
        if (!patch) {
            return std::nullopt;
        }
        parsed.version.patch = *patch;
    } else {
        parsed.has_patch = false;
    }
    if (pre) {
        auto parts = parse_identifiers(*pre, true);
        if (!parts) {
            return std::nullopt;
        }
        parsed.version.pre = std::move(*parts);
    }
    if (build) {
        auto parts = parse_identifiers(*build, false);
        if (!parts) {
            return std::nullopt;
        }
        parsed.version.build = std::move(*parts);
    }
    return parsed;
}

int compare_numbers(std::uint64_t a, std::uint64_t b) { return a < b ? -1 : (a > b ? 1 : 0); }

// Identifiers as Erlang orders Elixir's pre parts: integers before binaries, binaries bytewise.
int compare_identifier(const std::string& a, const std::string& b) {
    bool a_numeric = all_digits(a);
    bool b_numeric = all_digits(b);
    if (a_numeric != b_numeric) {
        return a_numeric ? -1 : 1;
    }
    if (a_numeric && a.size() != b.size()) {
        // No leading zeros, so the longer number is the larger one; no overflow on long input.
        return a.size() < b.size() ? -1 : 1;
    }
    int c = a.compare(b);
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

struct Token {
    enum class Kind { kOperator, kAnd, kOr, kVersion };
    Kind kind;
    Operator op = Operator::kEqual;
    std::string_view text;
};

struct OperatorSpelling {
    std::string_view text;
    Token::Kind kind;
    Operator op;
};

// Same spellings and order as Elixir's lexer: longer operators are tried first.
constexpr std::array<OperatorSpelling, 10> kOperators{{
    {">=", Token::Kind::kOperator, Operator::kGreaterEqual},
    {"<=", Token::Kind::kOperator, Operator::kLessEqual},
    {"~>", Token::Kind::kOperator, Operator::kCompatible},
    {">", Token::Kind::kOperator, Operator::kGreater},
    {"<", Token::Kind::kOperator, Operator::kLess},
    {"==", Token::Kind::kOperator, Operator::kEqual},
    {"!=", Token::Kind::kOperator, Operator::kNotEqual},
    {"!", Token::Kind::kOperator, Operator::kNotEqual},
    {" or ", Token::Kind::kOr, Operator::kEqual},
    {" and ", Token::Kind::kAnd, Operator::kEqual},
}};

// Elixir's lexer: operators are recognised anywhere, single spaces separate, the rest is text.
std::vector<Token> lex(std::string_view text) {
    std::vector<Token> tokens;
    std::size_t buffer_start = std::string_view::npos;
    auto flush = [&](std::size_t end) {
        if (buffer_start != std::string_view::npos) {
            tokens.push_back(Token{Token::Kind::kVersion, Operator::kEqual,
                                   text.substr(buffer_start, end - buffer_start)});
            buffer_start = std::string_view::npos;
        }
    };
    std::size_t i = 0;
    while (i < text.size()) {
        std::string_view rest = text.substr(i);
        const OperatorSpelling* found = nullptr;
        for (const auto& spelling : kOperators) {
            if (rest.starts_with(spelling.text)) {
                found = &spelling;
                break;
            }
        }
        if (found != nullptr) {
            flush(i);
            tokens.push_back(Token{found->kind, found->op, {}});
            i += found->text.size();
        } else if (text[i] == ' ') {
            flush(i);
            ++i;
        } else {
            if (buffer_start == std::string_view::npos) {
                buffer_start = i;
            }
            ++i;
        }
    }
    flush(text.size());
    return tokens;
}

}  // namespace

std::string Version::to_string() const {
    std::string out =
        std::to_string(major) + '.' + std::to_string(minor) + '.' + std::to_string(patch);
    for (std::size_t i = 0; i < pre.size(); ++i) {
        out += i == 0 ? '-' : '.';
        out += pre[i];
    }
    for (std::size_t i = 0; i < build.size(); ++i) {
        out += i == 0 ? '+' : '.';
        out += build[i];
    }
    return out;
}

std::optional<Version> parse_version(std::string_view text) {
    auto parsed = parse_impl(text, false);
    if (!parsed) {
        return std::nullopt;
    }
    return std::move(parsed->version);
}

int compare(const Version& a, const Version& b) {
    if (int c = compare_numbers(a.major, b.major); c != 0) {
        return c;
    }
    if (int c = compare_numbers(a.minor, b.minor); c != 0) {
        return c;
    }
    if (int c = compare_numbers(a.patch, b.patch); c != 0) {
        return c;
    }
    // A release ranks above its pre-releases.
    if (a.pre.empty() || b.pre.empty()) {
        return a.pre.empty() == b.pre.empty() ? 0 : (a.pre.empty() ? 1 : -1);
    }
    std::size_t common = std::min(a.pre.size(), b.pre.size());
    for (std::size_t i = 0; i < common; ++i) {
        if (int c = compare_identifier(a.pre[i], b.pre[i]); c != 0) {
            return c;
        }
    }
    return compare_numbers(a.pre.size(), b.pre.size());
}

bool Comparator::matches(const Version& candidate) const {
    int c = compare(candidate, version);
    switch (op) {
        case Operator::kEqual:
            return c == 0;
        case Operator::kNotEqual:
            return c != 0;
        case Operator::kGreater:
            return c > 0;
        case Operator::kGreaterEqual:
            return c >= 0;
        case Operator::kLess:
            return c < 0;
        case Operator::kLessEqual:
            return c <= 0;
        case Operator::kCompatible:
            // Elixir: >= operand and < the next major (no patch) or next minor, at its "-0"
            // pre-release. Below that bound means same major (and minor); no +1, so no overflow.
            return c >= 0 && candidate.major == version.major &&
                   (!has_patch || candidate.minor == version.minor);
    }
    return false;
}

std::optional<Requirement> Requirement::parse(std::string_view text) {
    if (text.size() > kMaxRequirementLength) {
        return std::nullopt;
    }
    std::vector<Token> tokens = lex(text);
    Requirement requirement;
    requirement.alternatives_.emplace_back();
    std::size_t i = 0;
    // Grammar after lexing: clause ((and | or) clause)*, clause = [op] version.
    while (true) {
        Comparator comparator;
        if (i < tokens.size() && tokens[i].kind == Token::Kind::kOperator) {
            comparator.op = tokens[i].op;
            ++i;
        }
        if (i >= tokens.size() || tokens[i].kind != Token::Kind::kVersion) {
            return std::nullopt;
        }
        auto parsed = parse_impl(tokens[i].text, comparator.op == Operator::kCompatible);
        if (!parsed) {
            return std::nullopt;
        }
        comparator.version = std::move(parsed->version);
        comparator.has_patch = parsed->has_patch;
        requirement.alternatives_.back().push_back(std::move(comparator));
        ++i;
        if (i == tokens.size()) {
            break;
        }
        if (tokens[i].kind == Token::Kind::kOr) {
            requirement.alternatives_.emplace_back();
        } else if (tokens[i].kind != Token::Kind::kAnd) {
            return std::nullopt;
        }
        ++i;
    }
    requirement.source_ = std::string(text);
    return requirement;
}

bool Requirement::matches(const Version& version) const {
    for (const auto& group : alternatives_) {
        bool all = true;
        for (const auto& comparator : group) {
            if (!comparator.matches(version)) {
                all = false;
                break;
            }
        }
        if (all) {
            return true;
        }
    }
    return false;
}

MatchResult match(std::string_view version, std::string_view requirement) {
    auto parsed_requirement = Requirement::parse(requirement);
    if (!parsed_requirement) {
        return MatchResult::kInvalidRequirement;
    }
    auto parsed_version = parse_version(version);
    if (!parsed_version) {
        return MatchResult::kInvalidVersion;
    }
    return parsed_requirement->matches(*parsed_version) ? MatchResult::kMatch
                                                        : MatchResult::kNoMatch;
}

}  // namespace otahub::semver
