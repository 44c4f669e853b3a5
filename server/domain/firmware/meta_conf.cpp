#include "server/domain/firmware/meta_conf.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include <sodium.h>

namespace otahub::firmware {
namespace {

// libconfuse has no limit; fwup nests three deep. The limit keeps hostile input off the stack.
constexpr std::size_t kMaxDepth = 32;
constexpr std::string_view kUuidVariable = "FWUP_META_UUID";
constexpr std::array<unsigned char, 16> kFwupNamespace = {
    0x20, 0x53, 0xdf, 0xfb, 0xd5, 0x1e, 0x43, 0x10, 0xb9, 0x3b, 0x95, 0x6d, 0xa8, 0x9f, 0x9f, 0x34};

// The top-level string options fwup 1.16 declares; other meta-* names are ignored like fwup does.
constexpr std::array<std::string_view, 11> kMetaKeys = {
    "meta-product",        "meta-description",  "meta-version",       "meta-author",
    "meta-platform",       "meta-architecture", "meta-creation-date", "meta-fwup-version",
    "meta-vcs-identifier", "meta-misc",         "meta-uuid"};

constexpr std::array<std::string_view, 4> kTopSections = {"file-resource", "mbr", "task",
                                                          "uboot-environment"};

bool is_meta_key(std::string_view name) {
    return std::find(kMetaKeys.begin(), kMetaKeys.end(), name) != kMetaKeys.end();
}

bool is_top_section(std::string_view name) {
    return std::find(kTopSections.begin(), kTopSections.end(), name) != kTopSections.end();
}

// The characters libconfuse's lexer allows in an unquoted string.
bool is_bare(char c) {
    switch (c) {
        case ' ':
        case '#':
        case '"':
        case '\'':
        case '\t':
        case '\n':
        case '\r':
        case '=':
        case '{':
        case '}':
        case '(':
        case ')':
        case '+':
        case ',':
        case '*':
            return false;
        default:
            return true;
    }
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

// fwup reads option values as C strings, so an escaped NUL ends the value.
std::string until_nul(std::string value) {
    if (auto nul = value.find('\0'); nul != std::string::npos) {
        value.resize(nul);
    }
    return value;
}

// libconfuse parses integers with strtol(value, &end, 0) and requires *end == '\0'.
std::optional<std::int64_t> parse_confuse_int(std::string_view text) {
    std::size_t i = 0;
    while (i < text.size() && (text[i] == ' ' || (text[i] >= '\t' && text[i] <= '\r'))) {
        ++i;
    }
    bool negative = false;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
        negative = text[i] == '-';
        ++i;
    }
    int base = 10;
    if (i + 2 < text.size() && text[i] == '0' && (text[i + 1] == 'x' || text[i + 1] == 'X') &&
        hex_value(text[i + 2]) >= 0) {
        base = 16;
        i += 2;
    } else if (i < text.size() && text[i] == '0') {
        base = 8;
    }
    std::size_t digits = 0;
    std::uint64_t value = 0;
    constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    for (; i < text.size(); ++i, ++digits) {
        int digit = hex_value(text[i]);
        if (digit < 0 || digit >= base) {
            break;
        }
        auto ubase = static_cast<std::uint64_t>(base);
        if (value > (kMax - static_cast<std::uint64_t>(digit)) / ubase) {
            return std::nullopt;
        }
        value = value * ubase + static_cast<std::uint64_t>(digit);
    }
    if (digits == 0) {
        // strtol converts nothing; libconfuse then accepts only the empty string (as 0).
        if (text.empty()) {
            return 0;
        }
        return std::nullopt;
    }
    if (i != text.size()) {
        return std::nullopt;
    }
    auto signed_value = static_cast<std::int64_t>(value);
    return negative ? -signed_value : signed_value;
}

enum class TokenKind {
    kString,
    kOpenBrace,
    kCloseBrace,
    kOpenParen,
    kCloseParen,
    kEquals,
    kPlusEquals,
    kComma,
    kEnd,
};

struct Token {
    TokenKind kind = TokenKind::kEnd;
    std::string text;
};

std::string describe(const Token& token) {
    switch (token.kind) {
        case TokenKind::kString:
            return "'" + token.text.substr(0, 40) + "'";
        case TokenKind::kOpenBrace:
            return "'{'";
        case TokenKind::kCloseBrace:
            return "'}'";
        case TokenKind::kOpenParen:
            return "'('";
        case TokenKind::kCloseParen:
            return "')'";
        case TokenKind::kEquals:
            return "'='";
        case TokenKind::kPlusEquals:
            return "'+='";
        case TokenKind::kComma:
            return "','";
        case TokenKind::kEnd:
            break;
    }
    return "end of meta.conf";
}

// A port of libconfuse's flex scanner (src/lexer.l), longest-match rules included.
class Lexer {
  public:
    Lexer(std::string_view text, std::string_view uuid) : text_(text), uuid_(uuid) {}

