#pragma once

#include <string>
#include <string_view>

namespace otahub {

/// Sets up the default spdlog logger: one line per event on stderr, plain or JSON lines. Each
/// line carries the log scopes open on the writing thread (plain: `key=value` after the level;
/// JSON: one field per scope).
void setup_logging(const std::string& level, bool json);

namespace log {

/// While alive, every log line this thread writes names what it is working for, e.g.
/// `request_id=…` for an admin API request or `device=…` for a device. Scopes nest; open one
/// only around synchronous work (never across a coroutine suspension).
class Scope {
  public:
    /// `key` must outlive the scope (a string literal).
    Scope(std::string_view key, std::string value);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

    /// The innermost scope open on this thread, or nullptr.
    static const Scope* current();
    const Scope* outer() const { return outer_; }
    std::string_view key() const { return key_; }
    std::string_view value() const { return value_; }

  private:
    const Scope* outer_;
    std::string_view key_;
    std::string value_;
};

}  // namespace log
}  // namespace otahub
