#include "server/domain/firmware/fwup_archive.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <limits>
#include <map>
#include <memory>
#include <new>
#include <set>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "server/domain/firmware/checksums.hpp"
#include "server/domain/firmware/meta_conf.hpp"

namespace otahub::firmware {
namespace {

constexpr std::uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr std::uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr std::uint32_t kEndSignature = 0x06054b50;
constexpr std::uint32_t kZip64EndSignature = 0x06064b50;
constexpr std::uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr std::size_t kEndSize = 22;
constexpr std::size_t kZip64EndSize = 56;
constexpr std::size_t kZip64LocatorSize = 20;
constexpr std::size_t kCentralHeaderSize = 46;
constexpr std::size_t kLocalHeaderSize = 30;
constexpr std::uint16_t kExtraZip64 = 0x0001;
constexpr std::uint16_t kExtraTimestamp = 0x5455;
constexpr std::uint16_t kFlagEncrypted = 0x0001;
constexpr std::uint16_t kFlagDataDescriptor = 0x0008;
constexpr std::uint16_t kFlagStrongEncryption = 0x0040;
constexpr std::uint16_t kMethodStore = 0;
constexpr std::uint16_t kMethodDeflate = 8;
constexpr std::size_t kMaxNameLength = 1024;
// fwup refuses a meta.conf shorter than this.
constexpr std::size_t kMinMetaConf = 10;
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::string_view kSignatureName = "meta.conf.ed25519";
constexpr std::string_view kMetaConfName = "meta.conf";
constexpr std::string_view kDataPrefix = "data/";

[[noreturn]] void fail(std::string_view check, const std::string& message) {
    throw FirmwareError(check, message);
}

// Entry names go into messages that end up in JSON: keep them short and ASCII.
std::string printable(std::string_view name) {
    std::string out;
    for (char c : name.substr(0, 120)) {
        auto byte = static_cast<unsigned char>(c);
        out += byte >= 0x20 && byte < 0x7f ? c : '?';
    }
    if (name.size() > 120) {
        out += "...";
    }
    return "'" + out + "'";
}

std::uint16_t le16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }

std::uint32_t le32(const std::uint8_t* p) {
    return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
           (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}

std::uint64_t le64(const std::uint8_t* p) {
    return static_cast<std::uint64_t>(le32(p)) | (static_cast<std::uint64_t>(le32(p + 4)) << 32);
}

// The upload on disk, read at offsets.
class RawFile {
  public:
    explicit RawFile(const std::filesystem::path& path)
        : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)) {
        if (fd_ < 0) {
            throw std::system_error(errno, std::generic_category(), "cannot open " + path.string());
        }
        struct stat st {};
        if (::fstat(fd_, &st) != 0) {
            auto error = errno;
            ::close(fd_);
            throw std::system_error(error, std::generic_category(), "cannot stat " + path.string());
        }
        if (!S_ISREG(st.st_mode)) {
            ::close(fd_);
            throw std::runtime_error(path.string() + " is not a regular file");
        }
        size_ = static_cast<std::uint64_t>(st.st_size);
    }
    ~RawFile() { ::close(fd_); }
    RawFile(const RawFile&) = delete;
    RawFile& operator=(const RawFile&) = delete;

    std::uint64_t size() const { return size_; }

    // Reads exactly `count` bytes at `offset`; false if the file is shorter.
    bool read(std::uint64_t offset, void* out, std::size_t count) const {
        if (offset > size_ || count > size_ - offset) {
            return false;
        }
        auto* bytes = static_cast<std::uint8_t*>(out);
        while (count > 0) {
            auto got = ::pread(fd_, bytes, count, static_cast<off_t>(offset));
            if (got < 0 && errno == EINTR) {
                continue;
            }
            if (got < 0) {
                throw std::system_error(errno, std::generic_category(), "cannot read the upload");
            }
            if (got == 0) {
                return false;
            }
            bytes += got;
            offset += static_cast<std::uint64_t>(got);
            count -= static_cast<std::size_t>(got);
        }
        return true;
    }

