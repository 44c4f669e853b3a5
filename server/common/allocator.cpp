#include "server/common/allocator.hpp"

#include <dlfcn.h>
#include <gnu/libc-version.h>

#include <cstddef>
#include <string_view>

namespace otahub {

namespace {

/// `name` from the library that holds `malloc`, else nullptr.
template <typename Fn>
Fn find_symbol(void* library, const char* name) {
    return library == nullptr ? nullptr : reinterpret_cast<Fn>(dlsym(library, name));
}

}  // namespace

MemoryAllocator memory_allocator() {
    // The malloc every library of the process calls is the first one in the lookup order: a
    // preloaded allocator comes before the one otahubd links.
    Dl_info info{};
    void* malloc_address = dlsym(RTLD_DEFAULT, "malloc");
    if (malloc_address == nullptr || dladdr(malloc_address, &info) == 0 ||
        info.dli_fname == nullptr) {
        return {"unknown", ""};
    }
    const std::string_view file = info.dli_fname;
    // Already loaded (RTLD_NOLOAD): only a handle for the lookups below, closed at the end.
    void* library = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    MemoryAllocator found{"glibc", gnu_get_libc_version()};
    if (file.find("tcmalloc") != std::string_view::npos) {
        // gperftools: const char* tc_version(int* major, int* minor, const char** patch).
        using TcVersion = const char* (*)(int*, int*, const char**);
        found = {"tcmalloc", ""};
        if (auto tc_version = find_symbol<TcVersion>(library, "tc_version")) {
            int major = 0;
            int minor = 0;
            const char* patch = nullptr;
            tc_version(&major, &minor, &patch);
            found.version = std::to_string(major) + "." + std::to_string(minor) +
                            (patch != nullptr ? patch : "");
        }
    } else if (file.find("jemalloc") != std::string_view::npos) {
        // jemalloc: int mallctl(const char* name, void* old, size_t* old_len, void* new, size_t).
        using Mallctl = int (*)(const char*, void*, std::size_t*, void*, std::size_t);
        found = {"jemalloc", ""};
        const char* version = nullptr;
        std::size_t length = sizeof version;
        auto mallctl = find_symbol<Mallctl>(library, "mallctl");
        if (mallctl != nullptr && mallctl("version", &version, &length, nullptr, 0) == 0 &&
            version != nullptr) {
            found.version = version;
        }
    } else if (file.find("mimalloc") != std::string_view::npos) {
        // mimalloc: int mi_version(void), 209 for 2.0.9.
        using MiVersion = int (*)();
        found = {"mimalloc", ""};
        if (auto mi_version = find_symbol<MiVersion>(library, "mi_version")) {
            const int v = mi_version();
            found.version = std::to_string(v / 100) + "." + std::to_string(v / 10 % 10) + "." +
                            std::to_string(v % 10);
        }
    } else if (file.find("libasan") != std::string_view::npos) {
        found = {"asan", std::string(file.substr(file.rfind('/') + 1))};  // the sanitized build
    } else if (file.find("libc.so") == std::string_view::npos) {
        found = {"other", std::string(file)};  // e.g. a sanitizer runtime's or a static malloc
    }
    if (library != nullptr) dlclose(library);
    return found;
}

}  // namespace otahub
