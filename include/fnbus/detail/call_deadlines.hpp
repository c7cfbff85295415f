#pragma once

// The deadlines of a bus's pending calls (EventBus::call()), coalesced:
// calls whose deadlines fall into one slice of time share one bus timer.
// A timer per call would wake the timer thread for most calls (its wheel's
// next wake-up moves earlier) -- two context switches per call on a busy
// machine -- while a call that is answered (almost all of them) only needs
// its entry removed.
//
// A deadline is rounded up to a multiple of its slice: 1/64 of its
// timeout, at least one timer tick. A call thus times out at most about
// 1.6 % (or one tick) late, never early. The slice's timer ends every call
// still pending in it with DeadlineExceeded; an answered call stays in its
// slice (ended) until it is destroyed, so that only the calling thread
// writes the slice on the fast path.
//
// Thread safety: any thread. Lifetime: shared by the bus and the calls it
// watches (a call may outlive its bus); the slices' timer tasks hold it
// weakly.

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"

#include "fnbus/clock.hpp"
#include "fnbus/detail/spin_lock.hpp"
#include "fnbus/timers/bus_timers.hpp"

namespace fnbus::detail {

class CallCore;

class CallDeadlines : public std::enable_shared_from_this<CallDeadlines> {
 public:
  // Slices are at least `tick` (the bus's timer tick) long.
  static std::shared_ptr<CallDeadlines> Create(Duration tick);

  // Ends `call` at `now + timeout` (rounded up, see above) unless it has
  // ended before. Schedules the slice's timer on `timers` when the call is
  // the slice's first; when that is refused (the bus is shutting down) the
  // call ends by its request instead.
  void watch(CallCore& call, TimePoint now, Duration timeout,
             timers::BusTimers& timers);
  // Removes `call` (being destroyed) from its slice.
  void unwatch(CallCore& call) noexcept;
  // Ends every call still pending with `status` (the bus has shut down:
  // calls whose requests were handled or dropped by the shutdown have
  // ended already).
  void end_all(const absl::Status& status);

  // The calls pending now (for tests).
  [[nodiscard]] std::size_t pending() const;
  // The slices with a timer now (for tests).
  [[nodiscard]] std::size_t slices() const;

  // The due time of a deadline `now + timeout`, rounded up to its slice.
  [[nodiscard]] TimePoint slice_due(TimePoint now, Duration timeout) const;

 private:
  explicit CallDeadlines(Duration tick) : tick_(tick) {}

  // The slice's timer: ends its pending calls with DeadlineExceeded.
  void expire(TimePoint due);
  // Takes the calls of `slice` out (lock_ held), keeping those alive.
  static void take_locked(absl::flat_hash_set<CallCore*>& slice,
                          std::vector<std::shared_ptr<CallCore>>& taken);

  const Duration tick_;
  // A spin lock: the calling thread and the thread destroying an ended
  // call (often a worker) take it back to back.
  mutable SpinLock lock_;
  // Pending calls by slice due time. Guarded by lock_ (as is each call's
  // slice_ field).
  std::map<TimePoint, absl::flat_hash_set<CallCore*>> slices_;
};

}  // namespace fnbus::detail
