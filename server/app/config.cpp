#include "server/app/config.hpp"

#include <unistd.h>

#include <toml++/toml.h>
#include <array>
#include <charconv>
#include <filesystem>

#include "server/domain/crypto.hpp"

extern char** environ;

namespace otahub {
namespace {

struct Setting {
    const char* env;
    const char* toml;
};

// Every setting has an environment name and a TOML key (the env name, lower-cased, without prefix).
constexpr std::array kSettings = {
    Setting{"OTAHUB_DATABASE_URL", "database_url"},
    Setting{"OTAHUB_API_LISTEN", "api_listen"},
    Setting{"OTAHUB_DEVICE_LISTEN", "device_listen"},
    Setting{"OTAHUB_TLS_CERT", "tls_cert"},
    Setting{"OTAHUB_TLS_KEY", "tls_key"},
    Setting{"OTAHUB_TLS_TICKET_KEY", "tls_ticket_key"},
    Setting{"OTAHUB_API_TLS", "api_tls"},
    Setting{"OTAHUB_DATA_DIR", "data_dir"},
    Setting{"OTAHUB_LOG_LEVEL", "log_level"},
    Setting{"OTAHUB_LOG_JSON", "log_json"},
    Setting{"OTAHUB_NODE_ID", "node_id"},
    Setting{"OTAHUB_SECRET_KEY", "secret_key"},
    Setting{"OTAHUB_PUBLIC_URL", "public_url"},
    Setting{"OTAHUB_IO_THREADS", "io_threads"},
    Setting{"OTAHUB_DB_THREADS", "db_threads"},
    Setting{"OTAHUB_DB_POOL_SIZE", "db_pool_size"},
    Setting{"OTAHUB_DB_CONNECT_TIMEOUT", "db_connect_timeout"},
    Setting{"OTAHUB_DB_TRANSACTION_TIMEOUT", "db_transaction_timeout"},
    Setting{"OTAHUB_DB_PREPARED_STATEMENTS", "db_prepared_statements"},
    Setting{"OTAHUB_REFUSAL_RETENTION_DAYS", "refusal_retention_days"},
    Setting{"OTAHUB_API_BODY_LIMIT", "api_body_limit"},
    Setting{"OTAHUB_FIRMWARE_MAX_SIZE", "firmware_max_size"},
    Setting{"OTAHUB_FIRMWARE_URL_TTL", "firmware_url_ttl"},
    Setting{"OTAHUB_FIRMWARE_GC_INTERVAL", "firmware_gc_interval"},
    Setting{"OTAHUB_HANDSHAKE_TIMEOUT", "handshake_timeout"},
    Setting{"OTAHUB_DEVICE_IDLE_TIMEOUT", "device_idle_timeout"},
    Setting{"OTAHUB_HANDSHAKE_RATE_LIMIT", "handshake_rate_limit"},
    Setting{"OTAHUB_ROLLOUT_SWEEP_INTERVAL_MS", "rollout_sweep_interval_ms"},
    Setting{"OTAHUB_REUSE_PORT", "reuse_port"},
    Setting{"OTAHUB_DEVICE_TLS_RECORDS", "device_tls_records"},
    Setting{"OTAHUB_TLS_VERIFY_CACHE", "tls_verify_cache"},
    Setting{"OTAHUB_OPENSSL_EC_KEYS", "openssl_ec_keys"},
    Setting{"OTAHUB_DRAIN_SECONDS", "drain_seconds"},
    Setting{"OTAHUB_CERT_ROTATION_GRACE", "cert_rotation_grace"},
    Setting{"OTAHUB_CERT_RENEW_WINDOW_DAYS", "cert_renew_window_days"},
    Setting{"OTAHUB_READY_FILE", "ready_file"},
};

std::int64_t parse_int(const std::string& setting, const std::string& text, std::int64_t min,
                       std::int64_t max) {
    std::int64_t value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || ptr != text.data() + text.size() || value < min || value > max) {
        throw ConfigError(setting + ": expected a whole number from " + std::to_string(min) +
                          " to " + std::to_string(max) + ", got '" + text + "'");
    }
    return value;
}

/// 32+ random bytes as hex digits or base64 (`openssl rand -hex 32`), decoded into `out`.
void parse_ticket_key(const std::string& setting, const std::string& text, std::string& out) {
    out.clear();
    const bool hex_digits = !text.empty() && text.size() % 2 == 0 &&
                            text.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
    if (hex_digits) {
        const auto nibble = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
        for (std::size_t i = 0; i + 1 < text.size(); i += 2) {
            out.push_back(static_cast<char>(nibble(text[i]) * 16 + nibble(text[i + 1])));
        }
    } else if (!crypto::base64_decode(text, out)) {
        out.clear();
    }
    if (out.size() < 32) {
        out.clear();
        throw ConfigError(setting +
                          ": expected at least 32 random bytes as hex digits or base64 (e.g. "
                          "`openssl rand -hex 32`)");
    }
}

bool parse_bool(const std::string& setting, const std::string& text) {
    if (text == "1" || text == "true" || text == "yes" || text == "on") return true;
    if (text == "0" || text == "false" || text == "no" || text == "off") return false;
    throw ConfigError(setting + ": expected true or false, got '" + text + "'");
}

void apply(Config& config, const std::string& setting, const std::string& value) {
    if (setting == "OTAHUB_DATABASE_URL") {
        config.database_url = value;
    } else if (setting == "OTAHUB_API_LISTEN") {
        config.api_listen = parse_listen(setting, value);
    } else if (setting == "OTAHUB_DEVICE_LISTEN") {
        config.device_listen = parse_listen(setting, value);
    } else if (setting == "OTAHUB_TLS_CERT") {
        config.tls_cert = value;
    } else if (setting == "OTAHUB_TLS_KEY") {
        config.tls_key = value;
    } else if (setting == "OTAHUB_TLS_TICKET_KEY") {
        config.tls_ticket_key.clear();
        if (!value.empty()) parse_ticket_key(setting, value, config.tls_ticket_key);
    } else if (setting == "OTAHUB_API_TLS") {
        config.api_tls = parse_bool(setting, value);
    } else if (setting == "OTAHUB_DATA_DIR") {
        config.data_dir = value;
    } else if (setting == "OTAHUB_LOG_LEVEL") {
        config.log_level = value;
    } else if (setting == "OTAHUB_LOG_JSON") {
        config.log_json = parse_bool(setting, value);
    } else if (setting == "OTAHUB_NODE_ID") {
        config.node_id = value;
    } else if (setting == "OTAHUB_SECRET_KEY") {
        config.secret_key = value;
    } else if (setting == "OTAHUB_PUBLIC_URL") {
        config.public_url = value;
    } else if (setting == "OTAHUB_IO_THREADS") {
        config.io_threads = static_cast<int>(parse_int(setting, value, 1, 64));
    } else if (setting == "OTAHUB_DB_THREADS") {
        config.db_threads = static_cast<int>(parse_int(setting, value, 1, 256));
    } else if (setting == "OTAHUB_DB_POOL_SIZE") {
        config.db_pool_size = static_cast<int>(parse_int(setting, value, 1, 256));
    } else if (setting == "OTAHUB_DB_CONNECT_TIMEOUT") {
        config.db_connect_timeout_s = static_cast<int>(parse_int(setting, value, 0, 600));
    } else if (setting == "OTAHUB_DB_TRANSACTION_TIMEOUT") {
        config.db_transaction_timeout_s = static_cast<int>(parse_int(setting, value, 0, 3600));
    } else if (setting == "OTAHUB_DB_PREPARED_STATEMENTS") {
        config.db_prepared_statements = parse_bool(setting, value);
    } else if (setting == "OTAHUB_REFUSAL_RETENTION_DAYS") {
        config.refusal_retention_days = static_cast<int>(parse_int(setting, value, 0, 36500));
    } else if (setting == "OTAHUB_API_BODY_LIMIT") {
        config.api_body_limit =
            static_cast<std::uint64_t>(parse_int(setting, value, 1024, 1LL << 30));
    } else if (setting == "OTAHUB_FIRMWARE_MAX_SIZE") {
        config.firmware_max_size =
            static_cast<std::uint64_t>(parse_int(setting, value, 1024, 1LL << 40));
    } else if (setting == "OTAHUB_FIRMWARE_URL_TTL") {
        config.firmware_url_ttl_s = static_cast<int>(parse_int(setting, value, 1, 366 * 86400));
    } else if (setting == "OTAHUB_FIRMWARE_GC_INTERVAL") {
        config.firmware_gc_interval_s = static_cast<int>(parse_int(setting, value, 1, 86400));
    } else if (setting == "OTAHUB_HANDSHAKE_TIMEOUT") {
        config.handshake_timeout_s = static_cast<int>(parse_int(setting, value, 1, 600));
    } else if (setting == "OTAHUB_DEVICE_IDLE_TIMEOUT") {
        config.device_idle_timeout_s = static_cast<int>(parse_int(setting, value, 5, 86400));
    } else if (setting == "OTAHUB_HANDSHAKE_RATE_LIMIT") {
        config.handshake_rate_limit = static_cast<int>(parse_int(setting, value, 0, 1000000));
    } else if (setting == "OTAHUB_REUSE_PORT") {
        config.reuse_port = parse_bool(setting, value);
    } else if (setting == "OTAHUB_DEVICE_TLS_RECORDS") {
        if (value != "hub" && value != "openssl") {
            throw ConfigError(setting + ": expected hub or openssl, got '" + value + "'");
        }
        config.device_tls_records_hub = value == "hub";
    } else if (setting == "OTAHUB_TLS_VERIFY_CACHE") {
        config.tls_verify_cache = static_cast<std::size_t>(parse_int(setting, value, 0, 10000000));
    } else if (setting == "OTAHUB_OPENSSL_EC_KEYS") {
        if (value != "auto" && value != "legacy" && value != "provider") {
            throw ConfigError(setting + ": expected auto, legacy or provider, got '" + value + "'");
        }
        config.openssl_ec_keys = value;
    } else if (setting == "OTAHUB_DRAIN_SECONDS") {
        config.drain_seconds = static_cast<int>(parse_int(setting, value, 0, 600));
    } else if (setting == "OTAHUB_ROLLOUT_SWEEP_INTERVAL_MS") {
        config.rollout_sweep_interval_ms =
            static_cast<int>(parse_int(setting, value, 100, 3600 * 1000));
    } else if (setting == "OTAHUB_CERT_ROTATION_GRACE") {
        config.cert_rotation_grace_s = static_cast<int>(parse_int(setting, value, 0, 366 * 86400));
    } else if (setting == "OTAHUB_CERT_RENEW_WINDOW_DAYS") {
        config.cert_renew_window_days = static_cast<int>(parse_int(setting, value, 0, 3650));
    } else if (setting == "OTAHUB_READY_FILE") {
        config.ready_file = value;
    }
}

std::string toml_value_text(const std::string& setting, const toml::node& node) {
    if (auto s = node.value<std::string>()) return *s;
    if (auto i = node.value<std::int64_t>()) return std::to_string(*i);
    if (auto b = node.value<bool>()) return *b ? "true" : "false";
    throw ConfigError(setting + ": unsupported value type in the configuration file");
}

}  // namespace

