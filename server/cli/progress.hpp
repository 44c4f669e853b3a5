#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace otahub::cli {

/// Reports the progress of a transfer on stderr: a redrawn bar (bytes, %, rate) on a terminal,
/// plain lines at every 10% otherwise (every 10 MiB when the total is unknown).
class Progress {
  public:
    /// `verb` is "upload" or "download", `name` the file shown.
    Progress(std::string verb, std::string name);
    /// Ends a half-drawn bar with a newline so that an error message starts on its own line.
    ~Progress();
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;
    /// Records `done` of `total` bytes (total 0: unknown).
    void update(std::uint64_t done, std::uint64_t total);
    /// Prints the final line (once).
    void finish();

  private:
    void draw(bool final);
    void line(bool final);

    std::string verb_;
    std::string name_;
    bool tty_;
    bool finished_ = false;
    bool drawn_ = false;
    std::uint64_t done_ = 0;
    std::uint64_t total_ = 0;
    std::uint64_t last_step_ = 0;
    std::chrono::steady_clock::time_point start_;
    std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace otahub::cli
