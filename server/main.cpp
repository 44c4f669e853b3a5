// otahubd: parse the command line, load configuration, run a subcommand.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>

#include "db/database.hpp"
#include "db/migrator.hpp"
#include "db/repositories/accounts_repository.hpp"
#include "server/app/app.hpp"
#include "server/app/config.hpp"
#include "server/app/logging.hpp"
#include "server/domain/accounts.hpp"
#include "server/domain/pki/ec_keys.hpp"

namespace {

constexpr int kConfigErrorExit = 2;

int run_migrate(const otahub::Config& config) {
    otahub::db::Database db{config.database_url, 1};
    otahub::db::Migrator migrator{db};
    auto applied = migrator.migrate();
    if (applied.empty()) {
        spdlog::info("database is up to date ({} migrations)",
                     otahub::db::embedded_migrations().size());
    } else {
        spdlog::info("applied {} migration(s)", applied.size());
    }
    return 0;
}

int run_create_user(const otahub::Config& config, const std::string& email,
                    const std::string& password, const std::string& org_name,
                    const std::string& name) {
    using namespace otahub;
    if (!valid_email(email)) {
        std::cerr << "otahubd: --email: not a valid address\n";
        return kConfigErrorExit;
    }
    if (password.size() < 8) {
        std::cerr << "otahubd: --password: must be at least 8 characters\n";
        return kConfigErrorExit;
    }
    if (!valid_org_name(org_name)) {
        std::cerr << "otahubd: --org: must be 1-64 letters, digits, '_', '-' or '.'\n";
        return kConfigErrorExit;
    }
    std::string hash = hash_password(password);
    db::Database db{config.database_url, 1};
    db.run([&](db::Tx& tx) {
        auto org = db::accounts::find_org(tx, org_name);
        if (!org) org = db::accounts::create_org(tx, org_name);
        auto user = db::accounts::find_user_by_email(tx, email);
        if (user) {
            db::accounts::set_password(tx, user->id, hash);
        } else {
            user = db::accounts::create_user(tx, email, name.empty() ? email : name, hash);
        }
        db::accounts::upsert_member(tx, org->id, user->id, Role::kAdmin);
    });
    spdlog::info("user {} is an admin of org {}", email, org_name);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    CLI::App cli{"otahubd: the otahub OTA firmware hub server"};
    std::string config_path;
    cli.add_option("--config", config_path,
                   "TOML configuration file (OTAHUB_* variables override it)");
    cli.require_subcommand(0, 1);
    auto* serve = cli.add_subcommand("serve", "Run the hub (default)");
    auto* migrate = cli.add_subcommand("migrate", "Apply pending database migrations");
    auto* create_user =
        cli.add_subcommand("create-user", "Create a user and make them admin of an org");
    std::string email;
    std::string password;
    std::string org;
    std::string name;
    create_user->add_option("--email", email, "E-mail address")->required();
    create_user->add_option("--password", password, "Password (8+ characters)")->required();
    create_user->add_option("--org", org, "Org name (created when missing)")->required();
    create_user->add_option("--name", name, "Display name");
    try {
        cli.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return cli.exit(e);
    }

    otahub::Config config;
    const bool serving = !migrate->parsed() && !create_user->parsed();
    (void)serve;
    try {
        config = otahub::load_config(
            config_path.empty() ? std::nullopt : std::optional<std::string>(config_path),
            otahub::otahub_environment(), serving);
    } catch (const otahub::ConfigError& e) {
        std::cerr << "otahubd: configuration error: " << e.what() << "\n";
        return kConfigErrorExit;
    }
    otahub::setup_logging(config.log_level, config.log_json);

    try {
        if (migrate->parsed()) return run_migrate(config);
        if (create_user->parsed()) return run_create_user(config, email, password, org, name);
        // Before any thread uses OpenSSL (the App's database pool may already speak TLS).
        if (config.openssl_ec_keys == "legacy" ||
            (config.openssl_ec_keys == "auto" && otahub::pki::legacy_ec_keys_pay_off())) {
            std::string why;
            if (otahub::pki::use_legacy_ec_keys(&why) == otahub::pki::EcKeys::kLegacy) {
                spdlog::info(
                    "EC certificate keys: OpenSSL's built-in EC method{} "
                    "(OTAHUB_OPENSSL_EC_KEYS)",
                    otahub::pki::ec_curves_shared() ? ", curves built once" : "");
            } else {
                spdlog::warn("EC certificate keys stay with OpenSSL's providers: {}", why);
            }
        } else if (config.openssl_ec_keys == "auto") {
            spdlog::info(
                "EC certificate keys: OpenSSL's providers (this OpenSSL caches its "
                "decoders; OTAHUB_OPENSSL_EC_KEYS)");
        }
        otahub::App app{config};
        app.start();
        app.wait();
        app.stop();
        return 0;
    } catch (const otahub::ApiError& e) {
        spdlog::critical("{}", e.what());
        return 1;
    } catch (const std::exception& e) {
        spdlog::critical("fatal: {}", e.what());
        return 1;
    }
}
