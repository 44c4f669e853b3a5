#pragma once

// What the db tests of a db::StatementBatcher share: a worker pool that counts the jobs it is
// given, and a submit that hands back a future.

#include <cstddef>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace otahub::db::testing {

/// The batcher's worker pool for these tests: every job on a thread of its own, joined at the
/// end; counts the jobs it was given.
class JobThreads {
  public:
    JobThreads() = default;
    JobThreads(const JobThreads&) = delete;
    JobThreads& operator=(const JobThreads&) = delete;
    ~JobThreads() { join(); }

    std::function<void(std::function<void()>)> post() {
        return [this](std::function<void()> job) {
            const std::lock_guard lock{mutex_};
            threads_.emplace_back(std::move(job));
            ++jobs_;
        };
    }
    std::size_t jobs() {
        const std::lock_guard lock{mutex_};
        return jobs_;
    }
    void join() {
        std::vector<std::thread> threads;
        {
            const std::lock_guard lock{mutex_};
            threads.swap(threads_);
        }
        for (auto& t : threads) t.join();
    }

  private:
    std::mutex mutex_;
    std::vector<std::thread> threads_;
    std::size_t jobs_ = 0;
};

/// Submits `item` to `batcher`; the future holds its result or the statement's failure.
template <class Batcher>
std::future<typename Batcher::ResultType> submit_to(Batcher& batcher,
                                                    typename Batcher::ItemType item) {
    using Result = typename Batcher::ResultType;
    auto promise = std::make_shared<std::promise<Result>>();
    auto future = promise->get_future();
    batcher.submit(std::move(item),
                   [promise](std::exception_ptr error, std::optional<Result> result) {
                       if (error) {
                           promise->set_exception(error);
                       } else {
                           promise->set_value(std::move(*result));
                       }
                   });
    return future;
}

}  // namespace otahub::db::testing