    Token next() {
        while (pos_ < text_.size()) {
            char c = text_[pos_];
            if (c == ' ' || c == '\t' || c == '\n') {
                ++pos_;
                continue;
            }
            if (c == '#') {
                skip_line();
                continue;
            }
            if (c == '/' && at(1) == '*') {
                skip_block_comment();
                continue;
            }
            if (c == '/' && at(1) == '/' && !slashes_continue_word()) {
                skip_line();
                continue;
            }
            switch (c) {
                case '{':
                    return punct(TokenKind::kOpenBrace);
                case '}':
                    return punct(TokenKind::kCloseBrace);
                case '(':
                    return punct(TokenKind::kOpenParen);
                case ')':
                    return punct(TokenKind::kCloseParen);
                case '=':
                    return punct(TokenKind::kEquals);
                case ',':
                    return punct(TokenKind::kComma);
                case '"':
                    return double_quoted();
                case '\'':
                    return single_quoted();
                default:
                    break;
            }
            if (c == '+' && at(1) == '=') {
                pos_ += 2;
                return {TokenKind::kPlusEquals, {}};
            }
            if (c == '$' && at(1) == '{') {
                if (auto close = text_.find('}', pos_ + 2); close != std::string_view::npos) {
                    auto name = text_.substr(pos_ + 2, close - pos_ - 2);
                    pos_ = close + 1;
                    return {TokenKind::kString, expand(name)};
                }
            }
            if (is_bare(c)) {
                auto start = pos_;
                while (pos_ < text_.size() && is_bare(text_[pos_])) {
                    ++pos_;
                }
                return {TokenKind::kString, std::string(text_.substr(start, pos_ - start))};
            }
            // A lone '+', '*' or '\r': libconfuse's catch-all rule drops it.
            ++pos_;
        }
        return {};
    }

  private:
    char at(std::size_t offset) const {
        return pos_ + offset < text_.size() ? text_[pos_ + offset] : '\0';
    }

    Token punct(TokenKind kind) {
        ++pos_;
        return {kind, {}};
    }

    // "//" starts a comment unless the unquoted-string rule matches a longer text ("//x").
    bool slashes_continue_word() const {
        auto end = pos_;
        while (end < text_.size() && text_[end] == '/') {
            ++end;
        }
        return end < text_.size() && is_bare(text_[end]);
    }

    void skip_line() {
        auto newline = text_.find('\n', pos_);
        pos_ = newline == std::string_view::npos ? text_.size() : newline;
    }

    // An unterminated comment runs to the end: libconfuse returns end-of-file there.
    void skip_block_comment() {
        auto end = text_.find("*/", pos_ + 2);
        pos_ = end == std::string_view::npos ? text_.size() : end + 2;
    }

    // ${NAME} and ${NAME:-default}. The server's environment is not the device's: only
    // FWUP_META_UUID, which fwup defines before parsing, has a value.
    std::string expand(std::string_view name) const {
        std::optional<std::string_view> fallback;
        if (auto colon = name.find(':');
            colon != std::string_view::npos && colon + 1 < name.size() && name[colon + 1] == '-') {
            fallback = name.substr(colon + 2);
            name = name.substr(0, colon);
        }
        if (name == kUuidVariable) {
            return std::string(uuid_);
        }
        return fallback ? std::string(*fallback) : std::string();
    }

