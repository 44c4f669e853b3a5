#include "server/cli/config_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace otahub::cli {
namespace {

constexpr std::size_t kMaxConfigBytes = 1024 * 1024;

[[noreturn]] void fail(const std::string& what, const std::filesystem::path& path, int error) {
    throw std::runtime_error(what + " " + path.string() + ": " + std::strerror(error));
}

/// Creates `dir` (and missing parents) with mode 0700; tightens an existing otahub directory.
void make_private_directory(const std::filesystem::path& dir) {
    if (dir.empty()) return;
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) fail("not a directory:", dir, ENOTDIR);
        if ((st.st_mode & 077) != 0 && st.st_uid == ::geteuid()) ::chmod(dir.c_str(), 0700);
        return;
    }
    if (dir.has_parent_path() && dir.parent_path() != dir) {
        auto parent = dir.parent_path();
        struct stat parent_st {};
        if (::stat(parent.c_str(), &parent_st) != 0) make_private_directory(parent);
    }
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) fail("cannot create", dir, errno);
}

}  // namespace

ConfigFile::ConfigFile(std::filesystem::path path) : path_(std::move(path)) {}

std::filesystem::path ConfigFile::default_path() {
    const char* xdg = std::getenv("XDG_CONFIG_HOME");
    // The XDG spec says relative values are invalid and must be ignored.
    if (xdg != nullptr && xdg[0] == '/') {
        return std::filesystem::path(xdg) / "otahub" / "config.json";
    }
    const char* home = std::getenv("HOME");
    if (home == nullptr || home[0] == '\0') {
        throw std::runtime_error("neither XDG_CONFIG_HOME nor HOME is set; cannot find the config");
    }
    return std::filesystem::path(home) / ".config" / "otahub" / "config.json";
}

void ConfigFile::load() {
    values_ = nlohmann::json::object();
    if (path_.empty()) return;
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return;
        fail("cannot read", path_, errno);
    }
    std::string text;
    char chunk[8192];
    for (;;) {
        auto n = ::read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int error = errno;
            ::close(fd);
            fail("cannot read", path_, error);
        }
        if (n == 0) break;
        text.append(chunk, static_cast<std::size_t>(n));
        if (text.size() > kMaxConfigBytes) {
            ::close(fd);
            throw std::runtime_error("config file " + path_.string() + " is too large");
        }
    }
    ::close(fd);
    auto parsed = nlohmann::json::parse(text, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_object()) {
        throw std::runtime_error("config file " + path_.string() +
                                 " is not a JSON object; fix or delete it");
    }
    values_ = std::move(parsed);
}

void ConfigFile::save() const {
    if (path_.empty()) {
        throw std::runtime_error("neither XDG_CONFIG_HOME nor HOME is set; cannot save the config");
    }
    make_private_directory(path_.parent_path());
    auto temp = path_;
    temp += ".tmp-" + std::to_string(::getpid());
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) fail("cannot write", temp, errno);
    // The umask cannot widen 0600, but an existing file keeps its mode: set it explicitly.
    ::fchmod(fd, 0600);
    std::string text = values_.dump(2) + "\n";
    std::size_t written = 0;
    while (written < text.size()) {
        auto n = ::write(fd, text.data() + written, text.size() - written);
        if (n < 0) {
            if (errno == EINTR) continue;
            int error = errno;
            ::close(fd);
            ::unlink(temp.c_str());
            fail("cannot write", temp, error);
        }
        written += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        int error = errno;
        ::unlink(temp.c_str());
        fail("cannot write", temp, error);
    }
    if (::rename(temp.c_str(), path_.c_str()) != 0) {
        int error = errno;
        ::unlink(temp.c_str());
        fail("cannot replace", path_, error);
    }
}

std::optional<std::string> ConfigFile::get(const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end() || !it->is_string()) return std::nullopt;
    auto value = it->get<std::string>();
    if (value.empty()) return std::nullopt;
    return value;
}

void ConfigFile::set(const std::string& key, const std::string& value) { values_[key] = value; }

bool ConfigFile::unset(const std::string& key) { return values_.erase(key) > 0; }

}  // namespace otahub::cli
