#include "db/connection_batcher.hpp"

#include <exception>
#include <optional>
#include <set>
#include <utility>

#include "db/tx.hpp"

namespace otahub::db {

struct ConnectionBatcher::Slot {
    const devices::ConnectionAttempt* attempt = nullptr;
    std::optional<devices::CheckOrProvision> result{};
    std::exception_ptr error{};
    bool done = false;
};

ConnectionBatcher::ConnectionBatcher(Database& db, std::string node_id, std::string event,
                                     std::size_t max_batch)
    : db_(db),
      node_id_(std::move(node_id)),
      event_(std::move(event)),
      max_batch_(max_batch == 0 ? 1 : max_batch) {}

devices::CheckOrProvision ConnectionBatcher::decide(const devices::ConnectionAttempt& attempt) {
    Slot slot;
    slot.attempt = &attempt;
    std::unique_lock lock{mutex_};
    queue_.push_back(&slot);
    while (!slot.done) {
        if (leading_) {
            done_.wait(lock);
            continue;
        }
        leading_ = true;
        const auto batch = take_locked();
        ++statements_;
        attempts_ += batch.size();
        lock.unlock();
        // The slots of `batch` are written by this thread only; their owners read them after
        // `done` is set under the lock.
        run(batch);
        lock.lock();
        for (auto* s : batch) s->done = true;
        leading_ = false;
        done_.notify_all();
    }
    lock.unlock();
    if (slot.error) std::rethrow_exception(slot.error);
    return std::move(*slot.result);
}

std::vector<ConnectionBatcher::Slot*> ConnectionBatcher::take_locked() {
    std::vector<Slot*> batch;
    std::set<std::string> keys;
    for (auto it = queue_.begin(); it != queue_.end() && batch.size() < max_batch_;) {
        const auto& a = *(*it)->attempt;
        const auto org = std::to_string(a.org_id) + ':';
        const std::string own[] = {"f" + a.certificate.fingerprint, "i" + org + a.identifier,
                                   "k" + org + a.certificate.public_key_fingerprint};
        bool clash = false;
        for (const auto& k : own) clash = clash || keys.contains(k);
        if (clash) {
            ++it;  // the next batch
            continue;
        }
        keys.insert(std::begin(own), std::end(own));
        batch.push_back(*it);
        it = queue_.erase(it);
    }
    return batch;
}

void ConnectionBatcher::run(const std::vector<Slot*>& batch) {
    auto decide_all = [this](const std::vector<Slot*>& slots) {
        std::vector<devices::ConnectionAttempt> attempts;
        attempts.reserve(slots.size());
        for (const auto* s : slots) attempts.push_back(*s->attempt);
        std::vector<devices::CheckOrProvision> results;
        db_.autocommit([&](Tx& tx) {
            results = devices::check_open_or_provision(tx, attempts, node_id_, event_);
        });
        for (std::size_t i = 0; i < slots.size(); ++i) slots[i]->result = std::move(results[i]);
    };
    try {
        decide_all(batch);
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
    // Not the database's reachability: one attempt's fault, found by deciding each alone.
    for (auto* s : batch) {
        try {
            decide_all({s});
        } catch (const std::exception&) {
            s->error = std::current_exception();
        }
    }
}

std::size_t ConnectionBatcher::statements() const {
    const std::lock_guard lock{mutex_};
    return statements_;
}

std::size_t ConnectionBatcher::attempts() const {
    const std::lock_guard lock{mutex_};
    return attempts_;
}

}  // namespace otahub::db
