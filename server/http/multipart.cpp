#include "server/http/multipart.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <system_error>
#include <utility>
#include <vector>

#include "server/common/api_error.hpp"

namespace otahub::http {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kReadChunk = 256 * 1024;

[[noreturn]] void malformed(const std::string& why) {
    throw ApiError(ErrorCode::kBadRequest, "malformed multipart body: " + why);
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string to_lower(std::string_view text) {
    std::string out{text};
    std::transform(out.begin(), out.end(), out.begin(), lower);
    return out;
}

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
    return text;
}

/// Splits `value; a=b; c="d;e"` into the leading value and lower-cased parameters; quoted
/// strings may hold ';' and backslash escapes. Returns nullopt on an unterminated quote.
std::optional<std::pair<std::string, std::map<std::string, std::string>>> parse_parameters(
    std::string_view header) {
    std::map<std::string, std::string> params;
    auto semi = header.find(';');
    std::string value = to_lower(trim(header.substr(0, semi)));
    std::size_t i = semi == std::string_view::npos ? header.size() : semi + 1;
    while (i < header.size()) {
        while (i < header.size() && (header[i] == ' ' || header[i] == '\t' || header[i] == ';')) {
            ++i;
        }
        auto eq = header.find('=', i);
        auto next_semi = header.find(';', i);
        if (eq == std::string_view::npos ||
            (next_semi != std::string_view::npos && next_semi < eq)) {
            // A parameter without a value: skip it.
            i = next_semi == std::string_view::npos ? header.size() : next_semi + 1;
            continue;
        }
        std::string name = to_lower(trim(header.substr(i, eq - i)));
        i = eq + 1;
        while (i < header.size() && (header[i] == ' ' || header[i] == '\t')) ++i;
        std::string param;
        if (i < header.size() && header[i] == '"') {
            ++i;
            bool closed = false;
            while (i < header.size()) {
                char c = header[i++];
                if (c == '\\' && i < header.size()) {
                    param.push_back(header[i++]);
                } else if (c == '"') {
                    closed = true;
                    break;
                } else {
                    param.push_back(c);
                }
            }
            if (!closed) return std::nullopt;
            auto end = header.find(';', i);
            i = end == std::string_view::npos ? header.size() : end + 1;
        } else {
            auto end = header.find(';', i);
            param =
                std::string(trim(header.substr(i, end == std::string_view::npos ? end : end - i)));
            i = end == std::string_view::npos ? header.size() : end + 1;
        }
        if (!name.empty()) params.emplace(std::move(name), std::move(param));
    }
    return std::pair{std::move(value), std::move(params)};
}

/// Buffered reads of the spooled body.
class Reader {
  public:
    explicit Reader(const fs::path& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
        if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "open upload");
    }
    ~Reader() { ::close(fd_); }
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;

    /// Unread bytes in the buffer.
    std::string_view available() const { return std::string_view(buffer_).substr(position_); }
    void consume(std::size_t count) { position_ += count; }
    /// Reads more; false at the end of the file.
    bool read_more() {
        if (position_ > 0) {
            buffer_.erase(0, position_);
            position_ = 0;
        }
        auto old_size = buffer_.size();
        buffer_.resize(old_size + kReadChunk);
        ssize_t got = 0;
        do {
            got = ::read(fd_, buffer_.data() + old_size, kReadChunk);
        } while (got < 0 && errno == EINTR);
        if (got < 0) {
            int error = errno;
            buffer_.resize(old_size);
            throw std::system_error(error, std::generic_category(), "read upload");
        }
        buffer_.resize(old_size + static_cast<std::size_t>(got));
        return got > 0;
    }
    /// Makes at least `count` unread bytes available; false if the file ends first.
    bool ensure(std::size_t count) {
        while (available().size() < count) {
            if (!read_more()) return false;
        }
        return true;
    }
    /// Seeds the buffer with bytes that logically precede the file.
    void prepend(std::string_view bytes) { buffer_.insert(0, bytes); }

  private:
    int fd_;
    std::string buffer_;
    std::size_t position_ = 0;
};

/// Passes every byte up to the next `delimiter` to `sink` and consumes the delimiter; false
/// when the body ends first. Holds back only delimiter-size bytes between reads.
bool scan_to_delimiter(Reader& reader, std::string_view delimiter,
                       const std::function<void(std::string_view)>& sink) {
    for (;;) {
        auto data = reader.available();
        auto found = data.find(delimiter);
        if (found != std::string_view::npos) {
            if (found > 0) sink(data.substr(0, found));
            reader.consume(found + delimiter.size());
            return true;
        }
        if (data.size() >= delimiter.size()) {
            auto safe = data.size() - (delimiter.size() - 1);
            sink(data.substr(0, safe));
            reader.consume(safe);
        }
        if (!reader.read_more()) return false;
    }
}

struct PartHeaders {
    std::string name;
    std::optional<std::string> filename;
};