    Token double_quoted() {
        ++pos_;
        std::string out;
        for (;;) {
            if (pos_ >= text_.size()) {
                throw MetaConfError("meta.conf has an unterminated string");
            }
            char c = text_[pos_];
            if (c == '"') {
                ++pos_;
                return {TokenKind::kString, std::move(out)};
            }
            if (c == '$' && at(1) == '{') {
                if (auto close = text_.find('}', pos_ + 2); close != std::string_view::npos) {
                    out += expand(text_.substr(pos_ + 2, close - pos_ - 2));
                    pos_ = close + 1;
                    continue;
                }
            }
            if (c != '\\') {
                out += c;
                ++pos_;
                continue;
            }
            if (pos_ + 1 >= text_.size()) {
                throw MetaConfError("meta.conf has an unterminated string");
            }
            escape(out);
        }
    }

    void escape(std::string& out) {
        char e = text_[pos_ + 1];
        if (is_digit(e)) {
            octal(out);
            return;
        }
        if (e == 'x' && hex_value(at(2)) >= 0) {
            int value = hex_value(at(2));
            pos_ += 3;
            if (hex_value(at(0)) >= 0) {
                value = value * 16 + hex_value(at(0));
                ++pos_;
            }
            out += static_cast<char>(value);
            return;
        }
        pos_ += 2;
        switch (e) {
            case '\n':
                return;  // line continuation
            case 'n':
                out += '\n';
                return;
            case 'r':
                out += '\r';
                return;
            case 'b':
                out += '\b';
                return;
            case 'f':
                out += '\f';
                return;
            case 'a':
                out += '\a';
                return;
            case 'e':
                out += '\033';
                return;
            case 't':
                out += '\t';
                return;
            case 'v':
                out += '\v';
                return;
            default:
                out += e;
                return;
        }
    }

    // \[0-7]{1,3} is an octal escape, but flex prefers \[0-9]+ (an error) when it is longer.
    void octal(std::string& out) {
        auto start = pos_ + 1;
        std::size_t digits = 0;
        while (start + digits < text_.size() && is_digit(text_[start + digits])) {
            ++digits;
        }
        std::size_t octal_digits = 0;
        unsigned value = 0;
        while (octal_digits < 3 && octal_digits < digits && text_[start + octal_digits] <= '7') {
            value = value * 8 + static_cast<unsigned>(text_[start + octal_digits] - '0');
            ++octal_digits;
        }
        if (digits > octal_digits) {
            throw MetaConfError("meta.conf has a bad escape sequence");
        }
        if (value > 0xff) {
            throw MetaConfError("meta.conf has an invalid octal escape");
        }
        out += static_cast<char>(value);
        pos_ = start + octal_digits;
    }

    Token single_quoted() {
        ++pos_;
        std::string out;
        for (;;) {
            if (pos_ >= text_.size()) {
                throw MetaConfError("meta.conf has an unterminated string");
            }
            char c = text_[pos_];
            if (c == '\'') {
                ++pos_;
                return {TokenKind::kString, std::move(out)};
            }
            if (c != '\\') {
                out += c;
                ++pos_;
                continue;
            }
            if (pos_ + 1 >= text_.size()) {
                throw MetaConfError("meta.conf has an unterminated string");
            }
            char e = text_[pos_ + 1];
            pos_ += 2;
            if (e == '\n') {
                continue;
            }
            if (e != '\\' && e != '\'') {
                out += '\\';
            }
            out += e;
        }
    }

    std::string_view text_;
    std::string_view uuid_;
    std::size_t pos_ = 0;
};

enum class Scope { kTop, kFileResource, kOther };

struct Value {
    std::vector<std::string> items;
    bool is_list = false;
};

// libconfuse's parser state machine (cfg_parse_internal), with fwup's option table where it
// matters to the hub and everything else accepted and skipped (CFGF_IGNORE_UNKNOWN).
class Parser {
  public:
    Parser(std::string_view text, std::string uuid) : uuid_(std::move(uuid)), lexer_(text, uuid_) {}

