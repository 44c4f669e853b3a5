#pragma once

#include <algorithm>
#include <cstddef>
#include <deque>
#include <iterator>
#include <utility>
#include <vector>

namespace otahub {

/// A FIFO of at most `capacity` items that drops its oldest to make room, and counts what it
/// dropped. Items taken for a write that failed go back to the front, in order. Not thread-safe:
/// its owner locks.
template <class T>
class BoundedQueue {
  public:
    explicit BoundedQueue(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

    /// Appends `item`, dropping the oldest item when full.
    void push(T item) {
        if (items_.size() >= capacity_) {
            items_.pop_front();
            ++dropped_;
        }
        items_.push_back(std::move(item));
    }

    /// Removes and returns the oldest `n` items (fewer when it holds fewer).
    std::vector<T> take(std::size_t n) {
        n = std::min(n, items_.size());
        const auto end = items_.begin() + static_cast<std::ptrdiff_t>(n);
        std::vector<T> out(std::make_move_iterator(items_.begin()), std::make_move_iterator(end));
        items_.erase(items_.begin(), end);
        return out;
    }

    /// Puts `items` (taken earlier) back in front, in their order. What arrived since is kept:
    /// when they do not all fit, the oldest of them are dropped, as push() would have.
    void put_back(std::vector<T> items) {
        for (auto it = items.rbegin(); it != items.rend(); ++it) {
            if (items_.size() >= capacity_) {
                ++dropped_;
                continue;
            }
            items_.push_front(std::move(*it));
        }
    }

    /// How many items were dropped since the last call; resets the count.
    std::size_t take_dropped() { return std::exchange(dropped_, 0); }

    std::size_t size() const { return items_.size(); }
    bool empty() const { return items_.empty(); }
    std::size_t capacity() const { return capacity_; }

  private:
    std::size_t capacity_;
    std::deque<T> items_;
    std::size_t dropped_ = 0;
};

}  // namespace otahub
