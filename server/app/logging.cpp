#include "server/app/logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace otahub {
namespace {

thread_local const log::Scope* t_scope = nullptr;

/// Appends `text` as the body of a JSON string (quotes, backslashes and control bytes escaped).
void append_json_escaped(std::string_view text, spdlog::memory_buf_t& dest) {
    static constexpr char kHex[] = "0123456789abcdef";
    for (char c : text) {
        auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            dest.push_back('\\');
            dest.push_back(c);
        } else if (u < 0x20) {
            const char esc[] = {'\\', 'u', '0', '0', kHex[u >> 4], kHex[u & 15]};
            dest.append(esc, esc + sizeof(esc));
        } else {
            dest.push_back(c);
        }
    }
}

void append(std::string_view text, spdlog::memory_buf_t& dest) {
    dest.append(text.data(), text.data() + text.size());
}

/// The open scopes, outermost first.
template <class F>
void for_each_scope(const log::Scope* scope, F&& fn) {
    if (scope == nullptr) return;
    for_each_scope(scope->outer(), fn);
    fn(*scope);
}

/// Writes the message as a JSON string body.
class JsonMessageFlag : public spdlog::custom_flag_formatter {
  public:
    void format(const spdlog::details::log_msg& msg, const std::tm&,
                spdlog::memory_buf_t& dest) override {
        append_json_escaped(std::string_view(msg.payload.data(), msg.payload.size()), dest);
    }
    std::unique_ptr<custom_flag_formatter> clone() const override {
        return std::make_unique<JsonMessageFlag>();
    }
};

/// JSON: one `"key":"value",` field per open scope.
class JsonScopeFlag : public spdlog::custom_flag_formatter {
  public:
    void format(const spdlog::details::log_msg&, const std::tm&,
                spdlog::memory_buf_t& dest) override {
        for_each_scope(t_scope, [&](const log::Scope& scope) {
            dest.push_back('"');
            append_json_escaped(scope.key(), dest);
            append("\":\"", dest);
            append_json_escaped(scope.value(), dest);
            append("\",", dest);
        });
    }
    std::unique_ptr<custom_flag_formatter> clone() const override {
        return std::make_unique<JsonScopeFlag>();
    }
};

/// Plain: `key=value ` per open scope.
class PlainScopeFlag : public spdlog::custom_flag_formatter {
  public:
    void format(const spdlog::details::log_msg&, const std::tm&,
                spdlog::memory_buf_t& dest) override {
        for_each_scope(t_scope, [&](const log::Scope& scope) {
            append(scope.key(), dest);
            dest.push_back('=');
            append(scope.value(), dest);
            dest.push_back(' ');
        });
    }
    std::unique_ptr<custom_flag_formatter> clone() const override {
        return std::make_unique<PlainScopeFlag>();
    }
};

}  // namespace

namespace log {

Scope::Scope(std::string_view key, std::string value)
    : outer_(t_scope), key_(key), value_(std::move(value)) {
    t_scope = this;
}

Scope::~Scope() { t_scope = outer_; }

const Scope* Scope::current() { return t_scope; }

}  // namespace log

void setup_logging(const std::string& level, bool json) {
    auto logger = spdlog::stderr_logger_mt("otahub");
    if (json) {
        auto formatter =
            std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
        formatter->add_flag<JsonMessageFlag>('*').add_flag<JsonScopeFlag>('&').set_pattern(
            R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","thread":%t,%&"msg":"%*"})");
        logger->set_formatter(std::move(formatter));
    } else {
        auto formatter =
            std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
        formatter->add_flag<PlainScopeFlag>('&').set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%-5l%$ %&%v");
        logger->set_formatter(std::move(formatter));
    }
    logger->set_level(spdlog::level::from_str(level));
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(logger);
}

}  // namespace otahub
