// libFuzzer harness for the meta.conf parser. Build by hand:
//   clang++-14 -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I. \
//     tests/fuzz/meta_conf_fuzz.cpp server/domain/firmware/meta_conf.cpp -lsodium -o meta_conf_fuzz
//   ./meta_conf_fuzz -max_total_time=20 tests/fuzz/corpus/meta_conf
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "server/domain/firmware/meta_conf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        auto conf = otahub::firmware::parse_meta_conf(text);
        // Invariants of an accepted parse.
        if (conf.get("meta-uuid") != otahub::firmware::fwup_meta_uuid(text)) {
            __builtin_trap();
        }
        for (const auto& resource : conf.resources) {
            std::uint64_t sum = 0;
            for (std::size_t i = 0; i < resource.length.size(); i += 2) {
                sum += resource.length[i];
            }
            if (sum != resource.data_size) {
                __builtin_trap();
            }
        }
    } catch (const otahub::firmware::MetaConfError&) {
        // Refusing is the expected outcome for most inputs.
    }
    return 0;
}