PartHeaders read_part_headers(Reader& reader, const MultipartLimits& limits) {
    PartHeaders part;
    bool has_disposition = false;
    std::size_t used = 0;
    std::vector<std::string> lines;
    for (;;) {
        auto data = reader.available();
        auto end = data.find("\r\n");
        if (end == std::string_view::npos) {
            if (data.size() + used > limits.max_header_size) malformed("part headers too large");
            if (!reader.read_more()) malformed("the body ends inside part headers");
            continue;
        }
        used += end + 2;
        if (used > limits.max_header_size) malformed("part headers too large");
        std::string line{data.substr(0, end)};
        reader.consume(end + 2);
        if (line.empty()) break;
        if ((line.front() == ' ' || line.front() == '\t') && !lines.empty()) {
            lines.back() += " " + std::string(trim(line));  // obsolete line folding
        } else {
            lines.push_back(std::move(line));
        }
    }
    for (const auto& line : lines) {
        auto colon = line.find(':');
        if (colon == std::string::npos || colon == 0) malformed("bad part header line");
        if (to_lower(trim(std::string_view(line).substr(0, colon))) != "content-disposition") {
            continue;
        }
        auto parsed = parse_parameters(std::string_view(line).substr(colon + 1));
        if (!parsed || parsed->first != "form-data") malformed("bad Content-Disposition");
        auto name = parsed->second.find("name");
        if (name == parsed->second.end()) malformed("a part has no name");
        part.name = name->second;
        auto filename = parsed->second.find("filename");
        if (filename != parsed->second.end()) part.filename = filename->second;
        has_disposition = true;
    }
    if (!has_disposition) malformed("a part has no Content-Disposition");
    return part;
}

}  // namespace

std::optional<std::string> multipart_boundary(std::string_view content_type) {
    auto parsed = parse_parameters(content_type);
    if (!parsed || parsed->first != "multipart/form-data") return std::nullopt;
    auto it = parsed->second.find("boundary");
    if (it == parsed->second.end()) return std::nullopt;
    const auto& boundary = it->second;
    if (boundary.empty() || boundary.size() > 70) return std::nullopt;
    for (char c : boundary) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u > 0x7e) return std::nullopt;
    }
    return boundary;
}

MultipartFile extract_multipart_file(const fs::path& body, std::string_view boundary,
                                     std::string_view file_field, const fs::path& output_dir,
                                     const MultipartLimits& limits) {
    MultipartFile result;
    Reader reader{body};
    const std::string delimiter = "\r\n--" + std::string(boundary);
    // The first boundary may open the body without a preceding CRLF; pretend there was one.
    reader.prepend("\r\n");
    if (!scan_to_delimiter(reader, delimiter, [](std::string_view) {})) {
        malformed("no boundary found");
    }
    std::size_t parts = 0;
    for (;;) {
        if (!reader.ensure(2)) malformed("the body ends after a boundary");
        if (reader.available().substr(0, 2) == "--") return result;  // the close delimiter
        // Transport padding, then CRLF.
        for (;;) {
            if (!reader.ensure(1)) malformed("the body ends after a boundary");
            char c = reader.available().front();
            if (c != ' ' && c != '\t') break;
            reader.consume(1);
        }
        if (!reader.ensure(2) || reader.available().substr(0, 2) != "\r\n") {
            malformed("a boundary is not followed by CRLF");
        }
        reader.consume(2);
        if (++parts > limits.max_parts) malformed("too many parts");

        auto headers = read_part_headers(reader, limits);
        bool complete = false;
        if (headers.name == file_field) {
            if (!result.file.path().empty()) {
                throw ApiError(ErrorCode::kBadRequest, "malformed multipart body: more than one '" +
                                                           std::string(file_field) + "' part");
            }
            auto [fd, path] = storage::create_unique_file(output_dir, "part-", ".fw");
            result.file = storage::ScopedFile{path};
            struct Closer {
                int fd;
                ~Closer() { ::close(fd); }
            } closer{fd};
            result.filename = headers.filename.value_or("");
            // Captures closer.fd, not the structured binding (clang 14 cannot capture those).
            complete = scan_to_delimiter(reader, delimiter, [&](std::string_view bytes) {
                storage::write_all(closer.fd, bytes.data(), bytes.size(), "write firmware part");
                result.size += bytes.size();
            });
        } else if (!headers.filename) {
            std::string value;
            complete = scan_to_delimiter(reader, delimiter, [&](std::string_view bytes) {
                if (value.size() + bytes.size() > limits.max_field_size) {
                    malformed("field '" + headers.name + "' is too large");
                }
                value.append(bytes);
            });
            result.fields.emplace(headers.name, std::move(value));
        } else {
            complete = scan_to_delimiter(reader, delimiter, [](std::string_view) {});
        }
        if (!complete) malformed("the body ends before the closing boundary");
    }
}

}  // namespace otahub::http