  private:
    int fd_;
    std::uint64_t size_ = 0;
};

// One entry as the central directory records it.
struct RawEntry {
    std::string name;
    std::uint16_t flags = 0;
    std::uint16_t method = 0;
    std::uint16_t dos_time = 0;
    std::uint16_t dos_date = 0;
    std::optional<std::int64_t> unix_mtime;
    std::uint64_t compressed_size = 0;
    std::uint64_t size = 0;
    std::uint64_t local_offset = 0;
};

struct CentralDirectory {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
    std::uint64_t entries = 0;
};

CentralDirectory find_central_directory(const RawFile& file) {
    auto file_size = file.size();
    if (file_size < kEndSize) {
        fail(kCheckZip, "not a ZIP archive");
    }
    auto tail_size =
        static_cast<std::size_t>(std::min<std::uint64_t>(file_size, kEndSize + 0xffff));
    std::vector<std::uint8_t> tail(tail_size);
    if (!file.read(file_size - tail_size, tail.data(), tail_size)) {
        fail(kCheckZip, "not a ZIP archive");
    }
    // The end record and its comment must end the file: no trailing bytes.
    std::optional<std::size_t> end_at;
    for (std::size_t i = tail_size - kEndSize + 1; i-- > 0;) {
        if (le32(&tail[i]) == kEndSignature && i + kEndSize + le16(&tail[i + 20]) == tail_size) {
            end_at = i;
            break;
        }
    }
    if (!end_at) {
        fail(kCheckZip, "not a ZIP archive (no end of central directory record)");
    }
    const auto* end = &tail[*end_at];
    std::uint64_t end_offset = file_size - tail_size + *end_at;
    std::uint64_t disk = le16(end + 4);
    std::uint64_t directory_disk = le16(end + 6);
    std::uint64_t disk_entries = le16(end + 8);
    CentralDirectory directory{le32(end + 16), le32(end + 12), le16(end + 10)};
    std::uint64_t directory_end = end_offset;

    std::uint8_t locator[kZip64LocatorSize];
    if (end_offset >= kZip64LocatorSize &&
        file.read(end_offset - kZip64LocatorSize, locator, sizeof locator) &&
        le32(locator) == kZip64LocatorSignature) {
        auto record_offset = le64(locator + 8);
        auto locator_offset = end_offset - kZip64LocatorSize;
        std::uint8_t record[kZip64EndSize];
        if (record_offset > locator_offset || locator_offset - record_offset < kZip64EndSize ||
            !file.read(record_offset, record, sizeof record) ||
            le32(record) != kZip64EndSignature ||
            le64(record + 4) != locator_offset - record_offset - 12 || le32(locator + 16) > 1) {
            fail(kCheckZip, "the ZIP64 end of central directory record is corrupt");
        }
        disk = le32(record + 16);
        directory_disk = le32(record + 20);
        disk_entries = le64(record + 24);
        directory = {le64(record + 48), le64(record + 40), le64(record + 32)};
        directory_end = record_offset;
    }
    if (disk != 0 || directory_disk != 0 || disk_entries != directory.entries) {
        fail(kCheckZip, "multi-disk ZIP archives are not supported");
    }
    if (directory.offset > directory_end || directory.size != directory_end - directory.offset) {
        fail(kCheckZip, "the central directory is not where the end record says");
    }
    return directory;
}

