#pragma once

// PriorityLanes: a bounded multi-producer, multi-consumer queue with one
// FIFO lane per Priority and a starvation bound for the lower lanes.
//
// - Each lane is an MpmcQueue of the same capacity, so one class filling
//   up never refuses another's events. The normal lane exists from the
//   start; the high and low lanes are allocated by their first open(), so
//   a bus that never uses priorities pays neither their memory nor a look
//   at them per pop.
// - Consumers take from the highest non-empty lane, except on their
//   lower lanes' turns: each consumer counts the elements it takes (its
//   LaneCursor) and, of every kCycle = 16, looks at the normal lane first
//   on three (the 4th, 8th and 12th) and at the low lane first on one (the
//   16th; normal second). So while the normal lane is non-empty a consumer
//   takes from it at least once in every kNormalBound = 8 elements it
//   takes, and while the low lane is non-empty at least once in every
//   kLowBound = 16: a saturating high class delays the others, never
//   starves them. Under saturation of all three a consumer's share is
//   12 / 3 / 1 of 16. A turn whose lane is empty falls through to the
//   usual order, so an idle class costs the others nothing.
// - Order: FIFO within a lane (MpmcQueue's guarantee); none across lanes.
//
// Thread safety: try_emplace(), open() and the observers from any thread;
// try_pop() from any thread with a LaneCursor of its own.
// Lifetime: as MpmcQueue (the destructor destroys what is still queued).

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>

#include "fnbus/detail/config.hpp"
#include "fnbus/exec/priority.hpp"
#include "fnbus/queue/mpmc_queue.hpp"

namespace fnbus {

// One consumer's position in its lane cycle (see PriorityLanes). Owned by
// one consumer thread at a time; no synchronisation of its own.
class LaneCursor {
 public:
  static constexpr std::uint32_t kCycle = 16;

  // The lanes to look at, in order, for the consumer's next element.
  [[nodiscard]] std::array<Priority, kPriorityCount> order() const noexcept {
    const std::uint32_t turn = taken_ % kCycle;
    if (turn == kCycle - 1) {
      return {Priority::kLow, Priority::kNormal, Priority::kHigh};
    }
    if (turn % 4 == 3) {
      return {Priority::kNormal, Priority::kHigh, Priority::kLow};
    }
    return {Priority::kHigh, Priority::kNormal, Priority::kLow};
  }
  void took() noexcept { ++taken_; }

 private:
  std::uint32_t taken_ = 0;  // wraps; kCycle divides 2^32
};

template <typename T>
class PriorityLanes {
 public:
  // The starvation bounds documented above, per consumer.
  static constexpr std::size_t kNormalBound = 8;
  static constexpr std::size_t kLowBound = LaneCursor::kCycle;

  // Capacity per lane: as MpmcQueue's (a power of two, at least 2).
  explicit PriorityLanes(std::size_t capacity)
      : capacity_(capacity), normal_(capacity) {}

  PriorityLanes(const PriorityLanes&) = delete;
  PriorityLanes& operator=(const PriorityLanes&) = delete;

  // Makes `priority`'s lane ready for try_emplace(): allocates it on first
  // use. False if memory for it ran out (nothing changed). Cheap once open.
  [[nodiscard]] bool open(Priority priority) noexcept {
    if (priority == Priority::kNormal || lane(priority) != nullptr) return true;
    return allocate(priority);
  }

  // Constructs an element in `priority`'s lane if it has room; false when
  // full. Precondition: open(priority) returned true.
  template <typename... Args>
  [[nodiscard]] bool try_emplace(Priority priority, Args&&... args) noexcept {
    if (priority == Priority::kNormal) [[likely]] {
      return normal_.try_emplace(std::forward<Args>(args)...);
    }
    MpmcQueue<T>* target = lane(priority);
    FNBUS_ASSERT(target != nullptr, "PriorityLanes: open() the lane first");
    return target->try_emplace(std::forward<Args>(args)...);
  }

  // Moves the element `cursor`'s turn picks into `out` (see above); false
  // when every lane is empty.
  [[nodiscard]] bool try_pop(T& out, LaneCursor& cursor) noexcept {
    // relaxed: a hint. Before the first open() of a lane only the normal
    // lane can hold anything; a lane opened just now is still looked at
    // below, when the normal lane is empty.
    if (!mixed_.load(std::memory_order_relaxed)) [[likely]] {
      if (normal_.try_pop(out)) return true;
    }
    for (Priority priority : cursor.order()) {
      MpmcQueue<T>* from = queue(priority);
      if (from != nullptr && from->try_pop(out)) {
        cursor.took();
        return true;
      }
    }
    return false;
  }

  // Elements in all lanes (an estimate while others are active).
  [[nodiscard]] std::size_t size() const noexcept {
    std::size_t total = 0;
    for (std::size_t i = 0; i < kPriorityCount; ++i) {
      total += size(static_cast<Priority>(i));
    }
    return total;
  }
  [[nodiscard]] std::size_t size(Priority priority) const noexcept {
    const MpmcQueue<T>* from = queue(priority);
    return from == nullptr ? 0 : from->size();
  }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }
  // Whether some lane's oldest element is ready (MpmcQueue::front_ready()).
  [[nodiscard]] bool front_ready() const noexcept {
    if (normal_.front_ready()) return true;
    // relaxed: as in try_pop(); spinners also call has_work() (size()).
    if (!mixed_.load(std::memory_order_relaxed)) [[likely]]
      return false;
    const MpmcQueue<T>* high = queue(Priority::kHigh);
    const MpmcQueue<T>* low = queue(Priority::kLow);
    return (high != nullptr && high->front_ready()) ||
           (low != nullptr && low->front_ready());
  }
  // Slots per lane.
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

 private:
  static std::size_t index(Priority priority) noexcept {
    return static_cast<std::size_t>(priority);
  }
  // The high or low lane, or null before its open().
  MpmcQueue<T>* lane(Priority priority) const noexcept {
    // acquire: pairs with allocate()'s release, so the lane's construction
    // is visible before its pointer.
    return extra_[index(priority)].load(std::memory_order_acquire);
  }
  MpmcQueue<T>* queue(Priority priority) noexcept {
    return priority == Priority::kNormal ? &normal_ : lane(priority);
  }
  const MpmcQueue<T>* queue(Priority priority) const noexcept {
    return priority == Priority::kNormal ? &normal_ : lane(priority);
  }

  bool allocate(Priority priority) noexcept {
    std::lock_guard lock(open_mutex_);
    std::unique_ptr<MpmcQueue<T>>& owned = owned_[index(priority)];
    if (owned == nullptr) {
      try {
        owned = std::make_unique<MpmcQueue<T>>(capacity_);
      } catch (...) {  // bad_alloc
        return false;
      }
      // release: see lane().
      extra_[index(priority)].store(owned.get(), std::memory_order_release);
      // relaxed: a hint (see try_pop()); the lane is found through
      // extra_ whatever a consumer reads here.
      mixed_.store(true, std::memory_order_relaxed);
    }
    return true;
  }

  const std::size_t capacity_;
  MpmcQueue<T> normal_;
  // Whether a high or low lane exists: until then a pop looks only at the
  // normal lane first.
  std::atomic<bool> mixed_{false};
  // The high and low lanes ([index(kHigh)], [index(kLow)]; the normal slot
  // stays null), published once by allocate() and never moved.
  std::array<std::atomic<MpmcQueue<T>*>, kPriorityCount> extra_{};
  std::array<std::unique_ptr<MpmcQueue<T>>, kPriorityCount> owned_;
  std::mutex open_mutex_;  // serialises allocate()
};

}  // namespace fnbus
