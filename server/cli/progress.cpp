#include "server/cli/progress.hpp"

#include <unistd.h>

#include <cstdio>
#include <string>

#include "server/cli/output.hpp"

namespace otahub::cli {
namespace {

constexpr auto kRedrawInterval = std::chrono::milliseconds(100);
constexpr std::uint64_t kUnknownTotalStep = 10ULL * 1024 * 1024;
constexpr int kBarWidth = 30;

std::string rate_text(std::uint64_t bytes, double seconds) {
    if (seconds <= 0.0) return "-";
    return human_bytes(static_cast<std::uint64_t>(static_cast<double>(bytes) / seconds)) + "/s";
}

}  // namespace

Progress::Progress(std::string verb, std::string name)
    : verb_(std::move(verb)),
      name_(std::move(name)),
      tty_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_ - kRedrawInterval) {}

Progress::~Progress() {
    if (tty_ && drawn_ && !finished_) std::fputs("\n", stderr);
}

void Progress::update(std::uint64_t done, std::uint64_t total) {
    done_ = done;
    total_ = total;
    if (tty_) {
        auto now = std::chrono::steady_clock::now();
        if (now - last_draw_ < kRedrawInterval) return;
        last_draw_ = now;
        draw(false);
        return;
    }
    // Plain lines: one per 10% (or per 10 MiB when the size is unknown), the last one by finish().
    std::uint64_t step = total > 0 ? done * 10 / total : done / kUnknownTotalStep;
    if (step > last_step_ && (total == 0 || done < total)) {
        last_step_ = step;
        line(false);
    }
}

void Progress::finish() {
    if (finished_) return;
    if (tty_) {
        draw(true);
    } else {
        line(true);
    }
    finished_ = true;
}

void Progress::draw(bool final) {
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::string text = "\r" + verb_ + " " + name_ + " ";
    if (total_ > 0) {
        auto filled = static_cast<int>(done_ * kBarWidth / total_);
        text += "[" + std::string(static_cast<std::size_t>(filled), '#') +
                std::string(static_cast<std::size_t>(kBarWidth - filled), '-') + "] ";
        text += human_bytes(done_) + " / " + human_bytes(total_) + "  " +
                std::to_string(done_ * 100 / total_) + "%";
    } else {
        text += human_bytes(done_);
    }
    text += "  " + rate_text(done_, seconds) + "\033[K";
    if (final) text += "\n";
    std::fputs(text.c_str(), stderr);
    std::fflush(stderr);
    drawn_ = true;
}

void Progress::line(bool final) {
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::string text = verb_ + " " + name_ + ": ";
    if (total_ > 0) {
        text += std::to_string(done_ * 100 / total_) + "% (" + human_bytes(done_) + " of " +
                human_bytes(total_) + ")";
    } else {
        text += human_bytes(done_);
    }
    if (final) {
        char elapsed[32];
        std::snprintf(elapsed, sizeof elapsed, "%.1f s", seconds);
        text += std::string(" done in ") + elapsed + ", " + rate_text(done_, seconds);
    }
    text += "\n";
    std::fputs(text.c_str(), stderr);
    std::fflush(stderr);
}

}  // namespace otahub::cli
