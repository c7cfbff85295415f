// Tests of fnbus::resilience::CircuitBreaker, HealthWindow and
// should_trip(). Time is passed in, so every case is deterministic; the
// last one is a bounded stress for TSan.

#include "fnbus/resilience/circuit_breaker.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "fnbus/testing/manual_clock.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::Duration;
using fnbus::TimePoint;
using fnbus::resilience::BreakerObserver;
using fnbus::resilience::BreakerOptions;
using fnbus::resilience::BreakerState;
using fnbus::resilience::BreakerTransition;
using fnbus::resilience::CircuitBreaker;
using fnbus::resilience::HealthWindow;
using fnbus::testing::ManualClock;

const TimePoint kStart = TimePoint(1h);

std::unique_ptr<CircuitBreaker> make(BreakerOptions options) {
  auto breaker = CircuitBreaker::Create(options);
  REQUIRE(breaker.ok());
  return *std::move(breaker);
}

// `n` calls at `at`, each succeeding or failing; returns how many were let
// through.
int calls(CircuitBreaker& breaker, TimePoint at, int n, bool success) {
  int permitted = 0;
  for (int i = 0; i < n; ++i) {
    CircuitBreaker::Permit permit = breaker.try_acquire(at);
    if (!permit) continue;
    ++permitted;
    success ? permit.on_success(at) : permit.on_failure(at);
  }
  return permitted;
}

// minimum_calls 4, trips at half failing, open 30 s, 2 probes.
const BreakerOptions kSmall{.failure_rate = 0.5,
                            .minimum_calls = 4,
                            .window = 10s,
                            .window_buckets = 10,
                            .open_for = 30s,
                            .half_open_probes = 2};

TEST_CASE("circuit_breaker: trips at the failure rate once enough calls",
          "[circuit_breaker]") {
  auto breaker = make(kSmall);
  CHECK(breaker->state(kStart) == BreakerState::kClosed);
  // 3 failures: every one, but fewer calls than minimum_calls.
  CHECK(calls(*breaker, kStart, 3, false) == 3);
  CHECK(breaker->state(kStart) == BreakerState::kClosed);
  // The 4th call fails: 4 of 4.
  CHECK(calls(*breaker, kStart, 1, false) == 1);
  CHECK(breaker->state(kStart) == BreakerState::kOpen);
  CHECK(calls(*breaker, kStart + 29s, 5, true) == 0);
  const CircuitBreaker::Stats stats = breaker->stats();
  CHECK(stats.permitted == 4);
  CHECK(stats.refused == 5);
  CHECK(stats.failures == 4);
  CHECK(stats.transitions == 1);
}

TEST_CASE("circuit_breaker: below the failure rate it stays closed",
          "[circuit_breaker]") {
  auto breaker = make(kSmall);
  CHECK(calls(*breaker, kStart, 6, true) == 6);
  CHECK(calls(*breaker, kStart, 5, false) == 5);  // 5 of 11 < 0.5
  CHECK(breaker->state(kStart) == BreakerState::kClosed);
  CHECK(calls(*breaker, kStart, 1, false) == 1);  // 6 of 12: trips
  CHECK(breaker->state(kStart) == BreakerState::kOpen);
}

TEST_CASE("circuit_breaker: failures leave the rolling window",
          "[circuit_breaker]") {
  auto breaker = make(kSmall);
  CHECK(calls(*breaker, kStart, 3, false) == 3);
  // 10 s later the window no longer holds them: 1 failure of 1 call.
  CHECK(calls(*breaker, kStart + 10s, 1, false) == 1);
  CHECK(breaker->state(kStart + 10s) == BreakerState::kClosed);
  // Within the window they add up.
  CHECK(calls(*breaker, kStart + 12s, 3, false) == 3);
  CHECK(breaker->state(kStart + 12s) == BreakerState::kOpen);
}

