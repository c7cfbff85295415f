// resilience::DeadlineWatch alone: check(now) requests the token of each
// call past its deadline and no other, a slot's source is replaced after a
// request, nesting levels have slots of their own, and many threads
// watched at once (bounded; meant for TSan). Time is given to check(), so
// no clock and no sleep is involved. Also DeadlineWatchdog's period.

#include "fnbus/resilience/deadline_watch.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "fnbus/detail/thread_activity.hpp"

namespace {

using fnbus::Duration;
using fnbus::TimePoint;
using fnbus::resilience::DeadlineWatch;
using fnbus::resilience::DeadlineWatchdog;
using namespace std::chrono_literals;

const TimePoint kStart = TimePoint{} + 1h;

}  // namespace

TEST_CASE(
    "deadline watch: check requests the token of a call past its "
    "deadline only",
    "[deadline_watch]") {
  DeadlineWatch watch;
  CHECK(watch.check(kStart) == 0);  // nothing watched yet
  DeadlineWatch::Invocation call = watch.begin(kStart + 100ms, 100ms);
  const std::stop_token token = call.state().token;
  CHECK(token.stop_possible());
  CHECK(call.state().deadline == kStart + 100ms);
  CHECK(call.state().budget == 100ms);
  CHECK(watch.watching() == 1);

  CHECK(watch.check(kStart + 99ms) == 0);
  CHECK_FALSE(token.stop_requested());
  CHECK(watch.check(kStart + 100ms) == 1);  // at the deadline
  CHECK(token.stop_requested());
  CHECK(watch.check(kStart + 200ms) == 0);  // requested once
  CHECK(watch.watching() == 1);             // still running
  call.end();
  CHECK(watch.watching() == 0);
}

TEST_CASE(
    "deadline watch: an ended call is not requested, and the next "
    "call in the slot gets a fresh token after a request",
    "[deadline_watch]") {
  DeadlineWatch watch;
  std::stop_token first;
  {
    DeadlineWatch::Invocation call = watch.begin(kStart + 10ms, 10ms);
    first = call.state().token;
  }
  CHECK(watch.check(kStart + 1s) == 0);  // ended before its deadline passed
  CHECK_FALSE(first.stop_requested());

  std::stop_token second;
  {
    DeadlineWatch::Invocation call = watch.begin(kStart + 10ms, 10ms);
    second = call.state().token;
    // Reused: no request, no new source.
    CHECK(second == first);
    CHECK(watch.check(kStart + 1s) == 1);
  }
  CHECK(second.stop_requested());

  DeadlineWatch::Invocation third = watch.begin(kStart + 2s, 10ms);
  CHECK(third.state().token != second);  // replaced after the request
  CHECK_FALSE(third.state().token.stop_requested());
  CHECK(watch.check(kStart + 1s) == 0);
}

TEST_CASE("deadline watch: each nesting level has a slot of its own",
          "[deadline_watch]") {
  DeadlineWatch watch;
  DeadlineWatch::Invocation outer = watch.begin(kStart + 1s, 1s);
  fnbus::detail::ThreadRecord& record = fnbus::detail::this_thread_record();
  ++record.depth;  // as a nested dispatch does
  std::stop_token inner_token;
  {
    DeadlineWatch::Invocation inner = watch.begin(kStart + 10ms, 10ms);
    inner_token = inner.state().token;
    CHECK(watch.watching() == 2);
    CHECK(watch.check(kStart + 10ms) == 1);  // the inner call only
    CHECK(inner_token.stop_requested());
    CHECK_FALSE(outer.state().token.stop_requested());
  }
  --record.depth;
  CHECK(watch.check(kStart + 1s) == 1);  // now the outer one
  CHECK(outer.state().token.stop_requested());
}

TEST_CASE("deadline watch: a stop callback runs on the checking thread",
          "[deadline_watch]") {
  DeadlineWatch watch;
  DeadlineWatch::Invocation call = watch.begin(kStart + 5ms, 5ms);
  int called = 0;
  std::stop_callback on_stop(call.state().token, [&] { ++called; });
  std::thread checker([&] { (void)watch.check(kStart + 5ms); });
  checker.join();
  CHECK(called == 1);
}

TEST_CASE("deadline watch: many threads watched while another checks",
          "[deadline_watch]") {
  // Each worker runs calls with deadlines alternately already past and
  // far ahead; the checker requests as it goes. A call whose token was
  // requested must have had a past deadline: the late calls' tokens are
  // never requested (not even one that reused a slot after a request).
  constexpr int kThreads = 4;
  constexpr int kCalls = 2'000;
  DeadlineWatch watch;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> wrongly_requested{0};
  std::atomic<std::uint64_t> calls{0};
  const TimePoint now = kStart + 1h;
  std::thread checker([&] {
    // relaxed: a stop flag; the workers' results are read after join().
    while (!stop.load(std::memory_order_relaxed)) (void)watch.check(now);
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const bool overdue = (i + t) % 2 == 0;
        DeadlineWatch::Invocation call =
            watch.begin(overdue ? now - 1ms : now + 1h, 1ms);
        const std::stop_token token = call.state().token;
        for (int spin = 0; spin < 50; ++spin) std::this_thread::yield();
        call.end();
        // relaxed: counts, read after join().
        if (!overdue && token.stop_requested()) {
          wrongly_requested.fetch_add(1, std::memory_order_relaxed);
        }
        calls.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  // relaxed: see above.
  stop.store(true, std::memory_order_relaxed);
  checker.join();
  CHECK(calls.load() == std::uint64_t{kThreads} * kCalls);
  CHECK(wrongly_requested.load() == 0);
  CHECK(watch.watching() == 0);
}

TEST_CASE(
    "deadline watchdog: the period is a quarter of the deadline, "
    "within 1 ms and 1 s",
    "[deadline_watch]") {
  CHECK(DeadlineWatchdog::period_for(100ms) == 25ms);
  CHECK(DeadlineWatchdog::period_for(2ms) == 1ms);
  CHECK(DeadlineWatchdog::period_for(1h) == 1s);

  auto watchdog = DeadlineWatchdog::Create(nullptr, false);
  REQUIRE(watchdog.ok());  // no thread: the clock is not used
  CHECK((*watchdog)->period() == Duration::zero());
  REQUIRE((*watchdog)->cover(100ms).ok());
  CHECK((*watchdog)->period() == 25ms);
  REQUIRE((*watchdog)->cover(1s).ok());  // longer: keeps the shorter
  CHECK((*watchdog)->period() == 25ms);
  REQUIRE((*watchdog)->cover(8ms).ok());
  CHECK((*watchdog)->period() == 2ms);
}
