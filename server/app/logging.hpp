#pragma once

#include <string>

namespace otahub {

/// Sets up the default spdlog logger: one line per event on stderr, plain or JSON lines.
void setup_logging(const std::string& level, bool json);

}  // namespace otahub