TEST_CASE(
    "circuit_breaker: open, half-open after the cool-down, closed "
    "after the probes succeed",
    "[circuit_breaker]") {
  auto breaker = make(kSmall);
  calls(*breaker, kStart, 4, false);
  REQUIRE(breaker->state(kStart) == BreakerState::kOpen);
  CHECK(breaker->state(kStart + 30s - 1ns) == BreakerState::kOpen);
  const TimePoint cooled = kStart + 30s;
  CHECK(breaker->state(cooled) == BreakerState::kHalfOpen);
  // Two probes at once; a third caller is refused meanwhile.
  CircuitBreaker::Permit first = breaker->try_acquire(cooled);
  CircuitBreaker::Permit second = breaker->try_acquire(cooled);
  REQUIRE(first);
  REQUIRE(second);
  CHECK_FALSE(breaker->try_acquire(cooled));
  first.on_success(cooled);
  CHECK(breaker->state(cooled) == BreakerState::kHalfOpen);
  CHECK_FALSE(breaker->try_acquire(cooled));  // the 2 probes are spent
  second.on_success(cooled);
  CHECK(breaker->state(cooled) == BreakerState::kClosed);
  // Closed with a fresh window: 3 failures do not trip it.
  CHECK(calls(*breaker, cooled, 3, false) == 3);
  CHECK(breaker->state(cooled) == BreakerState::kClosed);
  CHECK(breaker->stats().transitions == 3);  // open, half-open, closed
}

TEST_CASE("circuit_breaker: a failed probe opens it again for open_for",
          "[circuit_breaker]") {
  auto breaker = make(kSmall);
  calls(*breaker, kStart, 4, false);
  const TimePoint cooled = kStart + 30s;
  CircuitBreaker::Permit probe = breaker->try_acquire(cooled);
  CircuitBreaker::Permit late = breaker->try_acquire(cooled);
  REQUIRE(probe);
  REQUIRE(late);
  probe.on_failure(cooled + 1s);
  CHECK(breaker->state(cooled + 1s) == BreakerState::kOpen);
  // The other probe of that spell reports after it ended: no effect.
  late.on_success(cooled + 2s);
  CHECK(breaker->state(cooled + 2s) == BreakerState::kOpen);
  CHECK(breaker->state(cooled + 31s - 1ns) == BreakerState::kOpen);
  CHECK(breaker->state(cooled + 31s) == BreakerState::kHalfOpen);
}

TEST_CASE("circuit_breaker: an abandoned probe frees its slot",
          "[circuit_breaker]") {
  auto breaker = make(kSmall);
  calls(*breaker, kStart, 4, false);
  const TimePoint cooled = kStart + 30s;
  {
    CircuitBreaker::Permit dropped = breaker->try_acquire(cooled);
    REQUIRE(dropped);
  }
  CHECK(breaker->stats().abandoned == 1);
  CHECK(breaker->state(cooled) == BreakerState::kHalfOpen);
  CHECK(calls(*breaker, cooled, 2, true) == 2);
  CHECK(breaker->state(cooled) == BreakerState::kClosed);
}

// What an observer heard, in order.
struct Heard {
  std::vector<BreakerTransition> transitions;

  BreakerObserver observer() {
    return [this](const BreakerTransition& t) { transitions.push_back(t); };
  }
  // "closed>open", ... for the states alone.
  [[nodiscard]] std::vector<std::string> moves() const {
    std::vector<std::string> out;
    for (const BreakerTransition& t : transitions) {
      out.push_back(std::string(to_string(t.from)) + ">" +
                    std::string(to_string(t.to)));
    }
    return out;
  }
};

std::unique_ptr<CircuitBreaker> make(BreakerOptions options,
                                     BreakerObserver observer) {
  auto breaker = CircuitBreaker::Create(options, std::move(observer));
  REQUIRE(breaker.ok());
  return *std::move(breaker);
}