    MetaConf run() {
        advance();
        parse_items(Scope::kTop, 0, 0);
        // fwup sets meta-uuid before parsing and refuses a meta.conf that changes it.
        if (auto it = result_.meta.find("meta-uuid"); it != result_.meta.end()) {
            if (it->second != uuid_) {
                throw MetaConfError("meta.conf may not set meta-uuid");
            }
        }
        result_.meta["meta-uuid"] = uuid_;
        return std::move(result_);
    }

  private:
    void advance() { token_ = lexer_.next(); }

    [[noreturn]] void unexpected(std::string_view expected) const {
        throw MetaConfError("meta.conf: expected " + std::string(expected) + ", found " +
                            describe(token_));
    }

    void parse_items(Scope scope, std::size_t depth, std::size_t resource) {
        for (;;) {
            if (token_.kind == TokenKind::kEnd) {
                if (depth == 0) {
                    return;
                }
                throw MetaConfError("meta.conf ends inside a section");
            }
            if (token_.kind == TokenKind::kCloseBrace) {
                if (depth == 0) {
                    throw MetaConfError("meta.conf has an unmatched '}'");
                }
                advance();
                return;
            }
            if (token_.kind != TokenKind::kString) {
                unexpected("an option name");
            }
            std::string name = std::move(token_.text);
            advance();
            parse_item(scope, depth, resource, name);
        }
    }

    void parse_item(Scope scope, std::size_t depth, std::size_t resource, const std::string& name) {
        bool is_meta = scope == Scope::kTop && is_meta_key(name);
        bool is_section = scope == Scope::kTop && is_top_section(name);
        switch (token_.kind) {
            case TokenKind::kEquals:
            case TokenKind::kPlusEquals: {
                if (is_section) {
                    throw MetaConfError("meta.conf: '" + name + "' must be a titled section");
                }
                bool append = token_.kind == TokenKind::kPlusEquals;
                advance();
                assign(scope, resource, name, append, parse_value());
                return;
            }
            case TokenKind::kOpenParen:
                if (is_meta || is_section) {
                    throw MetaConfError("meta.conf: '" + name + "' is not a function");
                }
                advance();
                skip_arguments();
                return;
            case TokenKind::kOpenBrace:
                if (is_meta || is_section) {
                    throw MetaConfError("meta.conf: '" + name + "' needs a title");
                }
                enter(depth);
                advance();
                parse_items(Scope::kOther, depth + 1, 0);
                return;
            case TokenKind::kString: {
                if (is_meta) {
                    throw MetaConfError("meta.conf: expected '=' after '" + name + "'");
                }
                std::string title = std::move(token_.text);
                advance();
                if (token_.kind != TokenKind::kOpenBrace) {
                    unexpected("'{'");
                }
                enter(depth);
                advance();
                if (scope == Scope::kTop && name == "file-resource") {
                    open_resource(std::move(title), depth);
                } else {
                    parse_items(Scope::kOther, depth + 1, 0);
                }
                return;
            }
            default:
                unexpected("'=' after '" + name.substr(0, 40) + "'");
        }
    }

    static void enter(std::size_t depth) {
        if (depth + 1 > kMaxDepth) {
            throw MetaConfError("meta.conf nests sections too deeply");
        }
    }

    void open_resource(std::string title, std::size_t depth) {
        // fwup declares file-resource with CFGF_NO_TITLE_DUPES.
        if (!resource_names_.insert(title).second) {
            throw MetaConfError("meta.conf has two file-resource blocks named '" + title + "'");
        }
        result_.resources.push_back(FileResource{std::move(title), {}, 0, {}});
        auto index = result_.resources.size() - 1;
        parse_items(Scope::kFileResource, depth + 1, index);
        auto& item = result_.resources[index];
        std::uint64_t data = 0;
        for (std::size_t i = 0; i < item.length.size(); i += 2) {
            if (item.length[i] > std::numeric_limits<std::uint64_t>::max() - data) {
                throw MetaConfError("file-resource '" + item.name + "' is too long");
            }
            data += item.length[i];
        }
        item.data_size = data;
    }

