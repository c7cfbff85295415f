// Tests of fnbus::timers::Scheduler. A ManualClock drives time: manual
// cases call run_due() themselves; threaded cases advance the clock and
// wait for what the timer thread does (wait_for_sleepers, wait_until on an
// atomic), never for real time to pass. The stress case runs on the steady
// clock, so tasks fire while other threads schedule and cancel.

#include "fnbus/timers/scheduler.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../support/test_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/random.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::Duration;
using fnbus::TimePoint;
using fnbus::testing::ManualClock;
using fnbus::testing_support::contains;
using fnbus::testing_support::wait_until;
using fnbus::timers::PeriodicTask;
using fnbus::timers::Scheduler;
using fnbus::timers::SchedulerOptions;
using fnbus::timers::TimerFate;
using fnbus::timers::TimerId;
using fnbus::timers::TimerTask;

std::unique_ptr<Scheduler> make(std::shared_ptr<fnbus::Clock> clock,
                                SchedulerOptions options = {}) {
  auto scheduler = Scheduler::Create(std::move(options), std::move(clock));
  REQUIRE(scheduler.ok());
  return *std::move(scheduler);
}

// Whether a status's message contains `text` (Debian's absl::string_view is
// not std::string_view).
bool message_has(const absl::Status& status, std::string_view text) {
  return contains(std::string(status.message()), text);
}

TimerId must(const absl::StatusOr<TimerId>& id) {
  REQUIRE(id.ok());
  return *id;
}

// What the tasks of a test saw: calls per fate, safe from any thread.
struct Calls {
  std::atomic<int> due{0};
  std::atomic<int> shutdown{0};
  // A task that records its fate. relaxed: tests read the counts after
  // run_due() returned or after waiting on them, and only the counts.
  TimerTask once() {
    return [this](TimerFate fate) { record(fate); };
  }
  PeriodicTask every() {
    return [this](TimerFate fate) { record(fate); };
  }
  void record(TimerFate fate) {
    (fate == TimerFate::kDue ? due : shutdown)
        .fetch_add(1, std::memory_order_relaxed);
  }
};

// Counts destructions of the tasks that capture it.
struct Tracked {
  std::shared_ptr<std::atomic<int>> destroyed;
  explicit Tracked(std::shared_ptr<std::atomic<int>> counter)
      : destroyed(std::move(counter)) {}
  Tracked(Tracked&& other) noexcept : destroyed(std::move(other.destroyed)) {}
  Tracked& operator=(Tracked&&) = delete;
  ~Tracked() {
    if (destroyed) destroyed->fetch_add(1, std::memory_order_relaxed);
  }
};

TEST_CASE("scheduler: a task runs at its due time, not before", "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = make(clock);
  Calls calls;
  const TimePoint t0 = clock->now();
  must(scheduler->schedule_at(t0 + 30ms, calls.once()));
  CHECK(scheduler->pending() == 1);
  CHECK(scheduler->next_wake() == t0 + 30ms);

  clock->advance(29ms);
  CHECK(scheduler->run_due() == 0);
  CHECK(calls.due == 0);
  clock->advance(1ms);
  CHECK(scheduler->run_due() == 1);
  CHECK(calls.due == 1);
  CHECK(scheduler->pending() == 0);
  CHECK_FALSE(scheduler->next_wake().has_value());
  clock->advance(1h);
  CHECK(scheduler->run_due() == 0);
  CHECK(calls.due == 1);
  CHECK(calls.shutdown == 0);
}

TEST_CASE(
    "scheduler: a due time in the past or a zero delay runs at the "
    "next tick",
    "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = make(clock, {.tick = 10ms});
  Calls calls;
  clock->advance(5ms);  // mid-tick
  must(scheduler->schedule_at(clock->now() - 1h, calls.once()));
  must(scheduler->schedule_after(0ms, calls.once()));
  CHECK(scheduler->run_due() == 0);
  clock->advance(4ms);
  CHECK(scheduler->run_due() == 0);
  clock->advance(1ms);  // the tick boundary
  CHECK(scheduler->run_due() == 2);
  CHECK(calls.due == 2);
}

