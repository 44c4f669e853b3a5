// libFuzzer harness for the hub's own multipart/form-data reader (server/http/multipart.hpp),
// which streams firmware uploads. Input: "<Content-Type value>\n<body>".
// Checks: only ApiError or nothing escapes; an accepted body yields a file of the reported size;
// a refused body leaves no file behind in the output directory.
// Built and run by tests/fuzz/run (see tests/fuzz/README.md).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

#include "server/common/api_error.hpp"
#include "server/http/multipart.hpp"

namespace {

namespace fs = std::filesystem;

void check(bool condition) {
    if (!condition) {
        std::abort();
    }
}

// A private scratch directory, removed at exit (libFuzzer exits normally after -runs or
// -max_total_time; a crash leaves it in /tmp, which is what one wants to look at).
const fs::path& scratch() {
    static const fs::path dir = [] {
        std::string name = (fs::temp_directory_path() / "otahub-multipart-fuzz-XXXXXX").string();
        check(::mkdtemp(name.data()) != nullptr);
        std::atexit([] {
            std::error_code ignored;
            fs::remove_all(scratch(), ignored);
        });
        return fs::path(name);
    }();
    return dir;
}

std::size_t files_in(const fs::path& dir) {
    std::size_t count = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) {
        ++count;
    }
    return count;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    auto newline = input.find('\n');
    if (newline == std::string_view::npos) {
        return 0;
    }
    auto boundary = otahub::http::multipart_boundary(input.substr(0, newline));
    if (!boundary) {
        return 0;
    }
    const fs::path& dir = scratch();
    const fs::path body = dir / "body";
    const fs::path out = dir / "out";
    fs::create_directories(out);
    {
        std::ofstream file(body, std::ios::binary | std::ios::trunc);
        auto rest = input.substr(newline + 1);
        file.write(rest.data(), static_cast<std::streamsize>(rest.size()));
    }
    // Small limits so the fuzzer reaches them.
    otahub::http::MultipartLimits limits;
    limits.max_field_size = 64;
    limits.max_header_size = 256;
    limits.max_parts = 8;
    try {
        auto result =
            otahub::http::extract_multipart_file(body, *boundary, "firmware", out, limits);
        if (!result.file.path().empty()) {
            check(fs::file_size(result.file.path()) == result.size);
            check(files_in(out) == 1);
        } else {
            check(files_in(out) == 0);
        }
    } catch (const otahub::ApiError&) {
        check(files_in(out) == 0);
    }
    // The result's ScopedFile removed the extracted file.
    check(files_in(out) == 0);
    return 0;
}
