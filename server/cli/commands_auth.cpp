#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <memory>

#include "server/cli/commands.hpp"
#include "server/cli/output.hpp"
#include "server/cli/prompt.hpp"

namespace otahub::cli {
namespace {

const std::vector<std::string> kSettableKeys = {"url", "ca", "org", "product"};

struct LoginOptions {
    std::string email;
    std::string password;
    std::string note;
};

std::string default_note() {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "otahub CLI";
    return std::string("otahub CLI on ") + host;
}

std::string absolute(const std::string& file) {
    std::error_code ec;
    auto path = std::filesystem::absolute(file, ec);
    return ec ? file : path.lexically_normal().string();
}

void login(Context& ctx, const LoginOptions& opts) {
    auto email = opts.email.empty() ? read_answer("email", false) : opts.email;
    auto password = opts.password.empty() ? read_answer("password", true) : opts.password;
    if (email.empty()) throw UsageError("the email must not be empty");
    if (password.empty()) throw UsageError("the password must not be empty");
    auto client = ctx.anonymous_client();
    auto data = client.request("POST", "/api/users/auth",
                               {{"email", email},
                                {"password", password},
                                {"note", opts.note.empty() ? default_note() : opts.note}});
    if (!data.is_object() || !data.contains("token") || !data["token"].is_string()) {
        throw std::runtime_error("the hub's answer to the login has no token");
    }
    auto& config = ctx.config();
    config.set("url", ctx.url());
    config.set("token", data["token"].get<std::string>());
    config.set("email", data.value("email", email));
    if (auto ca = ctx.ca(); !ca.empty()) {
        config.set("ca", absolute(ca));
    } else {
        config.unset("ca");
    }
    config.save();
    // The token is a secret: it goes to the config file only, never to the terminal.
    data.erase("token");
    if (ctx.json()) {
        print_json(data);
        return;
    }
    print_line("Logged in to " + ctx.url() + " as " + text_of(data.value("name", "")) + " <" +
               text_of(data.value("email", email)) + ">; token saved in " + config.path().string());
}

void logout(Context& ctx) {
    auto& config = ctx.config();
    bool had_token = config.unset("token");
    config.unset("email");
    if (had_token) config.save();
    if (ctx.json()) {
        print_json({{"logged_out", had_token}});
        return;
    }
    print_line(had_token ? "Logged out; token removed from " + config.path().string()
                         : std::string("Not logged in"));
}

void whoami(Context& ctx) {
    auto client = ctx.client();
    auto data = client.request("GET", "/api/users/me");
    if (ctx.json()) {
        print_json(data);
        return;
    }
    print_line(text_of(data.value("name", "")) + " <" + text_of(data.value("email", "")) + "> on " +
               ctx.url());
}

void check_settable(const std::string& key) {
    for (const auto& allowed : kSettableKeys) {
        if (key == allowed) return;
    }
    throw UsageError("unknown setting '" + key + "': use url, ca, org or product" +
                     (key == "token" ? " (otahub login saves the token)" : ""));
}

void config_set(Context& ctx, const std::string& key, std::string value) {
    check_settable(key);
    if (key == "url" && value.rfind("https://", 0) != 0 && value.rfind("http://", 0) != 0) {
        throw UsageError("url must start with https:// or http://");
    }
    if (key == "ca") {
        if (!std::filesystem::is_regular_file(value)) throw UsageError("no such file: " + value);
        value = absolute(value);
    }
    auto& config = ctx.config();
    config.set(key, value);
    config.save();
}

nlohmann::json redacted(const nlohmann::json& values) {
    auto copy = values;
    if (copy.contains("token")) copy["token"] = "(hidden)";
    return copy;
}

}  // namespace

void add_auth_commands(CLI::App& app, Context& ctx) {
    auto login_opts = std::make_shared<LoginOptions>();
    auto* login_cmd = app.add_subcommand(
        "login", "log in and save the token in the config file (asks for what is missing)");
    login_cmd->add_option("--email", login_opts->email, "account email");
    login_cmd->add_option("--password", login_opts->password,
                          "password (prefer the prompt, or a line on stdin)");
    login_cmd->add_option("--note", login_opts->note, "note stored with the token");
    on_run(login_cmd, ctx, [&ctx, login_opts] { login(ctx, *login_opts); });

    auto* logout_cmd = app.add_subcommand("logout", "forget the saved token");
    on_run(logout_cmd, ctx, [&ctx] { logout(ctx); });

    auto* whoami_cmd = app.add_subcommand("whoami", "show the logged-in user");
    on_run(whoami_cmd, ctx, [&ctx] { whoami(ctx); });

    auto* config_cmd = app.add_subcommand("config", "show or change CLI settings");
    config_cmd->require_subcommand(1);
    auto key = std::make_shared<std::string>();
    auto value = std::make_shared<std::string>();

    auto* set_cmd = config_cmd->add_subcommand("set", "set url, ca, org or product");
    set_cmd->add_option("key", *key, "url, ca, org or product")->required();
    set_cmd->add_option("value", *value, "the value")->required();
    on_run(set_cmd, ctx, [&ctx, key, value] { config_set(ctx, *key, *value); });

    auto* unset_cmd = config_cmd->add_subcommand("unset", "remove a setting");
    unset_cmd->add_option("key", *key, "url, ca, org or product")->required();
    on_run(unset_cmd, ctx, [&ctx, key] {
        check_settable(*key);
        if (ctx.config().unset(*key)) ctx.config().save();
    });

    auto* get_cmd = config_cmd->add_subcommand("get", "print one setting");
    get_cmd->add_option("key", *key, "url, ca, org, product or email")->required();
    on_run(get_cmd, ctx, [&ctx, key] {
        if (*key == "token") throw UsageError("the token is not printed");
        auto found = ctx.config().get(*key);
        if (!found) throw std::runtime_error(*key + " is not set");
        print_line(printable(*found));
    });

    auto* list_cmd = config_cmd->add_subcommand("list", "print all settings (token hidden)");
    on_run(list_cmd, ctx, [&ctx] {
        auto values = redacted(ctx.config().values());
        if (ctx.json()) {
            print_json(values);
            return;
        }
        for (const auto& [name, item] : values.items()) print_line(name + " = " + text_of(item));
    });

    auto* path_cmd = config_cmd->add_subcommand("path", "print where the config file is");
    on_run(path_cmd, ctx, [] { print_line(ConfigFile::default_path().string()); });
}

}  // namespace otahub::cli