TEST_CASE("scheduler: cancel before the due time destroys the task unrun",
          "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = make(clock);
  auto destroyed = std::make_shared<std::atomic<int>>(0);
  std::atomic<int> ran{0};
  const TimerId id = must(scheduler->schedule_after(
      10ms, [&ran, t = Tracked(destroyed)](TimerFate) { ++ran; }));
  CHECK(scheduler->cancel(id));
  CHECK(*destroyed == 1);
  CHECK(scheduler->pending() == 0);
  CHECK_FALSE(scheduler->cancel(id));  // once
  CHECK_FALSE(scheduler->cancel(TimerId{}));
  clock->advance(1h);
  CHECK(scheduler->run_due() == 0);
  CHECK(ran == 0);

  // A fired timer's id is stale, also once its slot is reused.
  Calls calls;
  const TimerId fired = must(scheduler->schedule_after(0ms, calls.once()));
  clock->advance(1ms);
  CHECK(scheduler->run_due() == 1);
  const TimerId reused = must(scheduler->schedule_after(1ms, calls.once()));
  CHECK_FALSE(scheduler->cancel(fired));
  CHECK(scheduler->pending() == 1);
  CHECK(scheduler->cancel(reused));
}

TEST_CASE("scheduler: a task may cancel another timer and itself",
          "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = make(clock);
  Calls later;
  const TimerId victim = must(scheduler->schedule_after(20ms, later.once()));
  std::optional<bool> cancelled_other;
  std::optional<bool> cancelled_self;
  TimerId self;
  self = must(scheduler->schedule_after(10ms, [&](TimerFate) {
    cancelled_other = scheduler->cancel(victim);
    cancelled_self = scheduler->cancel(self);  // running: no call left
  }));
  clock->advance(10ms);
  CHECK(scheduler->run_due() == 1);
  REQUIRE(cancelled_other.has_value());
  CHECK(*cancelled_other);
  REQUIRE(cancelled_self.has_value());
  CHECK_FALSE(*cancelled_self);
  clock->advance(1h);
  CHECK(scheduler->run_due() == 0);
  CHECK(later.due == 0);
  CHECK(scheduler->pending() == 0);
}

TEST_CASE("scheduler: a task may schedule timers, which run at a later tick",
          "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = make(clock);
  Calls calls;
  must(scheduler->schedule_after(1ms, [&](TimerFate) {
    CHECK(scheduler->schedule_after(0ms, calls.once()).ok());
  }));
  clock->advance(1ms);
  CHECK(scheduler->run_due() == 1);
  CHECK(calls.due == 0);  // not in the same pass
  clock->advance(1ms);
  CHECK(scheduler->run_due() == 1);
  CHECK(calls.due == 1);
}

TEST_CASE(
    "scheduler: a periodic timer runs k times after k periods and can "
    "cancel itself",
    "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = make(clock);
  const TimePoint t0 = clock->now();
  std::atomic<int> runs{0};
  std::atomic<int> shutdowns{0};
  std::atomic<std::uint64_t> self{0};  // the id, set before the first run
  std::atomic<bool> cancelled_self{false};
  const TimerId id =
      must(scheduler->schedule_every(t0 + 10ms, 10ms, [&](TimerFate fate) {
        if (fate == TimerFate::kShutdown) {
          shutdowns.fetch_add(1, std::memory_order_relaxed);
          return;
        }
        if (runs.fetch_add(1, std::memory_order_relaxed) + 1 == 5) {
          // relaxed: written before start(), which orders it.
          const TimerId me{self.load(std::memory_order_relaxed)};
          cancelled_self.store(scheduler->cancel(me),
                               std::memory_order_relaxed);
        }
      }));
  self.store(id.value, std::memory_order_relaxed);
  scheduler->start();
  for (int k = 1; k <= 5; ++k) {
    // Asleep again: the last run's re-arm is done.
    REQUIRE(clock->wait_for_sleepers(1));
    CHECK(scheduler->next_wake() == t0 + k * 10ms);
    clock->advance(10ms);
    REQUIRE(wait_until([&] { return runs.load() == k; }));
  }
  REQUIRE(wait_until([&] { return scheduler->pending() == 0; }));
  CHECK(cancelled_self.load());
  CHECK_FALSE(scheduler->cancel(id));
  REQUIRE(clock->wait_for_sleepers(1));
  clock->advance(1h);
  REQUIRE(clock->wait_for_sleepers(1));
  scheduler->shutdown();
  CHECK(runs == 5);
  CHECK(shutdowns == 0);  // cancelled: it ended there
}

TEST_CASE(
    "scheduler: a periodic timer that fell behind skips missed periods "
    "without drift",
    "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = make(clock);
  const TimePoint t0 = clock->now();
  Calls calls;
  const TimerId id =
      must(scheduler->schedule_every(t0 + 10ms, 10ms, calls.every()));
  clock->advance(35ms);  // periods at 10, 20 and 30 ms are due
  CHECK(scheduler->run_due() == 1);
  CHECK(calls.due == 1);
  CHECK(scheduler->next_wake() == t0 + 40ms);  // not 45 ms: no drift
  clock->advance(5ms);
  CHECK(scheduler->run_due() == 1);
  CHECK(scheduler->next_wake() == t0 + 50ms);
  CHECK(scheduler->pending() == 1);
  CHECK(scheduler->cancel(id));
  CHECK(scheduler->pending() == 0);
}

