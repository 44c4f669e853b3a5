#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace otahub::cli {

/// The user's CLI settings: `$XDG_CONFIG_HOME/otahub/config.json` (default
/// `~/.config/otahub/config.json`), a JSON object with string values (url, token, email, ca, org,
/// product). It holds a bearer token, so it is only ever written with mode 0600 in a 0700
/// directory.
class ConfigFile {
  public:
    /// The file at `path` (not read yet); an empty path is an empty config that cannot be saved.
    explicit ConfigFile(std::filesystem::path path);

    /// The default location from XDG_CONFIG_HOME or HOME; throws std::runtime_error when neither
    /// is set.
    static std::filesystem::path default_path();

    /// Reads the file; a missing file is an empty config. Throws std::runtime_error naming the file
    /// when it exists but cannot be read or is not a JSON object.
    void load();
    /// Writes the file atomically (temporary file, fsync, rename) with mode 0600, creating the
    /// directory with mode 0700. Throws std::runtime_error on failure.
    void save() const;

    /// A string setting, or nullopt when missing, empty or not a string.
    std::optional<std::string> get(const std::string& key) const;
    /// Sets a string setting.
    void set(const std::string& key, const std::string& value);
    /// Removes a setting; returns whether it was there.
    bool unset(const std::string& key);
    /// All settings.
    const nlohmann::json& values() const { return values_; }
    /// Where the file lives.
    const std::filesystem::path& path() const { return path_; }

  private:
    std::filesystem::path path_;
    nlohmann::json values_ = nlohmann::json::object();
};

}  // namespace otahub::cli
