#pragma once

// Headroom for follow-up events: what a handler publishes to its own bus
// while the bus's queue is full (BusConfig::follow_up_headroom).

#include <cstddef>
#include <deque>
#include <new>
#include <utility>

#include "fnbus/detail/envelope.hpp"

namespace fnbus::detail {

// The follow-ups of one worker, kept when the queue was full: the worker
// runs them itself, before it takes anything else from the queue, so a
// handler's follow-ups cannot be starved by external producers keeping the
// queue full, and a worker never waits for queue space that only the pool
// (perhaps only itself) could free.
//
// Bounded by `capacity` events. Memory is taken only while events are
// held (a full queue is the slow path).
//
// Thread safety: none -- owned by one worker thread (its index is its
// own, see WorkSource::run_one()).
class FollowUpBuffer {
 public:
  FollowUpBuffer() = default;
  explicit FollowUpBuffer(std::size_t capacity) : capacity_(capacity) {}

  // Keeps a new envelope built from `args`; false when full (capacity
  // events held) or out of memory.
  template <typename... Args>
  [[nodiscard]] bool try_emplace(Args&&... args) noexcept {
    if (items_.size() >= capacity_) return false;
    try {
      items_.emplace_back(std::forward<Args>(args)...);
    } catch (const std::bad_alloc&) {
      return false;
    }
    return true;
  }

  // Moves the oldest held envelope into `out`; false if none.
  [[nodiscard]] bool try_pop(Envelope& out) noexcept {
    if (items_.empty()) [[likely]]
      return false;
    out = std::move(items_.front());
    items_.pop_front();
    return true;
  }

  [[nodiscard]] bool empty() const noexcept { return items_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return items_.size(); }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

 private:
  std::size_t capacity_ = 0;
  std::deque<Envelope> items_;
};

}  // namespace fnbus::detail
