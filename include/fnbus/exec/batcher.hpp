#pragma once

// Batcher: the collector behind batch functions (EventBus::subscribe_batch,
// docs/batches.md). A bounded buffer that cuts a batch when it holds
// BatchOptions::max_items items (a size cut) or when its oldest item has
// waited BatchOptions::max_wait (an age cut) -- Lambda's batch size and
// batching window. Time is passed in, so a ManualClock drives it in tests.
//
//   auto batcher = *fnbus::Batcher<Order>::Create({.max_items = 10,
//                                                  .max_wait = 50ms});
//   auto added = batcher->add(order, clock.now());
//   if (!added.full.empty()) handle(added.full);    // size cut
//   if (added.opened) set_timer(added.due);          // then take_due(now)
//
// Guarantees:
// - It never holds more than max_items items: the add() that makes a batch
//   full takes it out and returns it.
// - Every item added is returned exactly once, by add() (full), take_due()
//   or take_all(), in the order it was added within its batch.
// - add() reports `opened` for the item that starts a batch, with the
//   instant that batch becomes due: the caller arms one timer per batch.
//   A timer of a batch that was cut by size meanwhile finds the next batch
//   not yet due (take_due() returns nothing), so it never cuts that one
//   early.
//
// Not guaranteed: anything about time itself -- nothing is cut while no
// one calls take_due() (the Batcher has no thread).
//
// Thread safety: every method from any thread; each takes the Batcher's
// mutex for a few moves (T's move constructor runs under it).

#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/detail/saturating_time.hpp"

namespace fnbus {

// The largest BatchOptions::max_items (SQS's largest Lambda batch).
inline constexpr std::size_t kMaxBatchItems = 10'000;
// The longest BatchOptions::max_wait.
inline constexpr Duration kMaxBatchWait = std::chrono::hours(1);

// When a batch is cut.
struct BatchOptions {
  // Items per batch, 1 .. kMaxBatchItems: a batch holding this many is cut
  // at once.
  std::size_t max_items = 10;
  // The longest an item waits for its batch to fill, > 0 and at most
  // kMaxBatchWait: a batch is cut this long after its first item came,
  // full or not.
  Duration max_wait = std::chrono::milliseconds(100);
};

// OK, or InvalidArgument naming every bad field, its legal range and the
// value to use.
[[nodiscard]] absl::Status check(const BatchOptions& options);

template <typename T>
class Batcher {
 public:
  // What add() did.
  struct Added {
    // The batch the item filled (max_items items), or empty.
    std::vector<T> full;
    // The item started a batch that is still open: cut it at `due`.
    bool opened = false;
    TimePoint due{};
  };

  // InvalidArgument for bad options (see check()).
  static absl::StatusOr<std::unique_ptr<Batcher>> Create(BatchOptions options) {
    if (absl::Status problems = check(options); !problems.ok()) {
      return problems;
    }
    return std::unique_ptr<Batcher>(new Batcher(options));
  }

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Appends `item`, which came at `now`.
  // Throws what T's move constructor or the allocation throws (then the
  // item is not kept and the open batch is as it was).
  // Thread safety: any thread.
  Added add(T item, TimePoint now);
  // The open batch if it is due at `now` (its first item came at least
  // max_wait before), else nothing. Thread safety: any thread.
  std::vector<T> take_due(TimePoint now);
  // The open batch, due or not (a flush). Thread safety: any thread.
  std::vector<T> take_all();

  // Items in the open batch now. Thread safety: any thread.
  [[nodiscard]] std::size_t size() const {
    std::lock_guard lock(mutex_);
    return open_.size();
  }
  [[nodiscard]] const BatchOptions& options() const noexcept {
    return options_;
  }

 private:
  explicit Batcher(BatchOptions options) : options_(options) {}
  // Under mutex_: the open batch, leaving none open.
  std::vector<T> take_locked() noexcept { return std::exchange(open_, {}); }

  const BatchOptions options_;
  mutable std::mutex mutex_;
  std::vector<T> open_;  // guarded by mutex_; never max_items long
  TimePoint due_{};      // guarded by mutex_; the open batch's due time
};

template <typename T>
typename Batcher<T>::Added Batcher<T>::add(T item, TimePoint now) {
  Added added;
  std::lock_guard lock(mutex_);
  const bool opens = open_.empty();
  if (opens) open_.reserve(options_.max_items);  // one allocation a batch
  open_.push_back(std::move(item));
  if (open_.size() >= options_.max_items) {
    added.full = take_locked();
    return added;
  }
  if (opens) {
    due_ = detail::saturating_add(now, options_.max_wait);
    added.opened = true;
    added.due = due_;
  }
  return added;
}

template <typename T>
std::vector<T> Batcher<T>::take_due(TimePoint now) {
  std::lock_guard lock(mutex_);
  if (open_.empty() || now < due_) return {};
  return take_locked();
}

template <typename T>
std::vector<T> Batcher<T>::take_all() {
  std::lock_guard lock(mutex_);
  return take_locked();
}

}  // namespace fnbus
