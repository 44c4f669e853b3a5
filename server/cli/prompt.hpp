#pragma once

#include <string>

namespace otahub::cli {

/// Reads one line for `label`: on a terminal it asks on stderr (without echo when `secret`);
/// otherwise it reads the next line of stdin silently. Throws UsageError at end of input.
std::string read_answer(const std::string& label, bool secret);

}  // namespace otahub::cli
