#include "server/common/allocator.hpp"

#include <dlfcn.h>
#include <gnu/libc-version.h>

#include <cstddef>

namespace otahub {

namespace {

/// The allocator's own entry point when it is in the process, else nullptr.
template <typename Fn>
Fn find_symbol(const char* name) {
    return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

}  // namespace

MemoryAllocator memory_allocator() {
    // gperftools: const char* tc_version(int* major, int* minor, const char** patch).
    using TcVersion = const char* (*)(int*, int*, const char**);
    if (auto tc_version = find_symbol<TcVersion>("tc_version")) {
        int major = 0;
        int minor = 0;
        const char* patch = nullptr;
        tc_version(&major, &minor, &patch);
        return {"tcmalloc", std::to_string(major) + "." + std::to_string(minor) +
                                (patch != nullptr ? patch : "")};
    }
    // jemalloc: int mallctl(const char* name, void* old, size_t* old_len, void* new, size_t len).
    using Mallctl = int (*)(const char*, void*, std::size_t*, void*, std::size_t);
    if (auto mallctl = find_symbol<Mallctl>("mallctl")) {
        const char* version = nullptr;
        std::size_t length = sizeof version;
        if (mallctl("version", &version, &length, nullptr, 0) == 0 && version != nullptr) {
            return {"jemalloc", version};
        }
    }
    // mimalloc: int mi_version(void), 209 for 2.0.9.
    using MiVersion = int (*)();
    if (auto mi_version = find_symbol<MiVersion>("mi_version")) {
        const int v = mi_version();
        return {"mimalloc", std::to_string(v / 100) + "." + std::to_string(v / 10 % 10) + "." +
                                std::to_string(v % 10)};
    }
    return {"glibc", gnu_get_libc_version()};
}

}  // namespace otahub