TEST_CASE(
    "scheduler: an earlier timer wakes the thread sleeping for a later "
    "one",
    "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = make(clock);
  const TimePoint t0 = clock->now();
  Calls late;
  Calls early;
  must(scheduler->schedule_at(t0 + 1h, late.once()));
  scheduler->start();
  REQUIRE(clock->wait_for_sleepers(1));  // its first sleep: until t0 + 1h
  must(scheduler->schedule_at(t0 + 10ms, early.once()));
  clock->advance_to(t0 + 10ms);
  REQUIRE(wait_until([&] { return early.due.load() == 1; }));
  REQUIRE(clock->wait_for_sleepers(1));
  CHECK(late.due == 0);
  CHECK(scheduler->pending() == 1);

  clock->advance_to(t0 + 1h);
  REQUIRE(wait_until([&] { return late.due.load() == 1; }));
  CHECK(scheduler->pending() == 0);
}

TEST_CASE(
    "scheduler: a new timer wakes the thread sleeping with nothing "
    "pending",
    "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = make(clock);
  const TimePoint t0 = clock->now();
  Calls calls;
  scheduler->start();
  REQUIRE(clock->wait_for_sleepers(1));  // until the end of time
  CHECK_FALSE(scheduler->next_wake().has_value());
  must(scheduler->schedule_at(t0 + 10ms, calls.once()));
  clock->advance_to(t0 + 10ms);
  REQUIRE(wait_until([&] { return calls.due.load() == 1; }));
}

TEST_CASE(
    "scheduler: shutdown calls each pending task once with kShutdown "
    "and refuses new timers",
    "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = make(clock);
  Calls one_shots;
  Calls periodic;
  Calls cancelled;
  Calls cancelled_at_shutdown;
  std::optional<absl::Status> scheduled_at_shutdown;
  for (int i = 0; i < 3; ++i) {
    must(scheduler->schedule_after(1h, one_shots.once()));
  }
  must(scheduler->schedule_every(clock->now(), 1s, periodic.every()));
  CHECK(
      scheduler->cancel(must(scheduler->schedule_after(1h, cancelled.once()))));
  const TimerId victim =
      must(scheduler->schedule_after(1h, cancelled_at_shutdown.once()));
  // A kShutdown call may cancel another pending timer (which then ends
  // as cancelled, if it was not called first) but not schedule.
  std::atomic<bool> victim_cancelled{false};
  must(scheduler->schedule_after(1h, [&](TimerFate fate) {
    CHECK(fate == TimerFate::kShutdown);
    victim_cancelled = scheduler->cancel(victim);
    scheduled_at_shutdown =
        scheduler->schedule_after(0ms, [](TimerFate) {}).status();
  }));
  scheduler->start();
  REQUIRE(clock->wait_for_sleepers(1));
  clock->advance(1ms);  // the periodic timer's first run
  REQUIRE(wait_until([&] { return periodic.due.load() == 1; }));

  scheduler->shutdown();
  CHECK(one_shots.due == 0);
  CHECK(one_shots.shutdown == 3);
  CHECK(periodic.shutdown == 1);
  CHECK(cancelled.shutdown == 0);
  // Exactly one end: called with kShutdown or cancelled.
  CHECK(cancelled_at_shutdown.shutdown + (victim_cancelled ? 1 : 0) == 1);
  REQUIRE(scheduled_at_shutdown.has_value());
  CHECK(absl::IsFailedPrecondition(*scheduled_at_shutdown));
  CHECK(scheduler->pending() == 0);

  const auto refused = scheduler->schedule_after(1ms, one_shots.once());
  REQUIRE_FALSE(refused.ok());
  CHECK(absl::IsFailedPrecondition(refused.status()));
  CHECK(message_has(refused.status(), "scheduled after shutdown"));
  CHECK_FALSE(
      scheduler->schedule_every(clock->now(), 1s, periodic.every()).ok());
  scheduler->shutdown();  // idempotent
  clock->advance(2h);
  CHECK(scheduler->run_due() == 0);
  CHECK(one_shots.shutdown == 3);
  CHECK(periodic.shutdown == 1);
}