TEST_CASE(
    "circuit_breaker: the observer hears closed, open, half-open, closed "
    "once each, with the instant and number of each",
    "[circuit_breaker]") {
  ManualClock clock(kStart);
  Heard heard;
  auto breaker = make(kSmall, heard.observer());
  CHECK(calls(*breaker, clock.now(), 3, true) == 3);  // closed: nothing
  CHECK(calls(*breaker, clock.now(), 2, false) == 2);
  CHECK(heard.transitions.empty());  // 2 of 5 failed: not yet
  clock.advance(1s);
  CHECK(calls(*breaker, clock.now(), 1, false) == 1);  // 3 of 6: trips
  REQUIRE(heard.moves() == std::vector<std::string>{"closed>open"});
  CHECK(heard.transitions[0].at == kStart + 1s);
  CHECK(heard.transitions[0].number == 1);
  // Refused while open, and state() while open: nothing more.
  CHECK(calls(*breaker, clock.now(), 2, true) == 0);
  clock.advance(30s - 1ns);
  CHECK(breaker->state(clock.now()) == BreakerState::kOpen);
  CHECK(heard.transitions.size() == 1);
  // state() finds the cool-down over: it moves, and reports, once.
  clock.advance(1ns);
  CHECK(breaker->state(clock.now()) == BreakerState::kHalfOpen);
  CHECK(breaker->state(clock.now()) == BreakerState::kHalfOpen);
  REQUIRE(heard.moves() ==
          std::vector<std::string>{"closed>open", "open>half_open"});
  CHECK(heard.transitions[1].at == kStart + 31s);
  CHECK(heard.transitions[1].number == 2);
  // The first probe succeeds: still half-open; the second closes it.
  CHECK(calls(*breaker, clock.now(), 1, true) == 1);
  CHECK(heard.transitions.size() == 2);
  clock.advance(2s);
  CHECK(calls(*breaker, clock.now(), 1, true) == 1);
  CHECK(heard.moves() == std::vector<std::string>{"closed>open",
                                                  "open>half_open",
                                                  "half_open>closed"});
  REQUIRE(heard.transitions.size() == 3);
  CHECK(heard.transitions[2].at == kStart + 33s);
  CHECK(heard.transitions[2].number == 3);
  // Closed again: successes and a failure short of the rule, no report.
  CHECK(calls(*breaker, clock.now(), 5, true) == 5);
  CHECK(calls(*breaker, clock.now(), 1, false) == 1);
  CHECK(heard.transitions.size() == 3);
  CHECK(breaker->stats().transitions == 3);
}

TEST_CASE(
    "circuit_breaker: the observer hears a failed probe as half-open to "
    "open, and try_acquire's cool-down as open to half-open",
    "[circuit_breaker]") {
  ManualClock clock(kStart);
  Heard heard;
  auto breaker = make(kSmall, heard.observer());
  calls(*breaker, clock.now(), 4, false);
  clock.advance(30s);
  // try_acquire() finds the cool-down over; its probe fails.
  CircuitBreaker::Permit probe = breaker->try_acquire(clock.now());
  CircuitBreaker::Permit other = breaker->try_acquire(clock.now());
  REQUIRE(probe);
  REQUIRE(other);
  probe.on_failure(clock.now());
  other.on_success(clock.now());  // of the spell that ended: no report
  clock.advance(30s);
  CHECK(calls(*breaker, clock.now(), 2, true) == 2);
  CHECK(heard.moves() == std::vector<std::string>{
                             "closed>open", "open>half_open", "half_open>open",
                             "open>half_open", "half_open>closed"});
  std::vector<std::uint64_t> numbers;
  for (const BreakerTransition& t : heard.transitions) {
    numbers.push_back(t.number);
  }
  CHECK(numbers == std::vector<std::uint64_t>{1, 2, 3, 4, 5});
  CHECK(breaker->stats().transitions == 5);
}

TEST_CASE(
    "circuit_breaker: the observer runs after the mutex is released, so "
    "it may read the breaker",
    "[circuit_breaker]") {
  ManualClock clock(kStart);
  std::vector<CircuitBreaker::Stats> seen;
  CircuitBreaker* self = nullptr;
  auto breaker = make(kSmall, [&](const BreakerTransition&) {
    // stats() takes the mutex: under it, this would deadlock.
    seen.push_back(self->stats());
  });
  self = breaker.get();
  calls(*breaker, clock.now(), 4, false);
  clock.advance(30s);
  CHECK(breaker->state(clock.now()) == BreakerState::kHalfOpen);
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].state == BreakerState::kOpen);
  CHECK(seen[0].transitions == 1);
  CHECK(seen[1].state == BreakerState::kHalfOpen);
  CHECK(seen[1].transitions == 2);
}

TEST_CASE("circuit_breaker: a permit reports once, and moves carry it",
          "[circuit_breaker]") {
  auto breaker = make(kSmall);
  CircuitBreaker::Permit permit = breaker->try_acquire(kStart);
  CircuitBreaker::Permit moved = std::move(permit);
  CHECK_FALSE(permit);  // NOLINT(bugprone-use-after-move): checked empty
  REQUIRE(moved);
  moved.on_failure(kStart);
  moved.on_failure(kStart);   // ignored
  permit.on_success(kStart);  // empty: ignored
  CircuitBreaker::Permit other = breaker->try_acquire(kStart);
  other = breaker->try_acquire(kStart);  // the first is abandoned
  const CircuitBreaker::Stats stats = breaker->stats();
  CHECK(stats.failures == 1);
  CHECK(stats.successes == 0);
  CHECK(stats.abandoned == 1);
  CHECK(stats.permitted == 2);  // `other` still runs: counted once it reports
}

