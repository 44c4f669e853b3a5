#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace otahub::storage {

/// Where a stored object landed, to tell it apart from a later object under the same key.
struct StoredObject {
    std::uint64_t device = 0;
    std::uint64_t inode = 0;
};

/// Firmware blobs by key (`<org_id>/<uuid>.fw`, NervesHub's S3 layout). Implementations are
/// thread-safe; calls block on I/O, so call them off the I/O threads.
class FirmwareStore {
  public:
    virtual ~FirmwareStore() = default;

    /// Publishes `source` under `key` atomically (readers see the old object or the whole new
    /// one, never a part), replacing what is there. `source` stays where it is. Throws ApiError
    /// 507 when the disk is full, std::system_error on other I/O errors.
    virtual StoredObject put(std::string_view key, const std::filesystem::path& source) = 0;
    /// Removes the object; true if it existed. Throws std::system_error on I/O errors.
    virtual bool remove(std::string_view key) = 0;
    /// Removes the object only if it is still the one `put` returned (another writer may have
    /// replaced it since); true if removed.
    virtual bool remove_if_same(std::string_view key, const StoredObject& object) = 0;
    /// A path the hub can stream the object from, or nullopt for remote backends (an S3 backend
    /// would hand out presigned URLs instead).
    virtual std::optional<std::filesystem::path> local_path(std::string_view key) const = 0;
};

/// A FirmwareStore in a local directory: `<root>/<org_id>/<uuid>.fw`, written through a hidden
/// temporary file in the same directory, fsynced, then renamed into place.
class LocalFirmwareStore final : public FirmwareStore {
  public:
    explicit LocalFirmwareStore(std::filesystem::path root);

    StoredObject put(std::string_view key, const std::filesystem::path& source) override;
    bool remove(std::string_view key) override;
    bool remove_if_same(std::string_view key, const StoredObject& object) override;
    std::optional<std::filesystem::path> local_path(std::string_view key) const override;

    /// The directory holding the objects.
    const std::filesystem::path& root() const { return root_; }

  private:
    std::filesystem::path path_of(std::string_view key) const;

    std::filesystem::path root_;
};

/// The storage key of a firmware: `<org_id>/<uuid>.fw`.
std::string firmware_key(std::int64_t org_id, std::string_view uuid);

/// True for a lower-case 8-4-4-4-12 hex UUID, the form fwup prints meta-uuid in.
bool valid_firmware_uuid(std::string_view uuid);

/// A file removed when this object goes out of scope, unless released. Not thread-safe.
class ScopedFile {
  public:
    ScopedFile() = default;
    explicit ScopedFile(std::filesystem::path path) : path_(std::move(path)) {}
    ~ScopedFile();
    ScopedFile(ScopedFile&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
    ScopedFile& operator=(ScopedFile&& other) noexcept;
    ScopedFile(const ScopedFile&) = delete;
    ScopedFile& operator=(const ScopedFile&) = delete;

    /// The path (empty when released or default-constructed).
    const std::filesystem::path& path() const { return path_; }
    /// Keeps the file: the destructor no longer removes it.
    void release() { path_.clear(); }

  private:
    std::filesystem::path path_;
};

/// Throws ApiError 507 for ENOSPC/EDQUOT, std::system_error for other errno values; `what`
/// names the operation.
[[noreturn]] void throw_io_error(int error, const std::string& what);

/// Creates a new file exclusively (O_EXCL, mode 0600) named `<prefix><random><suffix>` in
/// `dir`; returns its descriptor and path. Throws like throw_io_error.
std::pair<int, std::filesystem::path> create_unique_file(const std::filesystem::path& dir,
                                                         std::string_view prefix,
                                                         std::string_view suffix);

/// Writes all of `data` to `fd`, retrying short writes; throws like throw_io_error.
void write_all(int fd, const char* data, std::size_t size, const std::string& what);

}  // namespace otahub::storage
