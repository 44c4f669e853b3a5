#pragma once

#include <cstdint>
#include <memory>

#include "server/app/config.hpp"

namespace otahub {

/// The composition root of otahubd: thread pools, database, listeners, signals.
class App {
  public:
    explicit App(Config config);
    ~App();
    App(const App&) = delete;
    App& operator=(const App&) = delete;

    /// Binds the listeners and starts the threads; throws on any start-up failure.
    void start();
    /// Blocks until stop() is called or SIGINT/SIGTERM arrives (when `handle_signals`).
    void wait(bool handle_signals = true);
    /// Stops accepting, closes sessions and joins the threads. Idempotent.
    void stop();

    std::uint16_t api_port() const;
    std::uint16_t device_port() const;

    struct Impl;

  private:
    /// Loads trust, starts the event bus, presence and the device listener.
    void start_device_endpoint();

    std::unique_ptr<Impl> impl_;
};

}  // namespace otahub