void read_extra(std::span<const std::uint8_t> extra, std::uint32_t size32,
                std::uint32_t compressed32, std::uint32_t offset32, RawEntry& entry) {
    std::size_t at = 0;
    // Fewer than four bytes left is padding some writers leave; it holds no field.
    while (at + 4 <= extra.size()) {
        auto id = le16(&extra[at]);
        std::size_t length = le16(&extra[at + 2]);
        if (length > extra.size() - at - 4) {
            fail(kCheckZip, "the extra field of " + printable(entry.name) + " is corrupt");
        }
        auto data = extra.subspan(at + 4, length);
        if (id == kExtraZip64) {
            std::size_t used = 0;
            auto take = [&](std::uint64_t& field) {
                if (used + 8 > data.size()) {
                    fail(kCheckZip, "the ZIP64 field of " + printable(entry.name) + " is short");
                }
                field = le64(&data[used]);
                used += 8;
            };
            if (size32 == 0xffffffff) {
                take(entry.size);
            }
            if (compressed32 == 0xffffffff) {
                take(entry.compressed_size);
            }
            if (offset32 == 0xffffffff) {
                take(entry.local_offset);
            }
        } else if (id == kExtraTimestamp && data.size() >= 5 && (data[0] & 1) != 0) {
            entry.unix_mtime = static_cast<std::int32_t>(le32(&data[1]));
        }
        at += 4 + length;
    }
}

std::vector<RawEntry> read_central_directory(const RawFile& file, const CentralDirectory& directory,
                                             const VerifyLimits& limits) {
    if (directory.entries > limits.max_entries) {
        fail(kCheckSize, "the archive has " + std::to_string(directory.entries) +
                             " entries, more than the limit of " +
                             std::to_string(limits.max_entries));
    }
    if (directory.entries > directory.size / kCentralHeaderSize) {
        fail(kCheckZip, "the central directory is too small for its entry count");
    }
    std::vector<RawEntry> entries;
    entries.reserve(static_cast<std::size_t>(directory.entries));
    auto end = directory.offset + directory.size;
    auto at = directory.offset;
    std::vector<std::uint8_t> extra;
    for (std::uint64_t i = 0; i < directory.entries; ++i) {
        std::uint8_t header[kCentralHeaderSize];
        if (end - at < kCentralHeaderSize || !file.read(at, header, sizeof header) ||
            le32(header) != kCentralHeaderSignature) {
            fail(kCheckZip, "the central directory is corrupt");
        }
        RawEntry entry;
        entry.flags = le16(header + 8);
        entry.method = le16(header + 10);
        entry.dos_time = le16(header + 12);
        entry.dos_date = le16(header + 14);
        auto compressed32 = le32(header + 20);
        auto size32 = le32(header + 24);
        std::size_t name_length = le16(header + 28);
        std::size_t extra_length = le16(header + 30);
        std::size_t comment_length = le16(header + 32);
        auto offset32 = le32(header + 42);
        entry.compressed_size = compressed32;
        entry.size = size32;
        entry.local_offset = offset32;
        if (end - at - kCentralHeaderSize < name_length + extra_length + comment_length) {
            fail(kCheckZip, "the central directory is corrupt");
        }
        if (le16(header + 34) != 0) {
            fail(kCheckZip, "multi-disk ZIP archives are not supported");
        }
        if (name_length > kMaxNameLength) {
            fail(kCheckLayout,
                 "an entry name is longer than " + std::to_string(kMaxNameLength) + " bytes");
        }
        entry.name.resize(name_length);
        extra.resize(extra_length);
        if (!file.read(at + kCentralHeaderSize, entry.name.data(), name_length) ||
            !file.read(at + kCentralHeaderSize + name_length, extra.data(), extra_length)) {
            fail(kCheckZip, "the central directory is corrupt");
        }
        read_extra(extra, size32, compressed32, offset32, entry);
        at += kCentralHeaderSize + name_length + extra_length + comment_length;
        entries.push_back(std::move(entry));
    }
    if (at != end) {
        fail(kCheckZip, "the central directory size does not match its entries");
    }
    return entries;
}

bool descriptor_gap_ok(bool has_descriptor, std::uint64_t gap) {
    if (!has_descriptor) {
        return gap == 0;
    }
    // CRC and 32- or 64-bit sizes, with or without the optional signature.
    return gap == 12 || gap == 16 || gap == 20 || gap == 24;
}