TEST_CASE(
    "scheduler: bad options and arguments are InvalidArgument with a "
    "fix",
    "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  for (const Duration tick : {Duration(0), Duration(-1), Duration(2h)}) {
    const auto bad = Scheduler::Create({.tick = tick}, clock);
    REQUIRE_FALSE(bad.ok());
    CHECK(absl::IsInvalidArgument(bad.status()));
    CHECK(message_has(bad.status(), "use more than 0 and at most 1"));
  }
  const auto no_clock = Scheduler::Create({}, nullptr);
  REQUIRE_FALSE(no_clock.ok());
  CHECK(absl::IsInvalidArgument(no_clock.status()));
  CHECK(message_has(no_clock.status(), "clock is null"));

  auto scheduler = make(clock);
  const auto negative = scheduler->schedule_after(-1ms, [](TimerFate) {});
  REQUIRE_FALSE(negative.ok());
  CHECK(absl::IsInvalidArgument(negative.status()));
  CHECK(message_has(negative.status(), "use 0"));
  for (const Duration period : {Duration(0), Duration(-5)}) {
    const auto bad =
        scheduler->schedule_every(clock->now(), period, [](TimerFate) {});
    REQUIRE_FALSE(bad.ok());
    CHECK(absl::IsInvalidArgument(bad.status()));
    CHECK(message_has(bad.status(), "use more than 0"));
  }
  const auto empty = scheduler->schedule_at(clock->now(), TimerTask());
  REQUIRE_FALSE(empty.ok());
  CHECK(absl::IsInvalidArgument(empty.status()));
  CHECK(message_has(empty.status(), "the task is empty"));
  CHECK_FALSE(scheduler->schedule_every(clock->now(), 1s, PeriodicTask()).ok());
  CHECK(scheduler->pending() == 0);
}

TEST_CASE("scheduler: run_due drives a scheduler without a thread",
          "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = make(clock);
  const TimePoint t0 = clock->now();
  std::vector<int> order;
  for (int i = 1; i <= 3; ++i) {
    must(scheduler->schedule_at(
        t0 + i * 10ms, [&order, i](TimerFate) { order.push_back(i); }));
  }
  CHECK(scheduler->run_due() == 0);
  CHECK(scheduler->next_wake() == t0 + 10ms);
  clock->advance_to(*scheduler->next_wake());
  CHECK(scheduler->run_due() == 1);
  clock->advance(1h);
  CHECK(scheduler->run_due() == 2);
  CHECK(order == std::vector<int>{1, 2, 3});  // ticks run in order
  CHECK(clock->sleepers() == 0);              // no thread
}

TEST_CASE(
    "scheduler: cancel from another thread returns after the running "
    "call and destroys the task",
    "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  auto scheduler = make(clock);
  auto destroyed = std::make_shared<std::atomic<int>>(0);
  std::atomic<bool> running{false};
  std::atomic<bool> release{false};
  std::atomic<bool> returned{false};
  const TimerId id = must(scheduler->schedule_every(
      clock->now(), 1ms, [&, t = Tracked(destroyed)](TimerFate fate) {
        if (fate != TimerFate::kDue) return;
        running = true;
        // Bounded: a broken scheduler fails the test instead of hanging.
        (void)wait_until([&] { return release.load(); });
        returned = true;
      }));
  scheduler->start();
  REQUIRE(clock->wait_for_sleepers(1));
  clock->advance(1ms);
  REQUIRE(wait_until([&] { return running.load(); }));
  std::atomic<bool> cancel_result{false};
  std::atomic<bool> returned_first{false};
  std::atomic<int> destroyed_first{-1};
  std::thread canceller([&] {
    cancel_result = scheduler->cancel(id);
    returned_first = returned.load();
    destroyed_first = destroyed->load();
  });
  release = true;
  canceller.join();
  CHECK(cancel_result.load());
  CHECK(returned_first.load());
  CHECK(destroyed_first.load() == 1);
  CHECK(scheduler->pending() == 0);
}

TEST_CASE(
    "scheduler: a throwing task goes to error_sink and a periodic one "
    "keeps its schedule",
    "[scheduler]") {
  auto clock = std::make_shared<ManualClock>();
  std::vector<std::string> errors;
  auto scheduler = make(clock, {.error_sink = [&](const absl::Status& s) {
                          errors.emplace_back(s.message());
                        }});
  int runs = 0;
  must(scheduler->schedule_every(clock->now(), 1ms, [&](TimerFate) {
    ++runs;
    throw std::runtime_error("disk full");
  }));
  clock->advance(1ms);
  CHECK(scheduler->run_due() == 1);
  clock->advance(1ms);
  CHECK(scheduler->run_due() == 1);
  CHECK(runs == 2);
  REQUIRE(errors.size() == 2);
  CHECK(contains(errors[0], "disk full"));
  CHECK(scheduler->pending() == 1);
}

