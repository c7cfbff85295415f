#pragma once

// A bus's lifecycle: running, then draining or cancelling, then stopped;
// and what becomes of each event a worker takes on the way.

#include <atomic>
#include <chrono>

#include "fnbus/clock.hpp"
#include "fnbus/detail/thread_activity.hpp"

namespace fnbus::detail {

// What becomes of the next event a worker or sweep takes.
enum class Fate { kDispatch, kCancelledAtShutdown, kDrainTimeout };

// The state shutdown() moves through, read by publishers (may I publish?)
// and by workers (what do I do with this event?). Only one thread stops a
// bus (the caller of shutdown(), serialised by the bus).
// Thread safety: every method from any thread, except begin_stop() and
// finish_stop(), which only the stopping thread calls.
class Lifecycle {
 public:
  enum State : int { kRunning, kDraining, kCancelling, kStopped };

  explicit Lifecycle(Clock& clock) noexcept : clock_(clock) {}

  // The state, for a publisher that announced itself first (a
  // PublishScope): Observe, pairs with the store + heavy barrier of the
  // stopping thread (see thread_activity.hpp).
  [[nodiscard]] State observed() const noexcept {
    return static_cast<State>(state_.load(kObserveOrder));
  }
  // The state, as a hint (courtesy checks, the stopping thread itself).
  [[nodiscard]] State hint() const noexcept {
    // relaxed: callers either own the transitions or only give a clearer
    // message earlier than the authoritative check would.
    return static_cast<State>(state_.load(std::memory_order_relaxed));
  }

  // What a worker or sweep does with the event it has just taken. Inline:
  // a worker asks once per event, and a running bus answers with one load.
  [[nodiscard]] Fate fate() noexcept {
    // relaxed: a late view only dispatches an event that a cancel or an
    // expired drain would have dead-lettered (or the reverse); either way
    // it is accounted for, and the stopping thread's barriers make the
    // view current.
    const int state = state_.load(std::memory_order_relaxed);
    if (state == kRunning) [[likely]]
      return Fate::kDispatch;
    return fate_when_stopping(state);
  }
  // Whether a drain has passed its deadline (sticky once true).
  [[nodiscard]] bool drain_expired() noexcept;

  // Leaves kRunning: kCancelling, or kDraining until `drain_timeout` on
  // the clock has passed. The caller then runs a heavy barrier (waiting
  // for publishers) before it relies on every thread seeing it.
  void begin_stop(bool cancel, Duration drain_timeout) noexcept;
  // kStopped: even the bus's own handlers are refused from here on.
  void finish_stop() noexcept;
  // kStopped on a bus no other thread has seen (Create() failing).
  void stop_unshared() noexcept {
    // relaxed: nobody else can read it yet.
    state_.store(kStopped, std::memory_order_relaxed);
  }

 private:
  [[nodiscard]] Fate fate_when_stopping(int state) noexcept;

  Clock& clock_;
  // Written by the stopping thread (announce + the caller's heavy
  // barrier), read by publishers after their announcement and by workers.
  std::atomic<int> state_{kRunning};
  // Written before state_ leaves kRunning; read by fate() after it has.
  std::atomic<bool> cancel_at_stop_{false};
  // The drain's deadline on the bus clock, in its nanoseconds.
  std::atomic<TimePoint::rep> drain_deadline_{
      TimePoint::max().time_since_epoch().count()};
  // Set (once) by the first thread that finds the drain deadline passed.
  std::atomic<bool> drain_expired_{false};
};

}  // namespace fnbus::detail