    Value parse_value() {
        Value value;
        if (token_.kind == TokenKind::kString) {
            value.items.push_back(std::move(token_.text));
            advance();
            return value;
        }
        if (token_.kind != TokenKind::kOpenBrace) {
            unexpected("a value");
        }
        value.is_list = true;
        advance();
        for (;;) {
            if (token_.kind == TokenKind::kCloseBrace) {
                advance();
                return value;
            }
            if (token_.kind != TokenKind::kString) {
                unexpected("a list value or '}'");
            }
            value.items.push_back(std::move(token_.text));
            advance();
            if (token_.kind == TokenKind::kComma) {
                advance();
                continue;
            }
            if (token_.kind != TokenKind::kCloseBrace) {
                unexpected("',' or '}'");
            }
        }
    }

    void skip_arguments() {
        for (;;) {
            if (token_.kind == TokenKind::kCloseParen) {
                advance();
                return;
            }
            if (token_.kind != TokenKind::kString) {
                unexpected("a function argument or ')'");
            }
            advance();
            if (token_.kind == TokenKind::kComma) {
                advance();
                continue;
            }
            if (token_.kind != TokenKind::kCloseParen) {
                unexpected("',' or ')'");
            }
        }
    }

    void assign(Scope scope, std::size_t resource, const std::string& name, bool append,
                Value value) {
        if (scope == Scope::kTop && is_meta_key(name)) {
            if (append || value.is_list) {
                throw MetaConfError("meta.conf: '" + name + "' must be a single string");
            }
            result_.meta[name] = until_nul(std::move(value.items.front()));
            return;
        }
        if (scope != Scope::kFileResource) {
            return;
        }
        auto& item = result_.resources[resource];
        if (name == "length") {
            if (!append) {
                item.length.clear();
            }
            for (const auto& text : value.items) {
                auto number = parse_confuse_int(until_nul(text));
                if (!number || *number < 0) {
                    throw MetaConfError("file-resource '" + item.name + "' has an invalid length");
                }
                item.length.push_back(static_cast<std::uint64_t>(*number));
            }
        } else if (name == "blake2b-256") {
            if (append || value.is_list) {
                throw MetaConfError("file-resource '" + item.name +
                                    "': blake2b-256 must be a single string");
            }
            item.blake2b_256 = until_nul(std::move(value.items.front()));
        }
    }

    std::string uuid_;
    Lexer lexer_;
    Token token_;
    MetaConf result_;
    std::set<std::string, std::less<>> resource_names_;
};

}  // namespace

std::string MetaConf::get(std::string_view key) const {
    auto it = meta.find(key);
    return it == meta.end() ? std::string() : it->second;
}

std::string fwup_meta_uuid(std::string_view meta_conf) {
    ensure_sodium();
    crypto_generichash_state state;
    std::array<unsigned char, crypto_generichash_BYTES> hash{};
    crypto_generichash_init(&state, nullptr, 0, hash.size());
    crypto_generichash_update(&state, kFwupNamespace.data(), kFwupNamespace.size());
    crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(meta_conf.data()),
                              meta_conf.size());
    crypto_generichash_final(&state, hash.data(), hash.size());
    hash[6] = static_cast<unsigned char>((hash[6] & 0x0f) | 0x50);

    static constexpr char kHex[] = "0123456789abcdef";
    std::string uuid;
    uuid.reserve(36);
    for (std::size_t i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            uuid += '-';
        }
        uuid += kHex[hash[i] >> 4];
        uuid += kHex[hash[i] & 0x0f];
    }
    return uuid;
}

MetaConf parse_meta_conf(std::string_view meta_conf) {
    auto uuid = fwup_meta_uuid(meta_conf);
    // fwup hands libconfuse a C string: a NUL byte ends the text it parses.
    if (auto nul = meta_conf.find('\0'); nul != std::string_view::npos) {
        meta_conf = meta_conf.substr(0, nul);
    }
    return Parser(meta_conf, std::move(uuid)).run();
}

void ensure_sodium() {
    static const bool ready = sodium_init() >= 0;
    if (!ready) {
        throw std::runtime_error("libsodium failed to initialise");
    }
}

}  // namespace otahub::firmware