TEST_CASE("scheduler: runs on the steady clock, woken from an empty sleep",
          "[scheduler]") {
  // Not owned: the process-wide steady clock.
  std::shared_ptr<fnbus::Clock> clock(std::shared_ptr<fnbus::Clock>(),
                                      &fnbus::SteadyClock::instance());
  auto scheduler = make(clock);
  scheduler->start();
  std::atomic<int> ran{0};
  must(scheduler->schedule_after(1ms, [&](TimerFate fate) {
    if (fate == TimerFate::kDue) ran = 1;
  }));
  REQUIRE(wait_until([&] { return ran.load() == 1; }));
  scheduler->shutdown();
}

// Many threads schedule one-shot and periodic timers on the steady clock
// and cancel some, while the timer thread fires them; some are still
// pending at shutdown. Every timer must end exactly once, no call may start
// after a cancel() of it returned, and every task must be destroyed.
TEST_CASE(
    "scheduler: every task ends exactly once under concurrent "
    "schedule and cancel",
    "[scheduler]") {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2'500;
  constexpr int kTimers = kThreads * kPerThread;
  struct Timer {
    std::atomic<int> due{0};
    std::atomic<int> shutdown{0};
    std::atomic<int> cancelled{0};
    std::atomic<bool> cancel_returned{false};
    std::atomic<int> call_after_cancel{0};
  };
  std::vector<Timer> timers(kTimers);
  auto destroyed = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<fnbus::Clock> clock(std::shared_ptr<fnbus::Clock>(),
                                      &fnbus::SteadyClock::instance());
  auto scheduler = make(clock, {.tick = 100us});
  scheduler->start();
  std::atomic<int> failed_schedules{0};

  auto work = [&](int thread) {
    fnbus::Random random(static_cast<std::uint64_t>(thread) + 1);
    std::vector<std::pair<int, TimerId>> mine;
    for (int n = 0; n < kPerThread; ++n) {
      const int i = thread * kPerThread + n;
      Timer& timer = timers[static_cast<std::size_t>(i)];
      auto record = [&timer](TimerFate fate) {
        // acquire: pairs with the release store after a successful
        // cancel(); a call that sees it started after cancel() returned.
        if (timer.cancel_returned.load(std::memory_order_acquire)) {
          timer.call_after_cancel.fetch_add(1, std::memory_order_relaxed);
        }
        (fate == TimerFate::kDue ? timer.due : timer.shutdown)
            .fetch_add(1, std::memory_order_relaxed);
      };
      const Duration delay = std::chrono::microseconds(random.uniform_to(999));
      absl::StatusOr<TimerId> id;
      if (n % 5 == 0) {
        id = scheduler->schedule_every(
            clock->now() + delay, 1ms,
            [record, t = Tracked(destroyed)](TimerFate fate) { record(fate); });
      } else {
        id = scheduler->schedule_after(
            delay,
            [record, t = Tracked(destroyed)](TimerFate fate) { record(fate); });
      }
      if (!id.ok()) {
        failed_schedules.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      mine.emplace_back(i, *id);
      // Cancel a random earlier timer of this thread now and then.
      if (random.uniform_to(1) == 0) {
        const auto& [victim, victim_id] =
            mine[random.uniform_to(mine.size() - 1)];
        if (scheduler->cancel(victim_id)) {
          Timer& cancelled = timers[static_cast<std::size_t>(victim)];
          cancelled.cancelled.fetch_add(1, std::memory_order_relaxed);
          // release: pairs with the acquire load in the task's call.
          cancelled.cancel_returned.store(true, std::memory_order_release);
        }
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(work, t);
  for (auto& thread : threads) thread.join();
  scheduler->shutdown();

  CHECK(failed_schedules == 0);
  CHECK(*destroyed == kTimers);
  int violations = 0;
  int ends = 0;
  for (int i = 0; i < kTimers; ++i) {
    const Timer& timer = timers[static_cast<std::size_t>(i)];
    const bool periodic = (i % kPerThread) % 5 == 0;
    // A one-shot ends by its kDue call; a periodic one only by cancel or
    // kShutdown.
    const int end =
        timer.shutdown + timer.cancelled + (periodic ? 0 : timer.due.load());
    if (end != 1) ++violations;
    if (timer.call_after_cancel != 0) ++violations;
    ends += end;
  }
  CHECK(violations == 0);
  CHECK(ends == kTimers);
}

}  // namespace