// Stats::permitted counts a closed call once it reports (so the closed
// path writes one shared word), a probe as soon as it is let through.
TEST_CASE(
    "circuit_breaker: permitted counts closed calls at their outcome, "
    "probes at once",
    "[circuit_breaker]") {
  auto breaker = make(kSmall);
  CircuitBreaker::Permit running = breaker->try_acquire(kStart);
  REQUIRE(running);
  CHECK(breaker->stats().permitted == 0);
  running.on_success();
  CHECK(breaker->stats().permitted == 1);
  // Trip it (3 failures of 4 calls), wait out the cool-down: a probe.
  CHECK(calls(*breaker, kStart, 3, false) == 3);
  REQUIRE(breaker->state(kStart + 30s) == BreakerState::kHalfOpen);
  CircuitBreaker::Permit probe = breaker->try_acquire(kStart + 30s);
  REQUIRE(probe);
  CHECK(breaker->stats().permitted == 5);
  probe.on_success(kStart + 30s);
  // Reported: counted once, not again.
  CircuitBreaker::Stats stats = breaker->stats();
  CHECK(stats.permitted == 5);
  CHECK(stats.successes == 2);
  CHECK(stats.failures == 3);
  // An abandoned probe, too, is counted once.
  { CircuitBreaker::Permit dropped = breaker->try_acquire(kStart + 30s); }
  stats = breaker->stats();
  CHECK(stats.permitted == 6);
  CHECK(stats.abandoned == 1);
}

TEST_CASE(
    "circuit_breaker: on_success() and on_failure() without an instant "
    "count at the instant of try_acquire",
    "[circuit_breaker]") {
  auto breaker = make(kSmall);
  // Three calls start at kStart and fail 15 s later, reported at their
  // start: by the time a fourth fails at kStart + 15s they have left the
  // 10 s window, so it is 1 failure of 1 call and stays closed.
  std::vector<CircuitBreaker::Permit> slow;
  for (int i = 0; i < 3; ++i) slow.push_back(breaker->try_acquire(kStart));
  for (CircuitBreaker::Permit& permit : slow) permit.on_failure();
  CHECK(calls(*breaker, kStart + 15s, 1, false) == 1);
  CHECK(breaker->state(kStart + 15s) == BreakerState::kClosed);
  // Reported at kStart + 15s instead, they would have tripped it: 4 of 4.
  auto other = make(kSmall);
  for (int i = 0; i < 3; ++i) {
    other->try_acquire(kStart).on_failure(kStart + 15s);
  }
  CHECK(calls(*other, kStart + 15s, 1, false) == 1);
  CHECK(other->state(kStart + 15s) == BreakerState::kOpen);
  // A success without an instant is counted once, like any report.
  CircuitBreaker::Permit ok = breaker->try_acquire(kStart + 15s);
  ok.on_success();
  ok.on_success();
  CHECK_FALSE(ok);
  const CircuitBreaker::Stats stats = breaker->stats();
  CHECK(stats.successes == 1);
  CHECK(stats.failures == 4);
  CHECK(stats.permitted == 5);
}