// fwup on the device streams the local headers in file order, while libzip reads the central
// directory: make both views agree, entry for entry, with no hidden or overlapping bytes.
void check_local_headers(const RawFile& file, const std::vector<RawEntry>& entries,
                         std::uint64_t directory_offset) {
    std::uint64_t expected = 0;
    bool previous_descriptor = false;
    std::string name;
    for (const auto& entry : entries) {
        if (entry.local_offset < expected ||
            !descriptor_gap_ok(previous_descriptor, entry.local_offset - expected)) {
            fail(kCheckLayout, "entry " + printable(entry.name) +
                                   " is out of order, overlaps another or follows hidden bytes");
        }
        std::uint8_t header[kLocalHeaderSize];
        if (!file.read(entry.local_offset, header, sizeof header) ||
            le32(header) != kLocalHeaderSignature) {
            fail(kCheckZip, "the local header of " + printable(entry.name) + " is missing");
        }
        auto flags = le16(header + 6);
        auto method = le16(header + 8);
        auto compressed32 = le32(header + 18);
        auto size32 = le32(header + 22);
        std::size_t name_length = le16(header + 26);
        std::size_t extra_length = le16(header + 28);
        name.resize(name_length);
        if (name_length != entry.name.size() ||
            !file.read(entry.local_offset + kLocalHeaderSize, name.data(), name_length) ||
            name != entry.name) {
            fail(kCheckLayout,
                 "the local header of " + printable(entry.name) + " names a different file");
        }
        bool sizes_differ =
            (flags & kFlagDataDescriptor) == 0 &&
            ((compressed32 != 0xffffffff && compressed32 != entry.compressed_size) ||
             (size32 != 0xffffffff && size32 != entry.size));
        if (method != entry.method || (flags & kFlagEncrypted) != (entry.flags & kFlagEncrypted) ||
            sizes_differ) {
            fail(kCheckLayout, "the local header of " + printable(entry.name) +
                                   " disagrees with the central directory");
        }
        auto data = entry.local_offset + kLocalHeaderSize + name_length + extra_length;
        if (data > file.size() || entry.compressed_size > file.size() - data) {
            fail(kCheckZip, printable(entry.name) + " runs past the end of the file");
        }
        expected = data + entry.compressed_size;
        previous_descriptor = (flags & kFlagDataDescriptor) != 0;
    }
    if (directory_offset < expected ||
        !descriptor_gap_ok(previous_descriptor, directory_offset - expected)) {
        fail(kCheckLayout, "the archive holds bytes outside its entries");
    }
}

void check_name(std::string_view name) {
    if (name.empty()) {
        fail(kCheckLayout, "an entry has an empty name");
    }
    for (char c : name) {
        auto byte = static_cast<unsigned char>(c);
        if (byte < 0x20 || byte == 0x7f) {
            fail(kCheckLayout, "entry " + printable(name) + " has a NUL or control character");
        }
        if (c == '\\') {
            fail(kCheckLayout, "entry " + printable(name) + " has a backslash");
        }
    }
    if (name.front() == '/') {
        fail(kCheckLayout, "entry " + printable(name) + " is an absolute path");
    }
    std::size_t start = 0;
    for (;;) {
        auto slash = name.find('/', start);
        auto segment =
            name.substr(start, slash == std::string_view::npos ? name.npos : slash - start);
        if (segment.empty() || segment == "." || segment == "..") {
            fail(kCheckLayout, "entry " + printable(name) + " is not a plain relative path");
        }
        if (slash == std::string_view::npos) {
            return;
        }
        start = slash + 1;
    }
}

struct Layout {
    std::optional<std::size_t> signature;
    std::size_t meta_conf = 0;
    std::vector<std::size_t> resources;
};

bool over_ratio(std::uint64_t size, std::uint64_t compressed, std::uint64_t max_ratio) {
    compressed = std::max<std::uint64_t>(compressed, 1);
    if (max_ratio > std::numeric_limits<std::uint64_t>::max() / compressed) {
        return false;
    }
    return size > max_ratio * compressed;
}

