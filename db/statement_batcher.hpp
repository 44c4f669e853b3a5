#pragma once

#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
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
/// and no thread of its own: an item that finds no batch in flight starts one on the worker pool
/// (`Post`), and that job runs batches of everything queued until the queue is empty; an item
/// alone is run at once. A caller waits for its answer without holding a worker thread, so a batch
/// takes every connection that arrived while the one before it ran, however few threads the pool
/// has (with callers blocking on the pool, batches were bounded by its size). Items that share a
/// key (`keys`) go to separate batches, so a statement can match its rows to items by them.
template <class Item, class Result>
class StatementBatcher {
  public:
    using ItemType = Item;
    using ResultType = Result;
    /// One result per item, in order, from one statement (without a transaction block).
    using Run = std::function<std::vector<Result>(Tx&, const std::vector<Item>&)>;
    /// The keys no two items of a batch may share.
    using Keys = std::function<std::vector<std::string>(const Item&)>;
    /// Runs a job on the worker pool (where blocking database calls are allowed), never inline.
    using Post = std::function<void(std::function<void()>)>;
    /// An item's answer: its failure, or (null failure) its result.
    using Done = std::function<void(std::exception_ptr, std::optional<Result>)>;

    StatementBatcher(Database& db, Run run, Keys keys, Post post, std::size_t max_batch = 64)
        : db_(db),
          run_(std::move(run)),
          keys_(std::move(keys)),
          post_(std::move(post)),
          max_batch_(max_batch == 0 ? 1 : max_batch) {}
    StatementBatcher(const StatementBatcher&) = delete;
    StatementBatcher& operator=(const StatementBatcher&) = delete;

    /// Queues `item`; `done` is called once, on the worker thread that ran its batch, with the
    /// item's result or what the statement threw for it: Unavailable for the whole batch; any
    /// other failure of a batch is retried item by item, so one item's fault fails only that
    /// item. `done` must not block; hand the answer on (post it to the caller's executor). The
    /// batcher must outlive the call of the last `done` (a caller still waiting keeps it alive;
    /// nothing of the batcher is touched after the last answer). Throws what `Post` throws (the
    /// item is then not queued).
    void submit(Item item, Done done) {
        auto slot = std::make_unique<Slot>(Slot{std::move(item), std::move(done), {}, {}});
        const std::lock_guard lock{mutex_};
        queue_.push_back(std::move(slot));
        if (leading_) return;  // the running job takes it with the next batch
        // Posted under the lock (Post never runs the job inline; the job waits for the lock), so
        // when it throws the last item queued is still this one and nobody else saw leading_.
        try {
            post_([this] { lead(); });
        } catch (...) {
            queue_.pop_back();
            throw;
        }
        leading_ = true;
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
        Item item;
        Done done;
        std::optional<Result> result;
        std::exception_ptr error;
    };
    using Batch = std::vector<std::unique_ptr<Slot>>;

    /// The job submit posts: batches until the queue is empty. Answers go out after the queue was
    /// found empty and `leading_` cleared, so the last answer is the last use of `this`.
    void lead() {
        std::unique_lock lock{mutex_};
        for (;;) {
            Batch batch = take_locked();
            ++statements_;
            items_ += batch.size();
            lock.unlock();
            run(batch);
            lock.lock();
            const bool more = !queue_.empty();
            if (!more) leading_ = false;
            lock.unlock();
            for (auto& s : batch) {
                try {
                    s->done(s->error, std::move(s->result));
                } catch (...) {
                    // Its caller cannot be told (no memory to hand the answer on); the others can.
                }
            }
            if (!more) return;
            lock.lock();
        }
    }

    Batch take_locked() {
        Batch batch;
        std::set<std::string> taken;
        for (auto it = queue_.begin(); it != queue_.end() && batch.size() < max_batch_;) {
            const auto own = keys_((*it)->item);
            bool clash = false;
            for (const auto& k : own) clash = clash || taken.contains(k);
            if (clash) {
                ++it;  // the next batch
                continue;
            }
            taken.insert(own.begin(), own.end());
            batch.push_back(std::move(*it));
            it = queue_.erase(it);
        }
        return batch;
    }

    void run(const Batch& batch) {
        auto run_all = [this](const std::vector<Slot*>& slots) {
            std::vector<Item> items;
            items.reserve(slots.size());
            for (const auto* s : slots) items.push_back(s->item);
            std::vector<Result> results;
            db_.autocommit([&](Tx& tx) { results = run_(tx, items); });
            if (results.size() != slots.size()) {
                throw std::runtime_error("batched statement: one result per item expected");
            }
            for (std::size_t i = 0; i < slots.size(); ++i) slots[i]->result = std::move(results[i]);
        };
        std::vector<Slot*> slots;
        slots.reserve(batch.size());
        for (const auto& s : batch) slots.push_back(s.get());
        try {
            run_all(slots);
            return;
        } catch (const Unavailable&) {
            for (auto* s : slots) s->error = std::current_exception();
            return;
        } catch (...) {
            if (slots.size() == 1) {
                slots.front()->error = std::current_exception();
                return;
            }
        }
        // Not the database's reachability: one item's fault, found by running each alone.
        for (auto* s : slots) {
            try {
                run_all({s});
            } catch (...) {
                s->error = std::current_exception();
            }
        }
    }

    Database& db_;
    const Run run_;
    const Keys keys_;
    const Post post_;
    const std::size_t max_batch_;
    mutable std::mutex mutex_;
    std::deque<std::unique_ptr<Slot>> queue_;
    bool leading_ = false;  // a job is posted or running; it takes everything queued
    std::size_t statements_ = 0;
    std::size_t items_ = 0;
};

}  // namespace otahub::db
