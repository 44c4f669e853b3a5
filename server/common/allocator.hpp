#pragma once

#include <string>

/// Which malloc the process runs on. otahubd links gperftools' tcmalloc by default (CMake option
/// OTAHUB_MALLOC): glibc's malloc slows down once thousands of sessions have come and gone (see
/// bench/README.md, "glibc's malloc after a storm").
namespace otahub {

struct MemoryAllocator {
    std::string name;     ///< "tcmalloc", "jemalloc", "mimalloc", "glibc", "asan" or "other"
    std::string version;  ///< as the allocator reports it ("2.10", "5.3.0-0-g…", "2.36")
                          ///< ("asan", "other": the file that holds malloc)
};

/// Asks the running process, not the build: the library that holds the malloc every other
/// library calls (so an allocator loaded with LD_PRELOAD wins over the linked one).
MemoryAllocator memory_allocator();

}  // namespace otahub