Layout check_layout(const std::vector<RawEntry>& entries, const VerifyLimits& limits) {
    Layout layout;
    std::optional<std::size_t> meta_conf;
    std::set<std::string_view> names;
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < entries.size(); ++i) {
        const auto& entry = entries[i];
        const auto& name = entry.name;
        check_name(name);
        if (!names.insert(name).second) {
            fail(kCheckLayout, "entry " + printable(name) + " is stored twice");
        }
        if ((entry.flags & (kFlagEncrypted | kFlagStrongEncryption)) != 0) {
            fail(kCheckLayout, "entry " + printable(name) + " is encrypted");
        }
        if (entry.method != kMethodStore && entry.method != kMethodDeflate) {
            fail(kCheckLayout, "entry " + printable(name) + " uses compression method " +
                                   std::to_string(entry.method) + "; fwup uses deflate");
        }
        if (entry.method == kMethodStore && entry.size != entry.compressed_size) {
            fail(kCheckZip, "stored entry " + printable(name) + " has inconsistent sizes");
        }
        if (entry.size > limits.max_entry_size) {
            fail(kCheckSize, "entry " + printable(name) + " declares " +
                                 std::to_string(entry.size) + " bytes, more than the limit of " +
                                 std::to_string(limits.max_entry_size));
        }
        if (entry.size > limits.max_total_size - total) {
            fail(kCheckSize, "the entries declare more than the limit of " +
                                 std::to_string(limits.max_total_size) + " bytes");
        }
        total += entry.size;
        if (over_ratio(entry.size, entry.compressed_size, limits.max_ratio)) {
            fail(kCheckSize, "entry " + printable(name) + " expands more than " +
                                 std::to_string(limits.max_ratio) + " times");
        }
        // fwup streams the archive and needs the signature, then meta.conf, before any data.
        if (name == kSignatureName) {
            if (i != 0) {
                fail(kCheckLayout, "meta.conf.ed25519 must be the first entry");
            }
            layout.signature = i;
        } else if (name == kMetaConfName) {
            if (i != (layout.signature ? 1U : 0U)) {
                fail(kCheckLayout, "meta.conf must come first, after its signature only");
            }
            meta_conf = i;
        } else if (name.starts_with(kDataPrefix)) {
            layout.resources.push_back(i);
        } else {
            fail(kCheckLayout, "entry " + printable(name) + " is outside data/");
        }
    }
    if (!meta_conf) {
        fail(kCheckLayout, "the archive has no meta.conf");
    }
    layout.meta_conf = *meta_conf;
    return layout;
}

struct ZipDiscard {
    void operator()(zip_t* archive) const { zip_discard(archive); }
};

struct ZipFileClose {
    void operator()(zip_file_t* file) const { zip_fclose(file); }
};

using ZipArchive = std::unique_ptr<zip_t, ZipDiscard>;

ZipArchive open_zip(const std::filesystem::path& path, const std::vector<RawEntry>& entries) {
    int error = 0;
    ZipArchive archive(zip_open(path.c_str(), ZIP_RDONLY, &error));
    if (!archive) {
        if (error == ZIP_ER_MEMORY) {
            throw std::bad_alloc();
        }
        zip_error_t details;
        zip_error_init_with_code(&details, error);
        std::string message = zip_error_strerror(&details);
        zip_error_fini(&details);
        if (error == ZIP_ER_OPEN || error == ZIP_ER_NOENT) {
            throw std::runtime_error("libzip cannot open " + path.string() + ": " + message);
        }
        fail(kCheckZip, "libzip cannot read the archive: " + message);
    }
    auto count = zip_get_num_entries(archive.get(), 0);
    if (count < 0 || static_cast<std::uint64_t>(count) != entries.size()) {
        fail(kCheckZip, "libzip reads a different number of entries");
    }
    for (std::size_t i = 0; i < entries.size(); ++i) {
        zip_stat_t stat;
        zip_stat_init(&stat);
        const auto& entry = entries[i];
        constexpr auto kNeeded = ZIP_STAT_NAME | ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE;
        if (zip_stat_index(archive.get(), i, ZIP_FL_ENC_RAW, &stat) != 0 ||
            (stat.valid & kNeeded) != kNeeded || stat.name == nullptr || entry.name != stat.name ||
            stat.size != entry.size || stat.comp_size != entry.compressed_size) {
            fail(kCheckZip, "libzip reads entry " + printable(entry.name) + " differently");
        }
    }
    return archive;
}