// Successes from several threads take the lock-free path; the trip rule
// then sees every one of them: it trips at exactly the failure that
// reaches the rate.
TEST_CASE(
    "circuit_breaker: concurrent successes are all seen by the trip "
    "rule",
    "[circuit_breaker]") {
  auto breaker = make({.failure_rate = 0.5,
                       .minimum_calls = 4,
                       .window = 10s,
                       .window_buckets = 10,
                       .open_for = 30s,
                       .half_open_probes = 2});
  constexpr int kThreads = 4;
  constexpr int kCalls = 2'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&breaker] {
      for (int i = 0; i < kCalls; ++i) {
        // 200 µs per call: a rollover to the next slice races too.
        const TimePoint now =
            kStart + 800ms + std::chrono::microseconds(i * 200);
        breaker->try_acquire(now).on_success();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CircuitBreaker::Stats stats = breaker->stats();
  CHECK(stats.successes == kThreads * kCalls);
  CHECK(stats.permitted == kThreads * kCalls);
  // 8,000 successes: the 8,000th failure makes half.
  const TimePoint later = kStart + 2s;
  CHECK(calls(*breaker, later, kThreads * kCalls - 1, false) ==
        kThreads * kCalls - 1);
  CHECK(breaker->state(later) == BreakerState::kClosed);
  CHECK(calls(*breaker, later, 1, false) == 1);
  CHECK(breaker->state(later) == BreakerState::kOpen);
  stats = breaker->stats();
  CHECK(stats.failures == kThreads * kCalls);
  CHECK(stats.transitions == 1);
}

// Successes (lock-free) and failures (under the mutex) from several
// threads at once, with a rule that never trips: every count exact.
TEST_CASE(
    "circuit_breaker: concurrent successes and failures keep exact "
    "counts",
    "[circuit_breaker]") {
  auto breaker = make({.failure_rate = 1.0,
                       .minimum_calls = 1'000'000,
                       .window = 40ms,
                       .window_buckets = 4,
                       .open_for = 30s,
                       .half_open_probes = 1});
  constexpr int kThreads = 4;
  constexpr int kCalls = 10'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&breaker, t] {
      for (int i = 0; i < kCalls; ++i) {
        // 5 µs per call: a new 10 ms slice every 2,000 calls.
        const TimePoint now = kStart + std::chrono::microseconds(i * 5);
        CircuitBreaker::Permit permit = breaker->try_acquire(now);
        switch ((i + t) % 5) {
          case 0:
            permit.on_failure(now);
            break;
          case 1:
            break;  // dropped: abandoned
          default:
            permit.on_success();
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const CircuitBreaker::Stats stats = breaker->stats();
  constexpr std::uint64_t kTotal = kThreads * kCalls;
  CHECK(stats.permitted == kTotal);
  CHECK(stats.failures == kTotal / 5);
  CHECK(stats.abandoned == kTotal / 5);
  CHECK(stats.successes == kTotal * 3 / 5);
  CHECK(stats.refused == 0);
  CHECK(stats.transitions == 0);
}

TEST_CASE("circuit_breaker: a clock at its maximum does not overflow",
          "[circuit_breaker]") {
  auto breaker = make(kSmall);
  const TimePoint end = TimePoint::max();
  calls(*breaker, end, 4, false);
  CHECK(breaker->state(end) == BreakerState::kOpen);  // 0 s have passed
  // From the most negative time to the most positive: the elapsed time
  // does not fit in the signed rep, and must not overflow.
  auto early = make(kSmall);
  calls(*early, TimePoint::min(), 4, false);
  CHECK(early->state(TimePoint::min()) == BreakerState::kOpen);
  CHECK(early->state(end) == BreakerState::kHalfOpen);
}

TEST_CASE("health_window: counts the slices now covers", "[circuit_breaker]") {
  HealthWindow window(10s, 10);  // 1 s slices
  window.record(kStart, true);
  window.record(kStart + 500ms, false);
  window.record(kStart + 9s, false);
  CHECK(window.counts(kStart + 9s).calls == 3);
  CHECK(window.counts(kStart + 9s).failures == 2);
  CHECK(window.counts(kStart + 10s).calls == 1);  // the first slice left
  CHECK(window.counts(kStart + 18s).calls == 1);
  CHECK(window.counts(kStart + 19s).calls == 0);  // 10 s after it
  window.record(kStart + 20s, true);
  window.clear();
  CHECK(window.counts(kStart + 20s).calls == 0);
}

TEST_CASE("health_window: the lock-free path counts in the newest slice alone",
          "[circuit_breaker]") {
  HealthWindow window(10s, 10);  // 1 s slices
  // Nothing recorded yet: no newest slice.
  CHECK_FALSE(window.try_record_success(kStart));
  window.record(kStart + 200ms, true);
  CHECK(window.try_record_success(kStart));  // same slice, earlier
  CHECK(window.try_record_success(kStart + 1s - 1ns));
  CHECK_FALSE(window.try_record_success(kStart + 1s));   // the next slice
  CHECK_FALSE(window.try_record_success(kStart - 1ns));  // the one before
  CHECK(window.counts(kStart + 1s).calls == 3);
  CHECK(window.counts(kStart + 1s).failures == 0);
  // A later slice becomes the newest; the lock-free path follows it.
  window.record(kStart + 3s, false);
  CHECK_FALSE(window.try_record_success(kStart));
  CHECK(window.try_record_success(kStart + 3500ms));
  CHECK(window.counts(kStart + 3s).calls == 5);
  CHECK(window.counts(kStart + 3s).failures == 1);
  window.clear();
  CHECK_FALSE(window.try_record_success(kStart + 3500ms));
  CHECK(window.counts(kStart + 3s).calls == 0);
  // totals() keeps what clear() emptied.
  CHECK(window.totals().calls == 5);
  CHECK(window.totals().failures == 1);
}

TEST_CASE(
    "health_window: an outcome older than the window leaves newer "
    "slices alone",
    "[circuit_breaker]") {
  HealthWindow window(10s, 10);
  window.record(kStart + 20s, false);
  // Slice kStart shares a bucket with kStart + 20s, and has left the
  // window: it must not reset that bucket.
  window.record(kStart, true);
  CHECK(window.counts(kStart + 20s).calls == 1);
  CHECK(window.counts(kStart + 20s).failures == 1);
  CHECK(window.totals().calls == 2);
  // 9 slices before the newest: still in the window.
  window.record(kStart + 11s, true);
  CHECK(window.counts(kStart + 20s).calls == 2);
}

TEST_CASE(
    "health_window: slices are whole widths before the epoch and at "
    "the clock's ends",
    "[circuit_breaker]") {
  HealthWindow window(10s, 10);
  // [-1 s, 0) is one slice, [0, 1 s) the next.
  window.record(TimePoint(-1ns), true);
  CHECK(window.try_record_success(TimePoint(-1s)));
  CHECK_FALSE(window.try_record_success(TimePoint(0ns)));
  CHECK_FALSE(window.try_record_success(TimePoint(-1s - 1ns)));
  // The slices that hold the clock's ends reach beyond it.
  HealthWindow ends(10s, 10);
  ends.record(TimePoint::max(), true);
  CHECK(ends.try_record_success(TimePoint::max()));
  CHECK(ends.try_record_success(TimePoint::max() - 1ns));
  ends.record(TimePoint::min(), true);  // long gone: totals() alone
  CHECK(ends.counts(TimePoint::max()).calls == 3);
  HealthWindow starts(10s, 10);
  starts.record(TimePoint::min(), false);
  CHECK(starts.try_record_success(TimePoint::min()));
  CHECK(starts.counts(TimePoint::min()).calls == 2);
  CHECK(ends.totals().calls == 4);
}

// The owner's serialisation is a mutex here, as in the breaker: successes
// go lock-free while other threads move the window on and clear it; none
// is lost.
TEST_CASE(
    "health_window: lock-free successes racing with rollovers are all "
    "counted",
    "[circuit_breaker]") {
  HealthWindow window(4ms, 4);  // 1 ms slices
  std::mutex mutex;
  constexpr int kThreads = 3;
  constexpr int kCalls = 20'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCalls; ++i) {
        // 1 µs per call: a new slice every 1,000 calls, the bucket
        // reused every 4,000.
        const TimePoint now = kStart + std::chrono::microseconds(i);
        if (window.try_record_success(now)) continue;
        std::lock_guard lock(mutex);
        window.record(now, true);
      }
    });
  }
  // A fourth thread records failures, 10 µs apart: it moves the window
  // on ahead of the others (some of their successes are then too old for
  // it) and clears it now and then.
  constexpr int kFailures = 2'000;
  threads.emplace_back([&] {
    for (int i = 0; i < kFailures; ++i) {
      std::lock_guard lock(mutex);
      window.record(kStart + std::chrono::microseconds(i * 10), false);
      if (i % 500 == 499) window.clear();
    }
  });
  for (std::thread& thread : threads) thread.join();
  const HealthWindow::Counts totals = window.totals();
  CHECK(totals.calls == kThreads * kCalls + kFailures);
  CHECK(totals.failures == kFailures);
}

