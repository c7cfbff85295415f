#pragma once

// A clock that moves only when the test says so.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <set>
#include <stop_token>

#include "fnbus/clock.hpp"

namespace fnbus::testing {

// Give it to BusConfig::clock and time-based behaviour (queue-wait and run
// time histograms, blocking publishes, the drain deadline of a shutdown
// and an Autoscaler's ticks) runs instantly and deterministically:
//
//   auto clock = std::make_shared<fnbus::testing::ManualClock>();
//   auto bus = fnbus::EventBus::Create({.clock = clock, ...});
//   clock->advance(50ms);  // every sleeper whose deadline passed wakes
//
// Starts at TimePoint{} + 1h (so that "an hour ago" is representable).
// Thread safety: every method, from any thread.
class ManualClock final : public Clock {
 public:
  ManualClock() = default;
  explicit ManualClock(TimePoint start) : now_(start) {}

  [[nodiscard]] TimePoint now() const noexcept override;

  // Blocks until a test advances the clock to `deadline` or `stop` is
  // requested. Never waits for real time.
  bool sleep_until(TimePoint deadline, std::stop_token stop) override;

  // Moves time forward by `step` (negative steps are ignored, since the
  // clock is monotonic; time stops at TimePoint::max()) and wakes the
  // sleepers it passed.
  void advance(Duration step);
  // Moves time forward to `when` if it is later than now().
  void advance_to(TimePoint when);

  // Threads in sleep_until() whose deadline is still ahead. A thread stops
  // counting the moment advance() passes its deadline (not when it gets
  // round to waking), so after advance() a test can wait for the count to
  // come back, i.e. for a periodic task (an autoscaler's tick) to have done
  // its work and gone back to sleep.
  [[nodiscard]] std::size_t sleepers() const;
  // Blocks until at least `count` threads are asleep as counted by
  // sleepers() (so a test can advance the clock knowing the controller is
  // asleep), or until `timeout` of real time passes, a guard against a
  // hung test. Returns whether the count was reached.
  bool wait_for_sleepers(std::size_t count, std::chrono::milliseconds timeout =
                                                std::chrono::seconds(10)) const;

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable_any changed_;
  // Written under mutex_ (so sleepers cannot miss a change); read without
  // it by now(), which the bus calls on hot paths.
  std::atomic<TimePoint> now_{TimePoint{} + std::chrono::hours(1)};
  // Deadlines of the threads in sleep_until(), guarded by mutex_.
  std::multiset<TimePoint> deadlines_;
  [[nodiscard]] std::size_t sleepers_locked() const;
};

}  // namespace fnbus::testing
