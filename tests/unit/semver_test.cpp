#include "server/domain/semver.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace otahub::semver {
namespace {

nlohmann::json load_fixture(const std::string& name) {
    std::ifstream in(std::string(OTAHUB_FIXTURES_DIR) + "/semver/" + name);
    if (!in) {
        ADD_FAILURE() << "cannot open fixture " << name;
        return nlohmann::json::array();
    }
    return nlohmann::json::parse(in);
}

std::string to_expected(MatchResult result) {
    switch (result) {
        case MatchResult::kMatch:
            return "true";
        case MatchResult::kNoMatch:
            return "false";
        case MatchResult::kInvalidVersion:
            return "invalid_version";
        case MatchResult::kInvalidRequirement:
            return "invalid_requirement";
    }
    return "?";
}

std::string compare_word(int c) { return c < 0 ? "lt" : (c > 0 ? "gt" : "eq"); }

Version v(std::string_view text) {
    auto parsed = parse_version(text);
    EXPECT_TRUE(parsed.has_value()) << text;
    return parsed.value_or(Version{});
}

bool matches(std::string_view version, std::string_view requirement) {
    return match(version, requirement) == MatchResult::kMatch;
}

TEST(SemverVectors, EveryMatchRowAgreesWithElixir) {
    auto rows = load_fixture("match-public.json");
    ASSERT_TRUE(rows.is_array());
    ASSERT_FALSE(rows.empty());
    int mismatches = 0;
    for (const auto& row : rows) {
        const auto& expected_json = row.at("match");
        std::string expected = expected_json.is_boolean()
                                   ? (expected_json.get<bool>() ? "true" : "false")
                                   : expected_json.get<std::string>();
        std::string actual = to_expected(
            match(row.at("version").get<std::string>(), row.at("requirement").get<std::string>()));
        if (actual != expected) {
            ++mismatches;
            ADD_FAILURE() << "row " << row.dump() << " gave " << actual;
        }
    }
    EXPECT_EQ(mismatches, 0) << "of " << rows.size() << " rows";
}

TEST(SemverVectors, EveryCompareRowAgreesWithElixir) {
    auto rows = load_fixture("compare-public.json");
    ASSERT_TRUE(rows.is_array());
    ASSERT_FALSE(rows.empty());
    int mismatches = 0;
    for (const auto& row : rows) {
        auto a = parse_version(row.at("a").get<std::string>());
        auto b = parse_version(row.at("b").get<std::string>());
        if (!a || !b) {
            ++mismatches;
            ADD_FAILURE() << "row " << row.dump() << " has a version that did not parse";
            continue;
        }
        std::string actual = compare_word(compare(*a, *b));
        std::string reverse = compare_word(compare(*b, *a));
        std::string expected = row.at("compare").get<std::string>();
        std::string expected_reverse = expected == "lt" ? "gt" : (expected == "gt" ? "lt" : "eq");
        if (actual != expected || reverse != expected_reverse) {
            ++mismatches;
            ADD_FAILURE() << "row " << row.dump() << " gave " << actual << " (reverse " << reverse
                          << ")";
        }
    }
    EXPECT_EQ(mismatches, 0) << "of " << rows.size() << " rows";
}

TEST(SemverParse, ReadsAllParts) {
    auto parsed = parse_version("1.22.333-rc.1.x-y+build.5-a");
    ASSERT_TRUE(parsed);
    EXPECT_EQ(parsed->major, 1u);
    EXPECT_EQ(parsed->minor, 22u);
    EXPECT_EQ(parsed->patch, 333u);
    EXPECT_EQ(parsed->pre, (std::vector<std::string>{"rc", "1", "x-y"}));
    EXPECT_EQ(parsed->build, (std::vector<std::string>{"build", "5-a"}));
    EXPECT_EQ(parsed->to_string(), "1.22.333-rc.1.x-y+build.5-a");
}

TEST(SemverParse, RejectsMalformedVersions) {
    for (const char* text : {"",           "1",        "1.2",         "1.2.3.4",   "v1.2.3",
                             "01.2.3",     "1.02.3",   "1.2.03",      "1.2.3-",    "1.2.3+",
                             "1.2.3-a..b", "1.2.3-01", "1.2.3-a_b",   "1.2.3+a+b", "1.2.3 ",
                             " 1.2.3",     "1..3",     "-1.2.3",      "1.2.-3",    "1.2.3-\xc3\xa9",
                             "1.2.3\n",    "a.b.c",    "1.2.3-rc.1+", "+1.2.3"}) {
        EXPECT_FALSE(parse_version(text).has_value()) << '"' << text << '"';
    }
    EXPECT_FALSE(parse_version(std::string_view("1.2.3\0", 6)).has_value());
}

TEST(SemverParse, AcceptsEdgeShapesElixirAccepts) {
    EXPECT_TRUE(parse_version("0.0.0"));
    EXPECT_TRUE(parse_version("1.2.3--"));    // "-" is an identifier character
    EXPECT_TRUE(parse_version("1.2.3-0"));    // a lone zero is fine
    EXPECT_TRUE(parse_version("1.2.3-0a"));   // not numeric, so leading zero is fine
    EXPECT_TRUE(parse_version("1.2.3+001"));  // build identifiers are never numeric
    EXPECT_TRUE(parse_version("1.2.3-a-b+c-d"));
}

TEST(SemverParse, HostileInputIsInvalidNotUndefined) {
    EXPECT_TRUE(parse_version("18446744073709551615.18446744073709551615.18446744073709551615"));
    EXPECT_FALSE(parse_version("18446744073709551616.0.0"));
    EXPECT_FALSE(parse_version("0.99999999999999999999999.0"));
    EXPECT_FALSE(parse_version("1.2.3-" + std::string(kMaxVersionLength, 'a')));
    EXPECT_FALSE(Requirement::parse(">= 1.0.0" + std::string(kMaxRequirementLength, ' ')));
    std::string many = "1.0.0";
    for (int i = 0; i < 100; ++i) {
        many += " or 1.0.0";
    }
    EXPECT_TRUE(Requirement::parse(many));
    // A very long numeric pre-release compares by value without overflow.
    std::string big(200, '9');
    EXPECT_LT(compare(v("1.0.0-" + big), v("1.0.0-1" + big)), 0);
    EXPECT_GT(compare(v("1.0.0-" + big), v("1.0.0-99")), 0);
    // ~> at the top of the range needs no "+1" and so cannot wrap around.
    EXPECT_TRUE(matches("18446744073709551615.5.0", "~> 18446744073709551615.0"));
    EXPECT_FALSE(matches("0.0.0", "~> 18446744073709551615.0"));
    EXPECT_TRUE(matches("1.18446744073709551615.9", "~> 1.18446744073709551615.0"));
    EXPECT_FALSE(matches("2.0.0", "~> 1.18446744073709551615.0"));
}

TEST(SemverCompare, FollowsSemverPrecedence) {
    const char* ordered[] = {"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta",
                             "1.0.0-beta",  "1.0.0-beta.2",  "1.0.0-beta.11",
                             "1.0.0-rc.1",  "1.0.0",         "1.0.1",
                             "1.1.0",       "2.0.0",         "10.0.0"};
    for (std::size_t i = 0; i + 1 < std::size(ordered); ++i) {
        EXPECT_LT(compare(v(ordered[i]), v(ordered[i + 1])), 0) << ordered[i];
        EXPECT_GT(compare(v(ordered[i + 1]), v(ordered[i])), 0) << ordered[i];
    }
    EXPECT_EQ(compare(v("2.0.1+build0"), v("2.0.1")), 0);
    EXPECT_GT(compare(v("1.0.0-10"), v("1.0.0-2")), 0);
    EXPECT_LT(compare(v("1.0.0-2"), v("1.0.0-a")), 0);
    EXPECT_LT(compare(v("1.0.0-B"), v("1.0.0-a")), 0);  // ASCII order
}

TEST(SemverRequirement, AndBindsTighterThanOr) {
    // Elixir's own tests from the precedence fix (elixir-lang/elixir#11238).
    for (const char* req :
         {"< 0.2.0 and >= 0.1.0 or >= 0.7.0", ">= 0.7.0 or < 0.2.0 and >= 0.1.0"}) {
        EXPECT_TRUE(matches("0.1.0", req)) << req;
        EXPECT_TRUE(matches("0.1.5", req)) << req;
        EXPECT_FALSE(matches("0.3.0", req)) << req;
        EXPECT_FALSE(matches("0.6.0", req)) << req;
        EXPECT_TRUE(matches("0.7.0", req)) << req;
        EXPECT_TRUE(matches("0.7.5", req)) << req;
    }
}

TEST(SemverRequirement, CompatibleOperator) {
    EXPECT_TRUE(matches("2.1.0", "~> 2.1"));
    EXPECT_TRUE(matches("2.9.9", "~> 2.1"));
    EXPECT_FALSE(matches("3.0.0", "~> 2.1"));
    EXPECT_FALSE(matches("3.0.0-dev", "~> 2.1"));  // never the pre-releases of the upper bound
    EXPECT_FALSE(matches("2.0.9", "~> 2.1"));
    EXPECT_TRUE(matches("2.1.3", "~> 2.1.3"));
    EXPECT_TRUE(matches("2.1.9", "~> 2.1.3"));
    EXPECT_FALSE(matches("2.2.0", "~> 2.1.3"));
    EXPECT_FALSE(matches("2.2.0-dev", "~> 2.1.3"));
    EXPECT_TRUE(matches("2.1.3-dev", "~> 2.1.3-dev"));
    EXPECT_TRUE(matches("2.2.0-dev", "~> 2.1-dev"));
    EXPECT_TRUE(matches("2.1.6-dev", "~> 2.1.2"));  // default allow_pre: true
}

TEST(SemverRequirement, LexesLikeElixir) {
    EXPECT_TRUE(Requirement::parse(">=1.0.0"));
    EXPECT_TRUE(Requirement::parse("  >=   1.0.0  "));
    EXPECT_TRUE(Requirement::parse("1.0.0 or 2.0.0"));
    EXPECT_TRUE(Requirement::parse(">= 1.0.0 and 2.0.0"));  // bare version after "and" means ==
    EXPECT_TRUE(Requirement::parse("!= 1.0.0"));
    EXPECT_TRUE(Requirement::parse("! 1.0.0"));
    EXPECT_TRUE(matches("1.0.1", "! 1.0.0"));
    EXPECT_FALSE(matches("1.0.0", "!= 1.0.0"));
    for (const char* text : {"",
                             "   ",
                             "== == 1.0.0",
                             ">= 1.0",
                             "> 1",
                             "~> 1",
                             "~>",
                             "1.0.0 2.0.0",
                             "1.0.0 and",
                             "or 1.0.0",
                             " or 1.0.0",
                             "1.0.0 or",
                             "1.0.0 or or 2.0.0",
                             "1.0.0 and or 2.0.0",
                             "=> 1.0.0",
                             "= 1.0.0",
                             ">= 1.0.0 <= 2.0.0",
                             "1.0.0or 2.0.0",
                             ">=\t1.0.0",
                             "v1.0.0",
                             "~> 1.0.0.0",
                             ">= 1.0.0-01"}) {
        EXPECT_FALSE(Requirement::parse(text).has_value()) << '"' << text << '"';
    }
    auto requirement = Requirement::parse(">= 1.0.0 and < 2.0.0 or ~> 3.1");
    ASSERT_TRUE(requirement);
    EXPECT_EQ(requirement->source(), ">= 1.0.0 and < 2.0.0 or ~> 3.1");
    ASSERT_EQ(requirement->alternatives().size(), 2u);
    EXPECT_EQ(requirement->alternatives()[0].size(), 2u);
    EXPECT_EQ(requirement->alternatives()[1].size(), 1u);
    EXPECT_FALSE(requirement->alternatives()[1][0].has_patch);
}

TEST(SemverRequirement, RequirementIsCheckedBeforeVersion) {
    EXPECT_EQ(match("abc", "=> 1.0.0"), MatchResult::kInvalidRequirement);
    EXPECT_EQ(match("abc", ">= 1.0.0"), MatchResult::kInvalidVersion);
    EXPECT_EQ(match("1.0.0", ""), MatchResult::kInvalidRequirement);
}

}  // namespace
}  // namespace otahub::semver
