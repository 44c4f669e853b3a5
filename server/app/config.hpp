#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

namespace otahub {

/// Invalid or missing configuration; the message names the setting.
class ConfigError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// A host and port to listen on.
struct ListenAddress {
    std::string host;
    std::uint16_t port = 0;
    std::string to_string() const;
};

/// Every setting of otahubd. Read from a TOML file, then OTAHUB_* environment variables.
struct Config {
    std::string database_url;                      // OTAHUB_DATABASE_URL (required)
    ListenAddress api_listen{"127.0.0.1", 4000};   // OTAHUB_API_LISTEN
    ListenAddress device_listen{"0.0.0.0", 4001};  // OTAHUB_DEVICE_LISTEN
    std::string tls_cert;                          // OTAHUB_TLS_CERT (PEM, chain)
    std::string tls_key;                           // OTAHUB_TLS_KEY
    std::string tls_ticket_key;                    // OTAHUB_TLS_TICKET_KEY (decoded bytes)
    bool api_tls = true;                           // OTAHUB_API_TLS (with a cert)
    std::string data_dir = "./data";               // OTAHUB_DATA_DIR
    std::string log_level = "info";                // OTAHUB_LOG_LEVEL
    bool log_json = false;                         // OTAHUB_LOG_JSON
    std::string node_id;                           // OTAHUB_NODE_ID (default hostname-pid)
    std::string secret_key;                        // OTAHUB_SECRET_KEY (URL signing, CA keys)
    std::string public_url;                        // OTAHUB_PUBLIC_URL (firmware URLs)
    int io_threads = 2;                            // OTAHUB_IO_THREADS
    int db_threads = 8;                            // OTAHUB_DB_THREADS
    int db_pool_size = 8;                          // OTAHUB_DB_POOL_SIZE
    int db_connect_timeout_s = 5;                  // OTAHUB_DB_CONNECT_TIMEOUT (0 none)
    int db_transaction_timeout_s = 15;             // OTAHUB_DB_TRANSACTION_TIMEOUT (0 none)
    bool db_prepared_statements = true;            // OTAHUB_DB_PREPARED_STATEMENTS
    int refusal_retention_days = 90;               // OTAHUB_REFUSAL_RETENTION_DAYS (0 keep)
    std::uint64_t api_body_limit = 1024 * 1024;    // OTAHUB_API_BODY_LIMIT (bytes)
    std::uint64_t firmware_max_size = 2ULL * 1024 * 1024 * 1024;  // OTAHUB_FIRMWARE_MAX_SIZE
    int firmware_url_ttl_s = 86400;                               // OTAHUB_FIRMWARE_URL_TTL (s)
    int firmware_gc_interval_s = 60;                              // OTAHUB_FIRMWARE_GC_INTERVAL (s)
    int handshake_timeout_s = 10;                                 // OTAHUB_HANDSHAKE_TIMEOUT
    int device_idle_timeout_s = 180;                              // OTAHUB_DEVICE_IDLE_TIMEOUT
    int handshake_rate_limit = 0;           // OTAHUB_HANDSHAKE_RATE_LIMIT (/s, 0 off)
    int rollout_sweep_interval_ms = 15000;  // OTAHUB_ROLLOUT_SWEEP_INTERVAL_MS
    bool reuse_port = false;                // OTAHUB_REUSE_PORT (SO_REUSEPORT)
    // OTAHUB_DEVICE_TLS_RECORDS: "hub" (default) runs TLS 1.3 records itself after the handshake
    // and frees OpenSSL's connection state; "openssl" leaves them to OpenSSL.
    bool device_tls_records_hub = true;
    // OTAHUB_TLS_VERIFY_CACHE: device certificates the trust snapshot in force remembers having
    // accepted (pki::TrustSnapshot::verify); 0 verifies every chain in full.
    std::size_t tls_verify_cache = 65536;
    // OTAHUB_OPENSSL_EC_KEYS: "legacy" decodes EC certificate keys with OpenSSL's built-in EC
    // method (pki::use_legacy_ec_keys); "provider" leaves OpenSSL 3's default; "auto" (default)
    // is legacy where that pays (pki::legacy_ec_keys_pay_off: OpenSSL before 3.2).
    std::string openssl_ec_keys = "auto";
    int drain_seconds = 10;             // OTAHUB_DRAIN_SECONDS
    int cert_rotation_grace_s = 86400;  // OTAHUB_CERT_ROTATION_GRACE (s)
    int cert_renew_window_days = 30;    // OTAHUB_CERT_RENEW_WINDOW_DAYS
    std::string ready_file;             // OTAHUB_READY_FILE (tests)

    /// True when both the certificate and the key are set.
    bool has_tls() const { return !tls_cert.empty() && !tls_key.empty(); }
};

/// Loads configuration: defaults, then the TOML file (if given), then the environment.
/// `require_database` is false for commands that do not need PostgreSQL.
/// Throws ConfigError naming the first bad setting.
Config load_config(const std::optional<std::string>& toml_path,
                   const std::map<std::string, std::string>& env, bool require_listeners = true);

/// The process environment as a map (OTAHUB_* only).
std::map<std::string, std::string> otahub_environment();

/// Parses "host:port" ("[::1]:4000" for IPv6); throws ConfigError naming `setting`.
ListenAddress parse_listen(const std::string& setting, const std::string& text);

}  // namespace otahub