TEST_CASE("should_trip: the rule alone", "[circuit_breaker]") {
  const BreakerOptions options{.failure_rate = 0.25, .minimum_calls = 8};
  CHECK_FALSE(fnbus::resilience::should_trip({}, options));
  CHECK_FALSE(fnbus::resilience::should_trip({7, 7}, options));
  CHECK_FALSE(fnbus::resilience::should_trip({8, 1}, options));
  CHECK(fnbus::resilience::should_trip({8, 2}, options));
  CHECK(fnbus::resilience::should_trip({100, 100}, options));
}

TEST_CASE("circuit_breaker: bad options are InvalidArgument naming each one",
          "[circuit_breaker]") {
  auto bad = CircuitBreaker::Create({.failure_rate = 0,
                                     .minimum_calls = 0,
                                     .window = 0s,
                                     .window_buckets = 0,
                                     .open_for = -1s,
                                     .half_open_probes = 0});
  REQUIRE(bad.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(bad.status().message());
  for (const char* part :
       {"failure_rate is 0; use a fraction in (0, 1]", "minimum_calls is 0",
        "window is 0 ns", "window_buckets is 0; use 1 to 1000",
        "open_for is -1000000000 ns", "half_open_probes is 0"}) {
    INFO(part);
    CHECK_THAT(message, Catch::Contains(part));
  }
  CHECK_FALSE(CircuitBreaker::Create({.failure_rate = 1.5}).ok());
  CHECK_FALSE(CircuitBreaker::Create({.failure_rate = std::nan("")}).ok());
  CHECK_FALSE(CircuitBreaker::Create({.window_buckets = 1001}).ok());
  CHECK(CircuitBreaker::Create({.failure_rate = 1.0}).ok());
  CHECK(fnbus::resilience::to_string(BreakerState::kHalfOpen) == "half_open");
}

// Bounded stress: threads acquire and report while time moves; every
// permitted call is reported or abandoned exactly once.
TEST_CASE("circuit_breaker: concurrent callers keep the counts exact",
          "[circuit_breaker]") {
  auto breaker = make({.failure_rate = 0.5,
                       .minimum_calls = 10,
                       .window = 1s,
                       .window_buckets = 4,
                       .open_for = 50ms,
                       .half_open_probes = 2});
  constexpr int kThreads = 4;
  constexpr int kCalls = 5'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&breaker, t] {
      for (int i = 0; i < kCalls; ++i) {
        // Time advances with the call number: 1 ms per call.
        const TimePoint now = kStart + std::chrono::milliseconds(i);
        CircuitBreaker::Permit permit = breaker->try_acquire(now);
        if (!permit) continue;
        const int kind = (i + t) % 3;  // fail, succeed, drop
        if (kind == 0 && i % 1000 < 500) permit.on_failure(now);
        if (kind == 1) permit.on_success(now);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const CircuitBreaker::Stats stats = breaker->stats();
  CHECK(stats.permitted + stats.refused == kThreads * kCalls);
  CHECK(stats.permitted == stats.successes + stats.failures + stats.abandoned);
  CHECK(stats.failures > 0);
  CHECK(stats.transitions > 0);
}

TEST_CASE(
    "circuit_breaker: with concurrent callers the observer hears every "
    "transition exactly once, and ordered by number they chain",
    "[circuit_breaker]") {
  std::mutex mutex;
  std::vector<BreakerTransition> heard;  // guarded by mutex
  auto breaker = make({.failure_rate = 0.5,
                       .minimum_calls = 10,
                       .window = 1s,
                       .window_buckets = 4,
                       .open_for = 50ms,
                       .half_open_probes = 2},
                      [&](const BreakerTransition& t) {
                        std::lock_guard lock(mutex);
                        heard.push_back(t);
                      });
  constexpr int kThreads = 4;
  constexpr int kCalls = 5'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&breaker, t] {
      for (int i = 0; i < kCalls; ++i) {
        const TimePoint now = kStart + std::chrono::milliseconds(i);
        CircuitBreaker::Permit permit = breaker->try_acquire(now);
        if (!permit) continue;
        const bool fail = (i + t) % 2 == 0 && i % 1000 < 500;
        fail ? permit.on_failure(now) : permit.on_success(now);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const CircuitBreaker::Stats stats = breaker->stats();
  REQUIRE(stats.transitions > 0);
  REQUIRE(heard.size() == stats.transitions);
  std::sort(heard.begin(), heard.end(),
            [](const BreakerTransition& a, const BreakerTransition& b) {
              return a.number < b.number;
            });
  BreakerState state = BreakerState::kClosed;
  for (std::size_t i = 0; i < heard.size(); ++i) {
    INFO("transition " << i + 1);
    CHECK(heard[i].number == i + 1);
    CHECK(heard[i].from == state);
    CHECK(heard[i].to != heard[i].from);
    state = heard[i].to;
  }
  CHECK(state == stats.state);
}

}  // namespace