// Streams one entry through `sink`, refusing to inflate past its declared size.
template <typename Sink>
void read_entry(zip_t* archive, std::size_t index, const RawEntry& entry,
                std::vector<std::uint8_t>& buffer, Sink&& sink) {
    std::unique_ptr<zip_file_t, ZipFileClose> file(zip_fopen_index(archive, index, 0));
    if (!file) {
        fail(kCheckZip, "cannot open " + printable(entry.name) + ": " + zip_strerror(archive));
    }
    std::uint64_t total = 0;
    for (;;) {
        auto got = zip_fread(file.get(), buffer.data(), buffer.size());
        if (got < 0) {
            fail(kCheckZip,
                 "cannot read " + printable(entry.name) + ": " + zip_file_strerror(file.get()));
        }
        if (got == 0) {
            break;
        }
        total += static_cast<std::uint64_t>(got);
        if (total > entry.size) {
            fail(kCheckSize, printable(entry.name) + " inflates past its declared " +
                                 std::to_string(entry.size) + " bytes");
        }
        sink(buffer.data(), static_cast<std::size_t>(got));
    }
    if (total != entry.size) {
        fail(kCheckZip, printable(entry.name) + " is shorter than its declared size");
    }
    if (zip_fclose(file.release()) != 0) {
        fail(kCheckZip, "cannot read " + printable(entry.name));
    }
}

std::string read_small_entry(zip_t* archive, std::size_t index, const RawEntry& entry,
                             std::vector<std::uint8_t>& buffer) {
    std::string out;
    out.reserve(static_cast<std::size_t>(entry.size));
    read_entry(archive, index, entry, buffer, [&](const std::uint8_t* data, std::size_t size) {
        out.append(reinterpret_cast<const char*>(data), size);
    });
    return out;
}

std::size_t check_signature(const std::optional<std::string>& signature, std::string_view meta_conf,
                            std::span<const PublicKey> keys) {
    if (!signature) {
        fail(kCheckSignature, "unsigned");
    }
    if (keys.empty()) {
        fail(kCheckSignature, "no signing keys to verify the signature with");
    }
    ensure_sodium();
    const auto* message = reinterpret_cast<const unsigned char*>(meta_conf.data());
    const auto* bytes = reinterpret_cast<const unsigned char*>(signature->data());
    for (std::size_t i = 0; i < keys.size(); ++i) {
        if (crypto_sign_verify_detached(bytes, message, meta_conf.size(), keys[i].data()) == 0) {
            return i;
        }
    }
    fail(kCheckSignature, "signed by an unknown key");
}

