#pragma once

#include <functional>

#include "server/cli/context.hpp"

namespace CLI {
class App;
}  // namespace CLI

namespace otahub::cli {

/// Makes `command` choose `action`, run once the whole command line has parsed without error.
void on_run(CLI::App* command, Context& ctx, std::function<void()> action);

/// login, logout, whoami, config.
void add_auth_commands(CLI::App& app, Context& ctx);
/// orgs list|show|create, orgs users list|add|set-role|remove.
void add_org_commands(CLI::App& app, Context& ctx);
/// products list|show|create|rename|delete.
void add_product_commands(CLI::App& app, Context& ctx);
/// keys list|show|add|delete.
void add_key_commands(CLI::App& app, Context& ctx);
/// firmware upload|list|show|delete|download.
void add_firmware_commands(CLI::App& app, Context& ctx);
/// ca create; device cert sign|create.
void add_cert_commands(CLI::App& app, Context& ctx);
/// deployments list|show|create|update|delete|preview; device resolution|updates|upgrade|
/// reboot|identify|clear-penalty. Call after add_cert_commands (it extends `device`).
void add_deployment_commands(CLI::App& app, Context& ctx);

/// Parses the command line and runs the command; returns the exit status (0 ok, 1 failure,
/// 2 usage error).
int run(int argc, char** argv);

}  // namespace otahub::cli
