// libFuzzer harness for the fwup archive verifier. Build and run by hand from the repository root:
//   clang++-14 -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I. \
//     tests/fuzz/fwup_archive_fuzz.cpp server/domain/firmware/fwup_archive.cpp \
//     server/domain/firmware/meta_conf.cpp server/domain/firmware/checksums.cpp \
//     -lzip -lsodium -lcrypto -o fwup_archive_fuzz
//   ./fwup_archive_fuzz -max_total_time=20 tests/fuzz/corpus/fwup_archive
// The verifier reads from a path, so each input is written to a temporary file first.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include <unistd.h>

#include "server/domain/firmware/fwup_archive.hpp"

namespace {

namespace firmware = otahub::firmware;

// tests/fixtures/fwup/signing.pub, which signed the seed archives.
constexpr const char* kSigningKey = "fgQLFBRGMbj2NX1O6ZnTxUJFNrl0IQ9t8idigfE9KCg=";

// An unlinked temporary file, reopened by path through /proc: nothing is left behind even
// when libFuzzer ends the process without running exit handlers.
int scratch_fd() {
    static const int fd = [] {
        char name[] = "/tmp/otahub-fwup-fuzz-XXXXXX";
        int created = ::mkstemp(name);
        if (created >= 0) {
            ::unlink(name);
        }
        return created;
    }();
    return fd;
}

const std::filesystem::path& scratch() {
    static const std::filesystem::path path = "/proc/self/fd/" + std::to_string(scratch_fd());
    return path;
}

bool write_input(const std::uint8_t* data, std::size_t size) {
    int fd = scratch_fd();
    if (fd < 0 || ::ftruncate(fd, 0) != 0) {
        return false;
    }
    std::size_t done = 0;
    while (done < size) {
        auto wrote = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
        if (wrote <= 0) {
            return false;
        }
        done += static_cast<std::size_t>(wrote);
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const auto key = firmware::parse_public_key(kSigningKey);
    if (!key) {
        __builtin_trap();
    }
    if (!write_input(data, size)) {
        return 0;
    }
    // Small limits keep each run fast and are themselves under test.
    firmware::VerifyLimits limits;
    limits.max_archive_size = 1 << 20;
    limits.max_entries = 64;
    limits.max_meta_conf = 64 * 1024;
    limits.max_entry_size = 4 << 20;
    limits.max_total_size = 8 << 20;
    try {
        firmware::verify_firmware(scratch(), {&*key, 1}, limits);
    } catch (const firmware::FirmwareError&) {
    }
    try {
        auto info = firmware::inspect_firmware(scratch(), limits);
        if (info.uuid.size() != 36 || info.product.empty() || info.size != size) {
            __builtin_trap();
        }
    } catch (const firmware::FirmwareError&) {
    }
    return 0;
}
