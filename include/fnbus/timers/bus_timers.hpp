#pragma once

// The bus's timers: the untyped half of EventBus::publish_after(),
// publish_at() and publish_every(). BusTimers owns a Scheduler (made on
// first use, its thread started only for a thread-pool bus) and the timer
// counters; the bus's templates put the typed event into the task. The
// handles below outlive the bus safely: they hold the shared state weakly.
//
//   auto timer = bus->publish_after(30min, CancelIfUnpaid{order_id});
//   ...
//   if (paid) timer->cancel();                     // one-shot: cancel() or
//   forget auto heartbeat = bus->publish_every(1s, Tick{});  // stops when
//   destroyed

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/metrics/snapshot.hpp"
#include "fnbus/timers/scheduler.hpp"

namespace fnbus::timers {

namespace detail {
// What the bus and the handles share: the scheduler and the counters.
struct TimerState {
  std::unique_ptr<Scheduler> scheduler;
  // Counters (metrics::TimerMetrics). relaxed everywhere: statistics,
  // each an exact count on its own; nothing is published through them.
  std::atomic<std::uint64_t> scheduled{0};
  std::atomic<std::uint64_t> fired{0};
  std::atomic<std::uint64_t> cancelled{0};
  std::atomic<std::uint64_t> dead_lettered{0};
  std::atomic<std::uint64_t> stopped{0};

  // Cancels `id`; counts it if it was pending.
  bool cancel(TimerId id);
};
}  // namespace detail

// A one-shot timer of EventBus::publish_after() / publish_at(). Dropping
// the handle does not cancel the timer (fire and forget); cancel() does.
// Movable; safe to use after the bus is gone (cancel() returns false).
class TimerHandle {
 public:
  TimerHandle() = default;

  // Cancels the publish: true if the timer was pending, so its event will
  // not be published (and is destroyed); false if it fired, was cancelled
  // or shut down already. When the event is being published right now on
  // the timer thread, waits until that publish returns (at most the
  // block timeout) and returns false.
  // Thread safety: any thread, also inside handlers.
  bool cancel();
  [[nodiscard]] TimerId id() const noexcept { return id_; }

 private:
  friend class BusTimers;
  TimerHandle(std::weak_ptr<detail::TimerState> state, TimerId id)
      : state_(std::move(state)), id_(id) {}

  std::weak_ptr<detail::TimerState> state_;
  TimerId id_;
};

// A periodic publish of EventBus::publish_every(): stops when cancelled
// or destroyed (RAII, like Subscription). Move-only; safe to destroy after
// the bus is gone.
class PeriodicTimer {
 public:
  PeriodicTimer() = default;
  PeriodicTimer(PeriodicTimer&& other) noexcept = default;
  PeriodicTimer& operator=(PeriodicTimer&& other) noexcept;
  PeriodicTimer(const PeriodicTimer&) = delete;
  PeriodicTimer& operator=(const PeriodicTimer&) = delete;
  ~PeriodicTimer() { cancel(); }

  // Stops the schedule: true if it was running. A publish under way
  // finishes first (see TimerHandle::cancel()).
  // Thread safety: any thread, also inside handlers (also its own).
  bool cancel();
  [[nodiscard]] TimerId id() const noexcept { return handle_.id(); }

 private:
  friend class BusTimers;
  explicit PeriodicTimer(TimerHandle handle) : handle_(std::move(handle)) {}

  TimerHandle handle_;
};

// Owned by the bus (one per bus).
class BusTimers {
 public:
  // `threaded`: start the scheduler's thread on first use (a bus with
  // Execution::kThreadPool); otherwise run_due() drives the timers.
  BusTimers(std::shared_ptr<Clock> clock, Duration tick, bool threaded);
  ~BusTimers();

  BusTimers(const BusTimers&) = delete;
  BusTimers& operator=(const BusTimers&) = delete;

  absl::StatusOr<TimerHandle> schedule_at(TimePoint due, TimerTask task);
  absl::StatusOr<PeriodicTimer> schedule_every(TimePoint first, Duration period,
                                               PeriodicTask task);

  // Called by the tasks: how the timer ended up.
  void count_fired() noexcept;
  void count_dead_lettered() noexcept;
  void count_stopped() noexcept;

  // Runs the due timers in the calling thread; how many ran.
  std::size_t run_due();
  // Refuses new timers; runs the due ones first if `run_due_first`; then
  // ends every pending one (its task runs with TimerFate::kShutdown).
  // Idempotent.
  void shutdown(bool run_due_first);

  [[nodiscard]] metrics::TimerMetrics metrics() const;

 private:
  // The scheduler, made (and its thread started) on first use; null
  // before. Scheduling after shutdown() makes none.
  Scheduler* scheduler_for_scheduling();
  absl::Status closed_error() const;

  const std::shared_ptr<Clock> clock_;
  const Duration tick_;
  const bool threaded_;
  std::shared_ptr<detail::TimerState> state_;
  // Guards state_->scheduler's creation and closed_.
  mutable std::mutex mutex_;
  bool closed_ = false;  // shutdown() has begun
};

}  // namespace fnbus::timers
