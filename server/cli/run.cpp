#include <CLI/CLI.hpp>
#include <iostream>

#include "server/cli/commands.hpp"

namespace otahub::cli {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int fail(int code, const std::string& message) {
    std::cout.flush();
    std::cerr << "otahub: " << message << '\n';
    return code;
}

}  // namespace

void on_run(CLI::App* command, Context& ctx, std::function<void()> action) {
    // CLI11 runs callbacks before it checks required options and extra arguments, so the
    // callback only records the action; run() starts it once parsing has fully succeeded.
    command->callback([&ctx, action = std::move(action)] { ctx.action = action; });
}

int run(int argc, char** argv) {
    Context ctx;
    CLI::App app{"otahub: the admin command line for an otahub server.", "otahub"};
    app.fallthrough();
    app.require_subcommand(1);
    app.set_version_flag("--version", "otahub 0.1.0");
    app.footer(
        "Settings resolve as option, then environment (OTAHUB_URL, OTAHUB_CA, OTAHUB_TOKEN,\n"
        "OTAHUB_ORG, OTAHUB_PRODUCT), then $XDG_CONFIG_HOME/otahub/config.json.\n"
        "Exit status: 0 ok, 1 failure (API or connection error), 2 usage error.");
    app.add_option("--url", ctx.options.url,
                   "hub URL (env OTAHUB_URL; default: saved login, then https://localhost:4000)");
    app.add_option("--ca", ctx.options.ca,
                   "CA bundle (PEM) of the hub's server certificate (env OTAHUB_CA; default: "
                   "saved login, then the system store)")
        ->check(CLI::ExistingFile);
    app.add_option("--token", ctx.options.token,
                   "API token (env OTAHUB_TOKEN; default: saved login)");
    app.add_flag("--json", ctx.options.json, "print the API's data as JSON, for scripts");

    add_auth_commands(app, ctx);
    add_org_commands(app, ctx);
    add_product_commands(app, ctx);
    add_key_commands(app, ctx);
    add_firmware_commands(app, ctx);
    add_cert_commands(app, ctx);
    add_deployment_commands(app, ctx);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
        return fail(kExitUsage, std::string(e.what()) + " (see --help)");
    } catch (const UsageError& e) {
        return fail(kExitUsage, e.what());
    }
    if (!ctx.action) return fail(kExitUsage, "no command given (see --help)");
    try {
        ctx.action();
    } catch (const UsageError& e) {
        return fail(kExitUsage, e.what());
    } catch (const std::invalid_argument& e) {
        return fail(kExitUsage, e.what());
    } catch (const ApiFailure& e) {
        return fail(kExitFailure, e.what());
    } catch (const ConnectionError& e) {
        return fail(kExitFailure, e.what());
    } catch (const std::exception& e) {
        return fail(kExitFailure, e.what());
    }
    std::cout.flush();
    if (!std::cout) return fail(kExitFailure, "cannot write to standard output");
    return 0;
}

}  // namespace otahub::cli
