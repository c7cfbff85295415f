#include "fnbus/timers/scheduler.hpp"

#include <condition_variable>
#include <exception>
#include <limits>
#include <utility>

#include "fmt/format.h"

#include "fnbus/detail/config.hpp"
#include "fnbus/detail/exception_message.hpp"
#include "fnbus/detail/saturating_time.hpp"

namespace fnbus::timers {
namespace {

constexpr Duration kMaxTick = std::chrono::hours(1);

TimerId make_id(std::uint32_t generation, std::uint32_t index) {
  return TimerId{(std::uint64_t{generation} << 32) | index};
}
std::uint32_t index_of(TimerId id) {
  return static_cast<std::uint32_t>(id.value & 0xffff'ffff);
}
std::uint32_t generation_of(TimerId id) {
  return static_cast<std::uint32_t>(id.value >> 32);
}

// The first due + k * period (k >= 1) later than `now`: the next run of a
// periodic timer, missed periods skipped. Saturates at TimePoint::max().
TimePoint next_period(TimePoint due, Duration period, TimePoint now) {
  const auto step = static_cast<std::uint64_t>(period.count());
  std::uint64_t periods = 1;
  if (now >= due) {
    periods = detail::nanos_between(due, now) / step + 1;
  }
  std::uint64_t offset = 0;
  if (__builtin_mul_overflow(periods, step, &offset) ||
      offset > static_cast<std::uint64_t>(
                   std::numeric_limits<Duration::rep>::max())) {
    return TimePoint::max();
  }
  return detail::saturating_add(due,
                                Duration(static_cast<Duration::rep>(offset)));
}

// Blocks until `stop` is requested.
void wait_for_stop(std::stop_token stop) {
  std::mutex mutex;
  std::condition_variable_any stopped;
  std::unique_lock lock(mutex);
  // The predicate is never true: only the stop request ends the wait.
  (void)stopped.wait(lock, stop, [] { return false; });
}

absl::Status refused_after_shutdown(TimePoint due) {
  return absl::FailedPreconditionError(fmt::format(
      "scheduled after shutdown: the Scheduler is shutting down or shut "
      "down and takes no new timers (this one was due at {} ns on the "
      "clock); schedule before shutdown(), or handle the task's kShutdown "
      "call instead of scheduling again",
      due.time_since_epoch().count()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(
    SchedulerOptions options, std::shared_ptr<Clock> clock) {
  if (clock == nullptr) {
    return absl::InvalidArgumentError(
        "Scheduler::Create: the clock is null; pass the bus's clock, e.g. "
        "a std::shared_ptr to a testing::ManualClock, or one that wraps "
        "SteadyClock::instance()");
  }
  if (options.tick <= Duration::zero() || options.tick > kMaxTick) {
    return absl::InvalidArgumentError(fmt::format(
        "SchedulerOptions::tick is {} ns; use more than 0 and at most 1 "
        "hour (due times round up to it; 1ms is the default)",
        options.tick.count()));
  }
  auto wheel = TimerWheel::Create({.tick = options.tick}, clock->now());
  if (!wheel.ok()) return wheel.status();
  // Past tick 0 at once: a due time at or before now then waits for the
  // next tick (as documented), and next_wake() is exact from the start
  // instead of the lower bound "tick 0 is unprocessed".
  (void)wheel->advance(clock->now(), [](std::uint64_t) {});
  return std::unique_ptr<Scheduler>(
      new Scheduler(std::move(options), std::move(clock), *std::move(wheel)));
}

Scheduler::~Scheduler() { shutdown(); }

absl::StatusOr<TimerId> Scheduler::schedule_at(TimePoint due, TimerTask task) {
  if (!task) {
    return absl::InvalidArgumentError(
        "Scheduler::schedule_at: the task is empty; pass a callable taking "
        "a TimerFate");
  }
  return add(due, Duration::zero(), std::move(task), nullptr);
}

absl::StatusOr<TimerId> Scheduler::schedule_after(Duration delay,
                                                  TimerTask task) {
  if (delay < Duration::zero()) {
    return absl::InvalidArgumentError(fmt::format(
        "Scheduler::schedule_after: the delay is {} ns; use 0 (the next "
        "tick) or more, or schedule_at() for a time in the past",
        delay.count()));
  }
  return schedule_at(detail::saturating_add(clock_->now(), delay),
                     std::move(task));
}

absl::StatusOr<TimerId> Scheduler::schedule_every(TimePoint first,
                                                  Duration period,
                                                  PeriodicTask task) {
  if (period <= Duration::zero()) {
    return absl::InvalidArgumentError(fmt::format(
        "Scheduler::schedule_every: the period is {} ns; use more than 0 "
        "(periods shorter than the tick run once per tick)",
        period.count()));
  }
  if (!task) {
    return absl::InvalidArgumentError(
        "Scheduler::schedule_every: the task is empty; pass a callable "
        "taking a TimerFate");
  }
  return add(first, period, nullptr, std::move(task));
}

absl::StatusOr<TimerId> Scheduler::add(TimePoint due, Duration period,
                                       TimerTask once, PeriodicTask every) {
  std::lock_guard lock(mutex_);
  if (shutting_down_) return refused_after_shutdown(due);
  std::uint32_t index = 0;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    FNBUS_ASSERT(slots_.size() < std::numeric_limits<std::uint32_t>::max(),
                 "more than 2^32 - 1 timers pending");
    index = static_cast<std::uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  Slot& slot = slots_[index];
  slot.due = due;
  slot.period = period;
  slot.once = std::move(once);
  slot.every = std::move(every);
  slot.last_call = false;
  ++pending_;
  arm_locked(index);
  return make_id(slot.generation, index);
}

void Scheduler::arm_locked(std::uint32_t index) {
  Slot& slot = slots_[index];
  slot.state = SlotState::kPending;
  slot.wheel_timer =
      wheel_.schedule(slot.due, make_id(slot.generation, index).value);
  // Only an earlier wake-up needs the thread: it recomputes its deadline
  // after every sleep anyway.
  if (sleeping_until_ && wheel_.next_wake() < *sleeping_until_) {
    wake_.request_stop();
    sleeping_until_.reset();
  }
}

Scheduler::Slot* Scheduler::find_locked(TimerId id) {
  const std::uint32_t index = index_of(id);
  if (index >= slots_.size()) return nullptr;
  Slot& slot = slots_[index];
  if (slot.generation != generation_of(id) || slot.state == SlotState::kFree) {
    return nullptr;
  }
  return &slot;
}

Scheduler::Claim Scheduler::free_locked(std::uint32_t index) {
  Slot& slot = slots_[index];
  Claim tasks{.once = std::move(slot.once),
              .every = std::move(slot.every),
              .due = slot.due,
              .period = slot.period};
  slot.once = nullptr;
  slot.every = nullptr;
  slot.state = SlotState::kFree;
  // 0 is never a generation: TimerId{0} names no timer.
  if (++slot.generation == 0) slot.generation = 1;
  free_.push_back(index);
  return tasks;
}

bool Scheduler::cancel(TimerId id) {
  Claim ended;  // destroyed after the lock is released (declared first)
  std::unique_lock lock(mutex_);
  Slot* slot = find_locked(id);
  if (slot == nullptr) return false;
  switch (slot->state) {
    case SlotState::kPending:
      (void)wheel_.cancel(slot->wheel_timer);
      [[fallthrough]];
    case SlotState::kDue:
      // Not started: it ends here.
      ended = free_locked(index_of(id));
      --pending_;
      return true;
    case SlotState::kRunning:
      break;
    case SlotState::kFree:
      return false;  // unreachable: find_locked() skips free slots
  }
  // Running: only a periodic timer has calls left to cancel.
  const bool was_pending = !slot->last_call;
  if (was_pending) {
    slot->last_call = true;
    --pending_;
  }
  if (running_thread_ != std::this_thread::get_id()) {
    ++cancel_waiters_;
    finished_.wait(lock, [&] { return running_ != id; });
    --cancel_waiters_;
  }
  return was_pending;
}

void Scheduler::start() {
  std::lock_guard lock(mutex_);
  if (started_ || shutting_down_) return;
  started_ = true;
  thread_ = std::thread([this] { run(); });
}

void Scheduler::run() {
  while (auto sleep_for = prepare_sleep()) {
    sleep(sleep_for->first, std::move(sleep_for->second));
    (void)fire_due();
  }
}

std::optional<std::pair<TimePoint, std::stop_token>>
Scheduler::prepare_sleep() {
  std::lock_guard lock(mutex_);
  if (shutting_down_) return std::nullopt;
  // A fresh source per sleep: a stop request ends this sleep only.
  wake_ = std::stop_source();
  // Nothing pending: sleep until woken (the end of time never comes).
  sleeping_until_ = wheel_.next_wake().value_or(TimePoint::max());
  return std::pair(*sleeping_until_, wake_.get_token());
}

void Scheduler::sleep(TimePoint deadline, std::stop_token wake) {
  // At the end of the clock's range a deadline of TimePoint::max() is
  // "reached" at once; sleeping on the clock would spin. Time has
  // stopped: only a wake-up (an earlier timer, shutdown) is left.
  if (deadline == TimePoint::max() && clock_->now() == TimePoint::max()) {
    wait_for_stop(std::move(wake));
    return;
  }
  (void)clock_->sleep_until(deadline, std::move(wake));
}

std::size_t Scheduler::run_due() {
  FNBUS_ASSERT(!on_task_thread(),
               "Scheduler::run_due() called from inside a timer task");
  return fire_due();
}

std::size_t Scheduler::fire_due() {
  std::lock_guard firing(fire_mutex_);
  firing_.clear();
  {
    std::lock_guard lock(mutex_);
    if (shutting_down_) return 0;
    (void)wheel_.advance(clock_->now(), [&](std::uint64_t payload) {
      // The wheel's payload is the slot's TimerId: always current here,
      // since cancel() takes a pending timer off the wheel.
      slots_[index_of(TimerId{payload})].state = SlotState::kDue;
      firing_.push_back(payload);
    });
  }
  std::size_t ran = 0;
  for (const std::uint64_t id : firing_) {
    if (run_one(TimerId{id}, TimerFate::kDue)) ++ran;
  }
  return ran;
}

void Scheduler::fire_shutdown() {
  std::lock_guard firing(fire_mutex_);
  firing_.clear();
  {
    std::lock_guard lock(mutex_);
    for (std::uint32_t index = 0; index < slots_.size(); ++index) {
      const Slot& slot = slots_[index];
      if (slot.state == SlotState::kPending || slot.state == SlotState::kDue) {
        firing_.push_back(make_id(slot.generation, index).value);
      }
    }
  }
  for (const std::uint64_t id : firing_) {
    (void)run_one(TimerId{id}, TimerFate::kShutdown);
  }
}

bool Scheduler::run_one(TimerId id, TimerFate fate) {
  Claim claimed;
  if (!claim(id, fate, claimed)) return false;
  invoke(claimed, id, fate);
  give_back(id, fate, claimed);
  // A task not given back ends here, outside the lock and before
  // cancel() waiters learn that its call returned.
  claimed = Claim{};
  finish_running();
  return true;
}

bool Scheduler::claim(TimerId id, TimerFate fate, Claim& claimed) {
  std::lock_guard lock(mutex_);
  Slot* slot = find_locked(id);
  if (slot == nullptr) return false;  // cancelled by an earlier task
  if (fate == TimerFate::kDue) {
    // Once shutdown() has begun, the rest get kShutdown instead.
    if (slot->state != SlotState::kDue || shutting_down_) return false;
  } else if (slot->state == SlotState::kPending) {
    (void)wheel_.cancel(slot->wheel_timer);
  } else if (slot->state != SlotState::kDue) {
    return false;
  }
  slot->state = SlotState::kRunning;
  slot->last_call = slot->period == Duration::zero() ||  // one-shot
                    fate == TimerFate::kShutdown;
  if (slot->last_call) --pending_;
  claimed.once = std::move(slot->once);
  claimed.every = std::move(slot->every);
  claimed.due = slot->due;
  claimed.period = slot->period;
  running_ = id;
  running_thread_ = std::this_thread::get_id();
  return true;
}

void Scheduler::invoke(Claim& claimed, TimerId id, TimerFate fate) noexcept {
  try {
    if (claimed.once) {
      std::move(claimed.once)(fate);
    } else {
      claimed.every(fate);
    }
  } catch (...) {
    if (!options_.error_sink) return;
    const absl::Status error = absl::InternalError(fmt::format(
        "timer task {:#x} threw ({}) when called with {}; tasks should "
        "catch their own errors",
        id.value, detail::current_exception_message(),
        fate == TimerFate::kDue ? "kDue" : "kShutdown"));
    try {
      options_.error_sink(error);
    } catch (...) {
      // A broken sink must not stop the timer thread.
    }
  }
}

void Scheduler::give_back(TimerId id, TimerFate fate, Claim& claimed) {
  std::lock_guard lock(mutex_);
  const std::uint32_t index = index_of(id);
  Slot& slot = slots_[index];  // still ours: kRunning slots are not freed
  if (slot.last_call) {
    (void)free_locked(index);  // empty: its task is in `claimed`
    return;
  }
  FNBUS_ASSERT(fate == TimerFate::kDue, "only kDue calls are followed");
  slot.every = std::move(claimed.every);
  slot.due = next_period(claimed.due, claimed.period, clock_->now());
  arm_locked(index);
}

void Scheduler::finish_running() {
  std::lock_guard lock(mutex_);
  running_ = TimerId{};
  running_thread_ = std::thread::id();
  if (cancel_waiters_ > 0) finished_.notify_all();
}

bool Scheduler::on_task_thread() const {
  std::lock_guard lock(mutex_);
  return running_thread_ == std::this_thread::get_id();
}

void Scheduler::shutdown() {
  FNBUS_ASSERT(!on_task_thread(),
               "Scheduler::shutdown() called from inside a timer task");
  std::lock_guard serial(shutdown_mutex_);
  {
    std::lock_guard lock(mutex_);
    if (shut_down_) return;
    shutting_down_ = true;
    wake_.request_stop();
  }
  // thread_ is no longer written: start() saw shutting_down_ or was done.
  if (thread_.joinable()) thread_.join();
  fire_shutdown();
  std::lock_guard lock(mutex_);
  shut_down_ = true;
}

std::size_t Scheduler::pending() const {
  std::lock_guard lock(mutex_);
  return pending_;
}

std::optional<TimePoint> Scheduler::next_wake() const {
  std::lock_guard lock(mutex_);
  return wheel_.next_wake();
}

}  // namespace fnbus::timers
