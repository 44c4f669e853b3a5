#include "server/cli/prompt.hpp"

#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "server/cli/context.hpp"

namespace otahub::cli {
namespace {

/// Turns terminal echo off for its lifetime.
class EchoOff {
  public:
    EchoOff() {
        if (::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
        termios quiet = saved_;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        active_ = ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
    }
    EchoOff(const EchoOff&) = delete;
    EchoOff& operator=(const EchoOff&) = delete;
    ~EchoOff() {
        if (active_) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_);
    }

  private:
    termios saved_{};
    bool active_ = false;
};

}  // namespace

std::string read_answer(const std::string& label, bool secret) {
    const bool tty = ::isatty(STDIN_FILENO) == 1;
    std::string answer;
    bool got = false;
    if (tty) {
        std::fputs((label + ": ").c_str(), stderr);
        std::fflush(stderr);
        if (secret) {
            EchoOff echo_off;
            got = static_cast<bool>(std::getline(std::cin, answer));
            std::fputs("\n", stderr);
        } else {
            got = static_cast<bool>(std::getline(std::cin, answer));
        }
    } else {
        got = static_cast<bool>(std::getline(std::cin, answer));
    }
    if (!got) {
        throw UsageError("no " + label + " given: pass it as an option or on standard input");
    }
    if (!answer.empty() && answer.back() == '\r') answer.pop_back();
    return answer;
}

}  // namespace otahub::cli
