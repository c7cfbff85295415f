// Tests of fnbus::testing::ManualClock.
//
// Sleepers run on their own threads; the test learns that they are asleep
// from wait_for_sleepers() and that they woke from an atomic they set, never
// from a sleep. Every wait is bounded.

#include "fnbus/testing/manual_clock.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <stop_token>
#include <thread>

#include "../support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/clock.hpp"
#include "fnbus/event_bus.hpp"

namespace fnbus_manual_clock_test {

using namespace std::chrono_literals;
using fnbus::Duration;
using fnbus::TimePoint;
using fnbus::testing::ManualClock;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::wait_until;

// A thread sleeping on `clock` until `deadline`; done() once it returned.
class Sleeper {
 public:
  Sleeper(ManualClock& clock, TimePoint deadline)
      : thread_([this, &clock, deadline](std::stop_token stop) {
          result_.store(clock.sleep_until(deadline, stop) ? 1 : 0);
        }) {}

  [[nodiscard]] bool done() const { return result_.load() != -1; }
  // -1 while asleep, then sleep_until's result (1: true, 0: false).
  [[nodiscard]] int result() const { return result_.load(); }
  void request_stop() { thread_.request_stop(); }
  void join() { thread_.join(); }

 private:
  std::atomic<int> result_{-1};
  std::jthread thread_;  // last: joined before result_ goes away
};

TEST_CASE("manual_clock: starts one hour past the epoch, or where told",
          "[manual_clock]") {
  ManualClock clock;
  CHECK(clock.now() == TimePoint{} + 1h);
  ManualClock later(TimePoint{} + 5h);
  CHECK(later.now() == TimePoint{} + 5h);
  CHECK(clock.sleepers() == 0);
}

TEST_CASE("manual_clock: advance and advance_to move now() forward only",
          "[manual_clock]") {
  ManualClock clock;
  const TimePoint start = clock.now();

  clock.advance(10ms);
  CHECK(clock.now() == start + 10ms);
  clock.advance(Duration::zero());
  CHECK(clock.now() == start + 10ms);
  clock.advance(-5ms);  // ignored: the clock is monotonic
  CHECK(clock.now() == start + 10ms);

  clock.advance_to(start + 1s);
  CHECK(clock.now() == start + 1s);
  clock.advance_to(start + 500ms);  // earlier: ignored
  CHECK(clock.now() == start + 1s);
  clock.advance_to(start + 1s);  // same: nothing changes
  CHECK(clock.now() == start + 1s);

  // now() is monotone whatever the steps.
  TimePoint previous = clock.now();
  for (int i = -3; i <= 3; ++i) {
    clock.advance(std::chrono::milliseconds(i));
    clock.advance_to(previous - 1ms);
    CHECK(clock.now() >= previous);
    previous = clock.now();
  }
  CHECK(clock.now() == start + 1s + 6ms);
}

TEST_CASE(
    "manual_clock: advance saturates at TimePoint::max() from any start, "
    "without overflowing",
    "[manual_clock]") {
  // From the earliest instant two Duration::max() steps are ordinary
  // arithmetic (ending 1ns before the epoch, then 1ns before the end);
  // only the next step clamps.
  ManualClock earliest(TimePoint::min());
  earliest.advance(Duration::max());
  CHECK(earliest.now() == TimePoint{} - 1ns);
  earliest.advance(Duration::max());
  CHECK(earliest.now() == TimePoint::max() - 1ns);
  earliest.advance(1h);
  CHECK(earliest.now() == TimePoint::max());

  ManualClock near_end(TimePoint::max() - 50ms);
  near_end.advance(100ms);
  CHECK(near_end.now() == TimePoint::max());
  near_end.advance(1h);  // stays at the end
  CHECK(near_end.now() == TimePoint::max());
  std::stop_source stop;
  CHECK(near_end.sleep_until(TimePoint::max(), stop.get_token()));
}

TEST_CASE("manual_clock: sleep_until a deadline already reached returns true",
          "[manual_clock]") {
  ManualClock clock;
  std::stop_source stop;
  CHECK(clock.sleep_until(clock.now(), stop.get_token()));
  CHECK(clock.sleep_until(clock.now() - 1h, stop.get_token()));
  CHECK(clock.sleepers() == 0);
}

TEST_CASE(
    "manual_clock: advance wakes the sleepers whose deadline passed, not "
    "later ones",
    "[manual_clock]") {
  ManualClock clock;
  const TimePoint start = clock.now();
  Sleeper early(clock, start + 10ms);
  Sleeper late(clock, start + 20ms);
  REQUIRE(clock.wait_for_sleepers(2));
  CHECK(clock.sleepers() == 2);

  clock.advance(5ms);  // neither deadline
  CHECK_FALSE(early.done());
  CHECK_FALSE(late.done());

  clock.advance(5ms);  // exactly the early deadline
  REQUIRE(wait_until([&] { return early.done(); }));
  CHECK(early.result() == 1);
  // `late` is still inside sleep_until: its deadline has not come.
  CHECK_FALSE(late.done());
  CHECK(clock.sleepers() == 1);

  clock.advance_to(start + 25ms);  // past the late deadline
  REQUIRE(wait_until([&] { return late.done(); }));
  CHECK(late.result() == 1);
  CHECK(clock.sleepers() == 0);
  early.join();
  late.join();
}

TEST_CASE(
    "manual_clock: a sleeper stops counting as soon as advance passes its "
    "deadline, and counts again when it sleeps anew",
    "[manual_clock]") {
  ManualClock clock;
  const TimePoint start = clock.now();
  {
    // A one-shot sleeper is counted out the moment advance() passes its
    // deadline, woken or not (it never sleeps again, so 0 is stable).
    Sleeper once(clock, start + 5ms);
    REQUIRE(clock.wait_for_sleepers(1));
    clock.advance(5ms);
    CHECK(clock.sleepers() == 0);
    REQUIRE(wait_until([&] { return once.done(); }));
    once.join();
  }
  // A periodic task: sleeps to the next 10 ms boundary, counts a round,
  // five times.
  std::atomic<int> rounds{0};
  std::jthread task([&](std::stop_token stop) {
    for (int i = 1; i <= 5; ++i) {
      if (!clock.sleep_until(start + i * 10ms, stop)) return;
      // release: the test's acquire load sees the round.
      rounds.fetch_add(1, std::memory_order_release);
    }
  });
  for (int i = 1; i <= 4; ++i) {
    REQUIRE(clock.wait_for_sleepers(1));
    clock.advance(10ms);
    // Counted out at once (whether or not it has woken yet), so that a
    // count of one again means it is back asleep: the round is done.
    REQUIRE(clock.wait_for_sleepers(1));
    // acquire: pairs with the task's release.
    CHECK(rounds.load(std::memory_order_acquire) == i);
  }
  clock.advance(10ms);
  task.join();
  CHECK(rounds.load() == 5);
  CHECK(clock.sleepers() == 0);
}

TEST_CASE("manual_clock: a stop request ends a sleep with false",
          "[manual_clock]") {
  ManualClock clock;
  const TimePoint start = clock.now();
  Sleeper sleeper(clock, start + 1h);
  Sleeper other(clock, start + 1h);
  REQUIRE(clock.wait_for_sleepers(2));

  sleeper.request_stop();
  REQUIRE(wait_until([&] { return sleeper.done(); }));
  CHECK(sleeper.result() == 0);
  CHECK(clock.now() == start);  // stopping moves no time
  CHECK_FALSE(other.done());    // only the stopped sleeper woke
  CHECK(clock.sleepers() == 1);

  clock.advance(1h);
  REQUIRE(wait_until([&] { return other.done(); }));
  CHECK(other.result() == 1);
}

TEST_CASE("manual_clock: a stop requested before the call returns false",
          "[manual_clock]") {
  ManualClock clock;
  std::stop_source stop;
  stop.request_stop();
  CHECK_FALSE(clock.sleep_until(clock.now() + 1s, stop.get_token()));
  CHECK(clock.sleepers() == 0);
}

TEST_CASE("manual_clock: wait_for_sleepers gives up after its timeout",
          "[manual_clock]") {
  ManualClock clock;
  CHECK_FALSE(clock.wait_for_sleepers(1, 1ms));
  CHECK(clock.wait_for_sleepers(0, 1ms));
}

TEST_CASE("manual_clock: a bus reads the clock it is given", "[manual_clock]") {
  auto clock = std::make_shared<ManualClock>();
  fnbus::BusConfig config;
  config.clock = clock;
  auto bus = make_bus(std::move(config));

  CHECK(&bus->clock() == clock.get());
  CHECK(bus->clock().now() == clock->now());
  clock->advance(90min);
  CHECK(bus->clock().now() == clock->now());
  CHECK(bus->metrics().taken_at == clock->now());
}

}  // namespace fnbus_manual_clock_test
