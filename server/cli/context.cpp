#include "server/cli/context.hpp"

#include <cstdlib>
#include <filesystem>

namespace otahub::cli {
namespace {

std::string without_trailing_slash(std::string url) {
    while (url.size() > 1 && url.back() == '/') url.pop_back();
    return url;
}

}  // namespace

std::optional<std::string> env(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr || value[0] == '\0') return std::nullopt;
    return std::string(value);
}

ConfigFile& Context::config() {
    if (!config_) {
        std::filesystem::path path;
        try {
            path = ConfigFile::default_path();
        } catch (const std::runtime_error&) {
            // No HOME: commands still work from options and environment; save() explains.
        }
        config_.emplace(path);
        config_->load();
    }
    return *config_;
}

std::string Context::url() {
    if (!options.url.empty()) return without_trailing_slash(options.url);
    if (auto value = env("OTAHUB_URL")) return without_trailing_slash(*value);
    if (auto value = config().get("url")) return without_trailing_slash(*value);
    return kDefaultUrl;
}

bool Context::config_is_for_url() {
    auto saved = config().get("url");
    return saved && without_trailing_slash(*saved) == url();
}

std::string Context::ca() {
    if (!options.ca.empty()) return options.ca;
    if (auto value = env("OTAHUB_CA")) return *value;
    if (config_is_for_url()) {
        if (auto value = config().get("ca")) return *value;
    }
    return {};
}

std::optional<std::string> Context::token() {
    if (!options.token.empty()) return options.token;
    if (auto value = env("OTAHUB_TOKEN")) return value;
    // A token saved for one hub is never sent to another.
    if (config_is_for_url()) return config().get("token");
    return std::nullopt;
}

Client Context::client() {
    auto bearer = token();
    if (!bearer) {
        auto saved = config().get("url");
        if (saved && config().get("token")) {
            throw std::runtime_error("not logged in to " + url() + " (the saved login is for " +
                                     *saved + "); run `otahub login`");
        }
        throw std::runtime_error("not logged in; run `otahub login` or pass --token");
    }
    return Client(Endpoint{url(), ca(), *bearer});
}

Client Context::anonymous_client() { return Client(Endpoint{url(), ca(), {}}); }

std::string Context::org(const std::string& flag) {
    if (!flag.empty()) return flag;
    if (auto value = env("OTAHUB_ORG")) return *value;
    if (auto value = config().get("org")) return *value;
    throw UsageError(
        "no org given: pass --org ORG, set OTAHUB_ORG or run `otahub config set org ORG`");
}

std::string Context::product(const std::string& flag) {
    if (!flag.empty()) return flag;
    if (auto value = env("OTAHUB_PRODUCT")) return *value;
    if (auto value = config().get("product")) return *value;
    throw UsageError(
        "no product given: pass --product P, set OTAHUB_PRODUCT or run `otahub config set product "
        "P`");
}

}  // namespace otahub::cli
