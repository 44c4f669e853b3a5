#include "server/domain/storage/firmware_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <vector>

#include "server/common/api_error.hpp"
#include "server/domain/crypto.hpp"

namespace otahub::storage {
namespace {

namespace fs = std::filesystem;

/// Closes a descriptor at the end of the scope.
class Fd {
  public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

  private:
    int fd_;
};

void fsync_path(const fs::path& path, int flags, const std::string& what) {
    Fd fd{::open(path.c_str(), flags | O_CLOEXEC)};
    if (fd.get() < 0) throw_io_error(errno, what);
    if (::fsync(fd.get()) != 0 && errno != EINVAL) throw_io_error(errno, what);
}

/// Copies `source` into the already open `out` (used when a hard link is impossible).
void copy_into(const fs::path& source, int out) {
    Fd in{::open(source.c_str(), O_RDONLY | O_CLOEXEC)};
    if (in.get() < 0) throw_io_error(errno, "open " + source.string());
    std::vector<char> buffer(256 * 1024);
    for (;;) {
        auto got = ::read(in.get(), buffer.data(), buffer.size());
        if (got < 0) {
            if (errno == EINTR) continue;
            throw_io_error(errno, "read " + source.string());
        }
        if (got == 0) break;
        write_all(out, buffer.data(), static_cast<std::size_t>(got), "copy firmware");
    }
}

}  // namespace

[[noreturn]] void throw_io_error(int error, const std::string& what) {
    if (error == ENOSPC || error == EDQUOT) {
        throw ApiError(ErrorCode::kInsufficientStorage, "no space left to store the firmware");
    }
    throw std::system_error(error, std::generic_category(), what);
}

std::pair<int, fs::path> create_unique_file(const fs::path& dir, std::string_view prefix,
                                            std::string_view suffix) {
    for (int attempt = 0;; ++attempt) {
        auto path = dir / (std::string(prefix) + crypto::hex(crypto::random_bytes(12)) +
                           std::string(suffix));
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) return {fd, path};
        if (errno != EEXIST || attempt >= 8) throw_io_error(errno, "create " + path.string());
    }
}

void write_all(int fd, const char* data, std::size_t size, const std::string& what) {
    while (size > 0) {
        auto written = ::write(fd, data, size);
        if (written < 0) {
            if (errno == EINTR) continue;
            throw_io_error(errno, what);
        }
        data += written;
        size -= static_cast<std::size_t>(written);
    }
}

ScopedFile::~ScopedFile() {
    if (path_.empty()) return;
    std::error_code ignored;
    fs::remove(path_, ignored);
}

ScopedFile& ScopedFile::operator=(ScopedFile&& other) noexcept {
    if (this != &other) {
        if (!path_.empty()) {
            std::error_code ignored;
            fs::remove(path_, ignored);
        }
        path_ = std::move(other.path_);
        other.path_.clear();
    }
    return *this;
}

std::string firmware_key(std::int64_t org_id, std::string_view uuid) {
    return std::to_string(org_id) + "/" + std::string(uuid) + ".fw";
}

bool valid_firmware_uuid(std::string_view uuid) {
    if (uuid.size() != 36) return false;
    for (std::size_t i = 0; i < uuid.size(); ++i) {
        char c = uuid[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

LocalFirmwareStore::LocalFirmwareStore(fs::path root) : root_(std::move(root)) {}

fs::path LocalFirmwareStore::path_of(std::string_view key) const {
    // Keys are made by firmware_key; refuse anything that could leave the root regardless.
    fs::path relative{std::string(key)};
    bool ok = !key.empty() && relative.is_relative() && key.find('\0') == std::string_view::npos;
    for (const auto& part : relative) {
        ok = ok && !part.empty() && part != ".." && part != ".";
    }
    if (!ok) throw std::invalid_argument("bad storage key");
    return root_ / relative;
}

StoredObject LocalFirmwareStore::put(std::string_view key, const fs::path& source) {
    const auto target = path_of(key);
    const auto dir = target.parent_path();
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw_io_error(ec.value(), "create " + dir.string());

    // A hidden name in the target directory, so the final rename is atomic and never crosses
    // file systems. A hard link costs nothing when the source is on the same file system.
    ScopedFile staged;
    for (int attempt = 0; staged.path().empty(); ++attempt) {
        auto path = dir / ("." + crypto::hex(crypto::random_bytes(12)) + ".part");
        if (::link(source.c_str(), path.c_str()) == 0) {
            staged = ScopedFile{path};
        } else if (errno == EXDEV || errno == EPERM || errno == EMLINK) {
            auto [fd, copy_path] = create_unique_file(dir, ".", ".part");
            Fd out{fd};
            staged = ScopedFile{copy_path};
            copy_into(source, out.get());
        } else if (errno != EEXIST || attempt >= 8) {
            throw_io_error(errno, "link " + source.string());
        }
    }
    fsync_path(staged.path(), O_RDONLY, "fsync " + staged.path().string());
    if (::rename(staged.path().c_str(), target.c_str()) != 0) {
        throw_io_error(errno, "rename into " + target.string());
    }
    // `staged` is gone now, except when the target already was a link to the same file (rename
    // then does nothing): its destructor removes the leftover name.
    fsync_path(dir, O_RDONLY | O_DIRECTORY, "fsync " + dir.string());
    struct stat st {};
    if (::stat(target.c_str(), &st) != 0) throw_io_error(errno, "stat " + target.string());
    return StoredObject{static_cast<std::uint64_t>(st.st_dev),
                        static_cast<std::uint64_t>(st.st_ino)};
}

bool LocalFirmwareStore::remove(std::string_view key) {
    const auto target = path_of(key);
    if (::unlink(target.c_str()) == 0) return true;
    if (errno == ENOENT) return false;
    throw std::system_error(errno, std::generic_category(), "remove " + target.string());
}

bool LocalFirmwareStore::remove_if_same(std::string_view key, const StoredObject& object) {
    const auto target = path_of(key);
    struct stat st {};
    if (::stat(target.c_str(), &st) != 0) return false;
    if (static_cast<std::uint64_t>(st.st_dev) != object.device ||
        static_cast<std::uint64_t>(st.st_ino) != object.inode) {
        return false;
    }
    return remove(key);
}

std::optional<fs::path> LocalFirmwareStore::local_path(std::string_view key) const {
    return path_of(key);
}

}  // namespace otahub::storage