bool is_blake2b_hex(std::string_view hex) {
    // fwup compares its own lower-case hex with memcmp: upper case fails on the device.
    return hex.size() == 2 * crypto_generichash_BYTES &&
           std::all_of(hex.begin(), hex.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string blake2b_hex(crypto_generichash_state& state) {
    std::array<std::uint8_t, crypto_generichash_BYTES> hash{};
    crypto_generichash_final(&state, hash.data(), hash.size());
    auto hex = hex_upper(hash);
    std::transform(hex.begin(), hex.end(), hex.begin(),
                   [](char c) { return c >= 'A' && c <= 'F' ? static_cast<char>(c + 32) : c; });
    return hex;
}

std::string missing_message(const FileResource& resource) {
    auto message = "file-resource " + printable(resource.name) + " is missing from the archive";
    if (resource.name.starts_with('/')) {
        message += " (fwup stores it outside data/, which the hub does not accept)";
    }
    return message;
}

void check_resources(zip_t* archive, const std::vector<RawEntry>& entries, const Layout& layout,
                     const MetaConf& meta, std::vector<std::uint8_t>& buffer) {
    std::map<std::string_view, const FileResource*> by_name;
    for (const auto& resource : meta.resources) {
        by_name.emplace(resource.name, &resource);
    }
    // Cheap checks on every entry first, then the hashing.
    std::vector<std::pair<std::size_t, const FileResource*>> work;
    std::set<std::string_view> present;
    for (auto index : layout.resources) {
        const auto& entry = entries[index];
        auto name = std::string_view(entry.name).substr(kDataPrefix.size());
        auto it = by_name.find(name);
        if (it == by_name.end()) {
            fail(kCheckResource, printable(entry.name) + " is not a file-resource of meta.conf");
        }
        const auto& resource = *it->second;
        if (!is_blake2b_hex(resource.blake2b_256)) {
            fail(kCheckResource,
                 "file-resource " + printable(resource.name) + " has no valid blake2b-256");
        }
        if (entry.size != resource.data_size) {
            fail(kCheckResource, printable(entry.name) + " has " + std::to_string(entry.size) +
                                     " bytes, meta.conf says " +
                                     std::to_string(resource.data_size));
        }
        present.insert(name);
        work.emplace_back(index, &resource);
    }
    for (const auto& resource : meta.resources) {
        if (!present.contains(resource.name)) {
            fail(kCheckResource, missing_message(resource));
        }
    }
    for (const auto& [index, resource] : work) {
        crypto_generichash_state state;
        crypto_generichash_init(&state, nullptr, 0, crypto_generichash_BYTES);
        read_entry(archive, index, entries[index], buffer,
                   [&](const std::uint8_t* data, std::size_t size) {
                       crypto_generichash_update(&state, data, size);
                   });
        if (blake2b_hex(state) != resource->blake2b_256) {
            fail(kCheckResource,
                 printable(entries[index].name) + " does not match its blake2b-256 in meta.conf");
        }
    }
}

// fwup takes meta.conf's ZIP mtime: the extended timestamp if present, else the DOS time,
// which has no zone (fwup reads it in the local zone; the hub reads it as UTC).
std::string creation_date(const RawEntry& entry) {
    std::time_t seconds = 0;
    if (entry.unix_mtime) {
        seconds = static_cast<std::time_t>(*entry.unix_mtime);
    } else {
        std::tm fields{};
        fields.tm_year = 80 + (entry.dos_date >> 9);
        fields.tm_mon = ((entry.dos_date >> 5) & 0x0f) - 1;
        fields.tm_mday = entry.dos_date & 0x1f;
        fields.tm_hour = entry.dos_time >> 11;
        fields.tm_min = (entry.dos_time >> 5) & 0x3f;
        fields.tm_sec = (entry.dos_time & 0x1f) * 2;
        seconds = ::timegm(&fields);
    }
    std::tm utc{};
    char text[32] = {};
    if (::gmtime_r(&seconds, &utc) == nullptr ||
        std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc) == 0) {
        return {};
    }
    return text;
}

FirmwareInfo check_archive(const std::filesystem::path& path,
                           std::optional<std::span<const PublicKey>> keys,
                           const VerifyLimits& limits) {
    ensure_sodium();
    std::vector<RawEntry> entries;
    {
        RawFile file(path);
        if (file.size() > limits.max_archive_size) {
            fail(kCheckSize, "the archive is " + std::to_string(file.size()) +
                                 " bytes, more than the limit of " +
                                 std::to_string(limits.max_archive_size));
        }
        auto directory = find_central_directory(file);
        entries = read_central_directory(file, directory, limits);
        check_local_headers(file, entries, directory.offset);
    }
    auto layout = check_layout(entries, limits);
    auto archive = open_zip(path, entries);
    std::vector<std::uint8_t> buffer(kReadChunk);

    FirmwareInfo info;
    std::optional<std::string> signature;
    if (layout.signature) {
        const auto& entry = entries[*layout.signature];
        if (entry.size != crypto_sign_BYTES) {
            fail(kCheckSignature, "meta.conf.ed25519 has " + std::to_string(entry.size) +
                                      " bytes; an Ed25519 signature has 64");
        }
        signature = read_small_entry(archive.get(), *layout.signature, entry, buffer);
        info.has_signature = true;
    }
    const auto& meta_entry = entries[layout.meta_conf];
    if (meta_entry.size > limits.max_meta_conf) {
        fail(kCheckSize, "meta.conf is " + std::to_string(meta_entry.size) +
                             " bytes, more than the limit of " +
                             std::to_string(limits.max_meta_conf));
    }
    if (meta_entry.size < kMinMetaConf) {
        fail(kCheckMetadata, "meta.conf is too short");
    }
    info.meta_conf = read_small_entry(archive.get(), layout.meta_conf, meta_entry, buffer);
    if (keys) {
        info.signing_key_index = check_signature(signature, info.meta_conf, *keys);
    }

    MetaConf meta;
    try {
        meta = parse_meta_conf(info.meta_conf);
    } catch (const MetaConfError& error) {
        fail(kCheckMetadata, error.what());
    }
    info.uuid = meta.get("meta-uuid");
    info.product = meta.get("meta-product");
    info.version = meta.get("meta-version");
    info.platform = meta.get("meta-platform");
    info.architecture = meta.get("meta-architecture");
    info.author = meta.get("meta-author");
    info.description = meta.get("meta-description");
    info.misc = meta.get("meta-misc");
    info.vcs_identifier = meta.get("meta-vcs-identifier");
    info.fwup_version = meta.get("meta-fwup-version");
    // Archives from fwup before 1.2 carry the date in meta.conf; it wins, as in fwup.
    info.creation_date = meta.get("meta-creation-date");
    if (info.creation_date.empty()) {
        info.creation_date = creation_date(meta_entry);
    }
    for (const auto& [key, value] :
         {std::pair{"meta-product", &info.product}, std::pair{"meta-version", &info.version},
          std::pair{"meta-platform", &info.platform},
          std::pair{"meta-architecture", &info.architecture}}) {
        if (value->empty()) {
            fail(kCheckMetadata, std::string("meta.conf has no ") + key);
        }
    }

    check_resources(archive.get(), entries, layout, meta, buffer);
    archive.reset();

    auto digest = digest_file(path);
    info.size = digest.size;
    info.sha256 = std::move(digest.sha256);
    info.partial_sha256 = std::move(digest.partial_sha256);
    return info;
}

}  // namespace

