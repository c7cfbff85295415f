#include "fnbus/timers/bus_timers.hpp"

#include <utility>

namespace fnbus::timers {

bool detail::TimerState::cancel(TimerId id) {
  if (scheduler == nullptr || !scheduler->cancel(id)) return false;
  // relaxed: a statistic.
  cancelled.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool TimerHandle::cancel() {
  const std::shared_ptr<detail::TimerState> state = state_.lock();
  return state != nullptr && state->cancel(id_);
}

PeriodicTimer& PeriodicTimer::operator=(PeriodicTimer&& other) noexcept {
  if (this != &other) {
    cancel();
    handle_ = std::move(other.handle_);
  }
  return *this;
}

bool PeriodicTimer::cancel() {
  const bool was_running = handle_.cancel();
  handle_ = TimerHandle();  // a second cancel() is a no-op
  return was_running;
}

BusTimers::BusTimers(std::shared_ptr<Clock> clock, Duration tick, bool threaded)
    : clock_(std::move(clock)),
      tick_(tick),
      threaded_(threaded),
      state_(std::make_shared<detail::TimerState>()) {}

BusTimers::~BusTimers() { shutdown(false); }

absl::Status BusTimers::closed_error() const {
  return absl::FailedPreconditionError(
      "a timer scheduled after the bus's shutdown() began; schedule timers "
      "while the bus runs");
}

Scheduler* BusTimers::scheduler_for_scheduling() {
  std::lock_guard lock(mutex_);
  if (closed_) return nullptr;
  if (state_->scheduler == nullptr) {
    // The tick was validated with the BusConfig and the clock is set, so
    // Create() cannot fail.
    state_->scheduler =
        *Scheduler::Create(SchedulerOptions{.tick = tick_}, clock_);
    if (threaded_) state_->scheduler->start();
  }
  return state_->scheduler.get();
}

absl::StatusOr<TimerHandle> BusTimers::schedule_at(TimePoint due,
                                                   TimerTask task) {
  Scheduler* scheduler = scheduler_for_scheduling();
  if (scheduler == nullptr) return closed_error();
  absl::StatusOr<TimerId> id = scheduler->schedule_at(due, std::move(task));
  if (!id.ok()) return id.status();
  // relaxed: a statistic.
  state_->scheduled.fetch_add(1, std::memory_order_relaxed);
  return TimerHandle(state_, *id);
}

absl::StatusOr<PeriodicTimer> BusTimers::schedule_every(TimePoint first,
                                                        Duration period,
                                                        PeriodicTask task) {
  Scheduler* scheduler = scheduler_for_scheduling();
  if (scheduler == nullptr) return closed_error();
  absl::StatusOr<TimerId> id =
      scheduler->schedule_every(first, period, std::move(task));
  if (!id.ok()) return id.status();
  // relaxed: a statistic.
  state_->scheduled.fetch_add(1, std::memory_order_relaxed);
  return PeriodicTimer(TimerHandle(state_, *id));
}

// relaxed (the three below): statistics.
void BusTimers::count_fired() noexcept {
  state_->fired.fetch_add(1, std::memory_order_relaxed);
}
void BusTimers::count_dead_lettered() noexcept {
  state_->dead_lettered.fetch_add(1, std::memory_order_relaxed);
}
void BusTimers::count_stopped() noexcept {
  state_->stopped.fetch_add(1, std::memory_order_relaxed);
}

std::size_t BusTimers::run_due() {
  Scheduler* scheduler = nullptr;
  {
    std::lock_guard lock(mutex_);
    scheduler = state_->scheduler.get();
  }
  return scheduler != nullptr ? scheduler->run_due() : 0;
}

void BusTimers::shutdown(bool run_due_first) {
  Scheduler* scheduler = nullptr;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;  // no scheduler is made from here on
    scheduler = state_->scheduler.get();
  }
  if (scheduler == nullptr) return;
  if (run_due_first) scheduler->run_due();
  scheduler->shutdown();  // idempotent
}

metrics::TimerMetrics BusTimers::metrics() const {
  metrics::TimerMetrics m;
  {
    std::lock_guard lock(mutex_);
    if (state_->scheduler != nullptr) m.pending = state_->scheduler->pending();
  }
  const detail::TimerState& s = *state_;
  // relaxed: statistics.
  m.scheduled = s.scheduled.load(std::memory_order_relaxed);
  m.fired = s.fired.load(std::memory_order_relaxed);
  m.cancelled = s.cancelled.load(std::memory_order_relaxed);
  m.dead_lettered = s.dead_lettered.load(std::memory_order_relaxed);
  m.stopped = s.stopped.load(std::memory_order_relaxed);
  return m;
}

}  // namespace fnbus::timers