std::string ListenAddress::to_string() const {
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

ListenAddress parse_listen(const std::string& setting, const std::string& text) {
    auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) {
        throw ConfigError(setting + ": expected host:port, got '" + text + "'");
    }
    std::string host = text.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    auto port = parse_int(setting, text.substr(colon + 1), 0, 65535);
    return ListenAddress{host, static_cast<std::uint16_t>(port)};
}

std::map<std::string, std::string> otahub_environment() {
    std::map<std::string, std::string> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        std::string entry{*e};
        auto eq = entry.find('=');
        if (eq == std::string::npos || entry.rfind("OTAHUB_", 0) != 0) continue;
        env[entry.substr(0, eq)] = entry.substr(eq + 1);
    }
    return env;
}

Config load_config(const std::optional<std::string>& toml_path,
                   const std::map<std::string, std::string>& env, bool require_listeners) {
    Config config;
    if (toml_path) {
        toml::table table;
        try {
            table = toml::parse_file(*toml_path);
        } catch (const toml::parse_error& e) {
            throw ConfigError("--config: cannot parse " + *toml_path + ": " +
                              std::string(e.description()));
        }
        for (const auto& [key, node] : table) {
            bool known = false;
            for (const auto& setting : kSettings) {
                if (key.str() == setting.toml) {
                    apply(config, setting.env, toml_value_text(setting.env, node));
                    known = true;
                }
            }
            if (!known) {
                throw ConfigError("--config: unknown setting '" + std::string(key.str()) + "' in " +
                                  *toml_path);
            }
        }
    }
    for (const auto& setting : kSettings) {
        auto it = env.find(setting.env);
        if (it != env.end()) apply(config, setting.env, it->second);
    }

    if (config.database_url.empty()) {
        throw ConfigError(
            "OTAHUB_DATABASE_URL: missing (a libpq URI such as "
            "postgresql://user@localhost:5432/otahub)");
    }
    static const std::array kLevels = {"trace", "debug",    "info", "warn",
                                       "error", "critical", "off"};
    bool level_ok = false;
    for (const auto* level : kLevels) level_ok = level_ok || config.log_level == level;
    if (!level_ok) {
        throw ConfigError(
            "OTAHUB_LOG_LEVEL: expected one of trace, debug, info, warn, error, "
            "critical, off; got '" +
            config.log_level + "'");
    }
    if (config.tls_cert.empty() != config.tls_key.empty()) {
        throw ConfigError(config.tls_cert.empty()
                              ? "OTAHUB_TLS_CERT: missing (OTAHUB_TLS_KEY is set)"
                              : "OTAHUB_TLS_KEY: missing (OTAHUB_TLS_CERT is set)");
    }
    if (require_listeners) {
        if (!config.has_tls()) {
            throw ConfigError(
                "OTAHUB_TLS_CERT: missing (the device endpoint needs a server "
                "certificate and key)");
        }
        for (const auto& [setting, path] :
             {std::pair{"OTAHUB_TLS_CERT", config.tls_cert}, {"OTAHUB_TLS_KEY", config.tls_key}}) {
            if (!std::filesystem::is_regular_file(path)) {
                throw ConfigError(std::string(setting) + ": no such file '" + path + "'");
            }
        }
    }
    if (config.node_id.empty()) {
        std::array<char, 256> host{};
        gethostname(host.data(), host.size() - 1);
        config.node_id = std::string(host.data()) + "-" + std::to_string(getpid());
    }
    return config;
}

}  // namespace otahub