std::optional<PublicKey> parse_public_key(std::string_view base64) {
    constexpr std::string_view kSpace = " \t\r\n";
    auto first = base64.find_first_not_of(kSpace);
    if (first == std::string_view::npos) {
        return std::nullopt;
    }
    base64 = base64.substr(first, base64.find_last_not_of(kSpace) - first + 1);
    // Base64 of 32 bytes is 44 characters with its padding.
    if (base64.size() != 44) {
        return std::nullopt;
    }
    ensure_sodium();
    PublicKey key{};
    std::size_t length = 0;
    const char* end = nullptr;
    if (sodium_base642bin(key.data(), key.size(), base64.data(), base64.size(), nullptr, &length,
                          &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        length != key.size() || end != base64.data() + base64.size()) {
        return std::nullopt;
    }
    // A key that is not a curve point in canonical form can never verify a signature.
    if (crypto_core_ed25519_is_valid_point(key.data()) != 1) {
        return std::nullopt;
    }
    return key;
}

FirmwareInfo verify_firmware(const std::filesystem::path& path, std::span<const PublicKey> keys,
                             const VerifyLimits& limits) {
    return check_archive(path, keys, limits);
}

FirmwareInfo inspect_firmware(const std::filesystem::path& path, const VerifyLimits& limits) {
    return check_archive(path, std::nullopt, limits);
}

}  // namespace otahub::firmware
