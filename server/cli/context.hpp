#pragma once

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "server/cli/client.hpp"
#include "server/cli/config_file.hpp"

namespace otahub::cli {

/// The URL used when neither --url, OTAHUB_URL nor the config file gives one.
inline constexpr const char* kDefaultUrl = "https://localhost:4000";

/// A mistake in how the command was called (missing org, bad argument): exit code 2.
class UsageError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// Options every command accepts (before or after the subcommand).
struct GlobalOptions {
    std::string url;    ///< --url
    std::string ca;     ///< --ca
    std::string token;  ///< --token
    bool json = false;  ///< --json
};

/// What one run of the CLI knows: the global options, the config file and the action chosen on
/// the command line. Settings resolve as flag, then environment, then config file, then default.
class Context {
  public:
    GlobalOptions options;
    /// The chosen command; set while parsing, run once the whole command line is valid.
    std::function<void()> action;

    /// The config file, read on first use.
    ConfigFile& config();
    /// The hub URL (--url, OTAHUB_URL, config `url`, default) without a trailing '/'.
    std::string url();
    /// The CA bundle (--ca, OTAHUB_CA, config `ca` when the config is for this URL); empty for the
    /// system store.
    std::string ca();
    /// The token (--token, OTAHUB_TOKEN, config `token` when the config is for this URL).
    std::optional<std::string> token();
    /// A client with the token; throws std::runtime_error when not logged in.
    Client client();
    /// A client without a token (for login).
    Client anonymous_client();
    /// The org (flag, OTAHUB_ORG, config `org`); throws UsageError when none.
    std::string org(const std::string& flag);
    /// The product (flag, OTAHUB_PRODUCT, config `product`); throws UsageError when none.
    std::string product(const std::string& flag);
    /// Whether to print JSON for scripts instead of tables.
    bool json() const { return options.json; }

  private:
    /// Whether the config file's saved login belongs to the URL in use.
    bool config_is_for_url();

    std::optional<ConfigFile> config_;
};

/// The value of an environment variable, or nullopt when unset or empty.
std::optional<std::string> env(const char* name);

}  // namespace otahub::cli
