#include "server/sim/reporter.hpp"

#include <chrono>
#include <cstdio>
#include <string>

namespace otahub::sim {

void Reporter::emit(std::string_view event, std::string_view device, nlohmann::json fields) {
    if (!enabled_) return;
    if (!fields.is_object()) fields = nlohmann::json::object();
    fields["event"] = event;
    if (!device.empty()) fields["device"] = device;
    fields["ts"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
    std::string line = fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line.push_back('\n');
    const std::lock_guard lock{mutex_};
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
}

}  // namespace otahub::sim
