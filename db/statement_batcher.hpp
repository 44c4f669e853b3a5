#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "db/database.hpp"

namespace otahub::db {

/// Runs the same statement for the items that arrive together as one statement over all of them:
/// in a storm of device connections PostgreSQL then executes, locks and commits once per batch
/// instead of once per item, and the caller's side sends and reads one message. There is no timer
/// and no thread of its own: the first caller finding no batch in flight runs one with everything
/// queued (the leader), the others wait for it; an item alone is run at once. Items that share a
/// key (`keys`) go to separate batches, so a statement can match its rows to items by them.
template <class Item, class Result>
class StatementBatcher {
  public:
    /// One result per item, in order, from one statement (without a transaction block).
    using Run = std::function<std::vector<Result>(Tx&, const std::vector<Item>&)>;
    /// The keys no two items of a batch may share.
    using Keys = std::function<std::vector<std::string>(const Item&)>;

    StatementBatcher(Database& db, Run run, Keys keys, std::size_t max_batch = 64)
        : db_(db),
          run_(std::move(run)),
          keys_(std::move(keys)),
          max_batch_(max_batch == 0 ? 1 : max_batch) {}
    StatementBatcher(const StatementBatcher&) = delete;
    StatementBatcher& operator=(const StatementBatcher&) = delete;

    /// The result for `item`. Blocking: call on the worker pool. Throws what the statement throws
    /// for it: Unavailable for the whole batch; any other failure of a batch is retried item by
    /// item, so one item's fault fails only that item.
    Result decide(const Item& item) {
        Slot slot;
        slot.item = &item;
        std::unique_lock lock{mutex_};
        queue_.push_back(&slot);
        while (!slot.done) {
            if (leading_) {
                slot.wake.wait(lock);
                continue;
            }
            leading_ = true;
            const auto batch = take_locked();
            ++statements_;
            items_ += batch.size();
            lock.unlock();
            // The slots of `batch` are written by this thread only; their owners read them after
            // `done` is set under the lock.
            run(batch);
            lock.lock();
            leading_ = false;
            // Wake only the batch's callers, and the next in line to lead (no herd).
            for (auto* s : batch) {
                s->done = true;
                if (s != &slot) s->wake.notify_one();
            }
            if (!queue_.empty()) queue_.front()->wake.notify_one();
        }
        lock.unlock();
        if (slot.error) std::rethrow_exception(slot.error);
        return std::move(*slot.result);
    }

    /// Statements run and items decided so far (tests).
    std::size_t statements() const {
        const std::lock_guard lock{mutex_};
        return statements_;
    }
    std::size_t items() const {
        const std::lock_guard lock{mutex_};
        return items_;
    }

  private:
    struct Slot {
        const Item* item = nullptr;
        std::optional<Result> result{};
        std::exception_ptr error{};
        bool done = false;
        std::condition_variable wake{};
    };

    std::vector<Slot*> take_locked() {
        std::vector<Slot*> batch;
        std::set<std::string> taken;
        for (auto it = queue_.begin(); it != queue_.end() && batch.size() < max_batch_;) {
            const auto own = keys_(*(*it)->item);
            bool clash = false;
            for (const auto& k : own) clash = clash || taken.contains(k);
            if (clash) {
                ++it;  // the next batch
                continue;
            }
            taken.insert(own.begin(), own.end());
            batch.push_back(*it);
            it = queue_.erase(it);
        }
        return batch;
    }

    void run(const std::vector<Slot*>& batch) {
        auto run_all = [this](const std::vector<Slot*>& slots) {
            std::vector<Item> items;
            items.reserve(slots.size());
            for (const auto* s : slots) items.push_back(*s->item);
            std::vector<Result> results;
            db_.autocommit([&](Tx& tx) { results = run_(tx, items); });
            if (results.size() != slots.size()) {
                throw std::runtime_error("batched statement: one result per item expected");
            }
            for (std::size_t i = 0; i < slots.size(); ++i) slots[i]->result = std::move(results[i]);
        };
        try {
            run_all(batch);
            return;
        } catch (const Unavailable&) {
            for (auto* s : batch) s->error = std::current_exception();
            return;
        } catch (const std::exception&) {
            if (batch.size() == 1) {
                batch.front()->error = std::current_exception();
                return;
            }
        }
        // Not the database's reachability: one item's fault, found by running each alone.
        for (auto* s : batch) {
            try {
                run_all({s});
            } catch (const std::exception&) {
                s->error = std::current_exception();
            }
        }
    }

    Database& db_;
    const Run run_;
    const Keys keys_;
    const std::size_t max_batch_;
    mutable std::mutex mutex_;
    std::deque<Slot*> queue_;
    bool leading_ = false;
    std::size_t statements_ = 0;
    std::size_t items_ = 0;
};

}  // namespace otahub::db
