#pragma once

#include <string>

/// Which malloc the process runs on. otahubd links gperftools' tcmalloc by default (CMake option
/// OTAHUB_MALLOC): glibc's malloc slows down once thousands of sessions have come and gone (see
/// bench/README.md, "glibc's malloc after a storm").
namespace otahub {

struct MemoryAllocator {
    std::string name;     ///< "tcmalloc", "jemalloc", "mimalloc" or "glibc"
    std::string version;  ///< as the allocator reports it ("2.10", "5.3.0-0-g…", "2.36")
};

/// Asks the running process, not the build: an allocator loaded with LD_PRELOAD counts too.
MemoryAllocator memory_allocator();

}  // namespace otahub
