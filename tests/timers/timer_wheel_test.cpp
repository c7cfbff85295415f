// Tests of fnbus::timers::TimerWheel. Time is passed in: every case is
// deterministic. The reference test checks every timer of a random
// schedule spanning all four levels and the overflow list against a plain
// sorted list.

#include "fnbus/timers/timer_wheel.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "fnbus/random.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::Duration;
using fnbus::Random;
using fnbus::TimePoint;
using fnbus::timers::TimerId;
using fnbus::timers::TimerWheel;

const TimePoint kStart = TimePoint(1h);

TimerWheel make(Duration tick = 1ms, TimePoint start = kStart) {
  auto wheel = TimerWheel::Create({.tick = tick}, start);
  REQUIRE(wheel.ok());
  return *std::move(wheel);
}

// What advance() fired.
std::vector<std::uint64_t> advance(TimerWheel& wheel, TimePoint now) {
  std::vector<std::uint64_t> fired;
  const std::size_t count = wheel.advance(
      now, [&](std::uint64_t payload) { fired.push_back(payload); });
  CHECK(count == fired.size());
  return fired;
}

using Fired = std::vector<std::uint64_t>;

TEST_CASE("timer_wheel: fires at its due time, not before", "[timer_wheel]") {
  TimerWheel wheel = make();
  wheel.schedule(kStart + 30ms, 7);
  CHECK(wheel.size() == 1);
  CHECK(advance(wheel, kStart + 29ms).empty());
  CHECK(advance(wheel, kStart + 30ms) == Fired{7});
  CHECK(wheel.empty());
  CHECK(advance(wheel, kStart + 1h).empty());
}

TEST_CASE("timer_wheel: due times round up to the tick", "[timer_wheel]") {
  TimerWheel wheel = make(10ms);
  wheel.schedule(kStart + 11ms, 1);  // tick 2 (20 ms)
  CHECK(advance(wheel, kStart + 19ms).empty());
  CHECK(advance(wheel, kStart + 20ms) == Fired{1});
}

TEST_CASE("timer_wheel: a due time in the past fires at the next tick",
          "[timer_wheel]") {
  TimerWheel wheel = make();
  CHECK(advance(wheel, kStart + 5s).empty());
  wheel.schedule(kStart, 1);
  wheel.schedule(kStart - 1h, 2);              // before the wheel's start
  CHECK(advance(wheel, kStart + 5s).empty());  // this tick is done
  Fired fired = advance(wheel, kStart + 5s + 1ms);
  std::sort(fired.begin(), fired.end());
  CHECK(fired == Fired{1, 2});
}

TEST_CASE("timer_wheel: cancel removes a pending timer once", "[timer_wheel]") {
  TimerWheel wheel = make();
  const TimerId near = wheel.schedule(kStart + 1ms, 1);
  const TimerId far = wheel.schedule(kStart + 40h, 2);  // level 3
  const TimerId fired = wheel.schedule(kStart + 2ms, 3);
  CHECK(wheel.cancel(near));
  CHECK_FALSE(wheel.cancel(near));
  CHECK(wheel.cancel(far));
  CHECK(advance(wheel, kStart + 1000h) == Fired{3});
  CHECK_FALSE(wheel.cancel(fired));
  CHECK_FALSE(wheel.cancel(TimerId{}));
  CHECK_FALSE(wheel.cancel(TimerId{12345}));
  // A reused node does not answer to its old id.
  const TimerId reused = wheel.schedule(kStart + 2000h, 4);
  CHECK_FALSE(wheel.cancel(near));
  CHECK(wheel.cancel(reused));
  CHECK(wheel.empty());
}

TEST_CASE(
    "timer_wheel: every timer of a random schedule fires once, on "
    "time, across all levels and the overflow list",
    "[timer_wheel]") {
  constexpr std::uint64_t kTickNs = 1'000'000;  // 1 ms
  TimerWheel wheel = make(1ms);
  const std::uint64_t seed = GENERATE(2026, 7, 99);
  INFO("seed " << seed);
  Random random(seed);
  // Due ticks up to 2^34 (about 200 days: past the four levels' 2^32).
  std::multimap<std::uint64_t, std::uint64_t> expected;  // due tick -> id
  std::map<std::uint64_t, TimerId> ids;
  for (std::uint64_t id = 0; id < 20'000; ++id) {
    const int scale = static_cast<int>(random.uniform_to(34));
    const std::uint64_t due = random.uniform_to((std::uint64_t{1} << scale));
    ids[id] = wheel.schedule(kStart + Duration(due * kTickNs), id);
    expected.emplace(due, id);
  }
  // Cancel one in ten.
  for (std::uint64_t id = 0; id < 20'000; id += 10) {
    REQUIRE(wheel.cancel(ids[id]));
  }
  std::erase_if(expected,
                [](const auto& entry) { return entry.second % 10 == 0; });
  REQUIRE(wheel.size() == expected.size());

  // Advance in random steps, from a tick to days; each timer must fire in
  // the first advance whose tick reaches its due tick.
  std::uint64_t now = 0;
  int advances = 0;
  while (!expected.empty()) {
    const int scale = static_cast<int>(random.uniform_to(33));
    now += 1 + random.uniform_to(std::uint64_t{1} << scale);
    Fired fired = advance(wheel, kStart + Duration(now * kTickNs));
    ++advances;
    Fired due_now;
    while (!expected.empty() && expected.begin()->first <= now) {
      due_now.push_back(expected.begin()->second);
      expected.erase(expected.begin());
    }
    std::sort(fired.begin(), fired.end());
    std::sort(due_now.begin(), due_now.end());
    REQUIRE(fired == due_now);
  }
  CHECK(wheel.empty());
  CHECK(advances > 10);
}

TEST_CASE(
    "timer_wheel: cancel finds timers that share a slot, before and after "
    "they move down a level",
    "[timer_wheel]") {
  TimerWheel wheel = make();
  // Ticks 300 to 349: one level-1 slot at first, 20 timers per tick.
  std::vector<TimerId> ids;
  for (std::uint64_t i = 0; i < 1000; ++i) {
    ids.push_back(
        wheel.schedule(kStart + std::chrono::milliseconds(300 + i % 50), i));
  }
  for (std::uint64_t i = 0; i < 1000; i += 3) REQUIRE(wheel.cancel(ids[i]));
  CHECK(advance(wheel, kStart + 299ms).empty());  // all moved to level 0
  for (std::uint64_t i = 1; i < 1000; i += 3) REQUIRE(wheel.cancel(ids[i]));
  for (std::uint64_t i = 0; i < 1000; i += 3) CHECK_FALSE(wheel.cancel(ids[i]));
  CHECK(wheel.size() == 333);
  Fired fired = advance(wheel, kStart + 349ms);
  std::sort(fired.begin(), fired.end());
  Fired expected;
  for (std::uint64_t i = 2; i < 1000; i += 3) expected.push_back(i);
  CHECK(fired == expected);
  CHECK(wheel.empty());
}

TEST_CASE(
    "timer_wheel: interleaved schedule, cancel and advance match a "
    "reference",
    "[timer_wheel]") {
  constexpr std::uint64_t kTickNs = 1'000'000;  // 1 ms
  TimerWheel wheel = make(1ms);
  const std::uint64_t seed = GENERATE(1, 2, 3);
  INFO("seed " << seed);
  Random random(seed);
  std::map<std::uint64_t, std::uint64_t> due_of;  // id -> due tick
  std::map<std::uint64_t, TimerId> ids;           // the pending ones
  std::uint64_t now = 0;
  std::uint64_t next_id = 0;
  for (int step = 0; step < 20'000; ++step) {
    const std::uint64_t choice = random.uniform_to(10);
    if (choice < 5) {  // up to 2^36 ticks ahead: every level and overflow
      const int scale = static_cast<int>(random.uniform_to(36));
      const std::uint64_t due =
          now + 1 + random.uniform_to(std::uint64_t{1} << scale);
      ids[next_id] = wheel.schedule(kStart + Duration(due * kTickNs), next_id);
      due_of[next_id++] = due;
    } else if (choice < 8 && !ids.empty()) {
      auto it = ids.lower_bound(random.uniform_to(next_id));
      if (it == ids.end()) it = ids.begin();
      REQUIRE(wheel.cancel(it->second));
      due_of.erase(it->first);
      ids.erase(it);
    } else {
      now += random.uniform_to(std::uint64_t{1} << random.uniform_to(34));
      Fired fired = advance(wheel, kStart + Duration(now * kTickNs));
      Fired due_now;
      for (auto it = due_of.begin(); it != due_of.end();) {
        if (it->second <= now) {
          due_now.push_back(it->first);
          ids.erase(it->first);
          it = due_of.erase(it);
        } else {
          ++it;
        }
      }
      std::sort(fired.begin(), fired.end());
      REQUIRE(fired == due_now);
    }
    REQUIRE(wheel.size() == ids.size());
  }
}

TEST_CASE("timer_wheel: next_wake is exact nearby and never late",
          "[timer_wheel]") {
  TimerWheel wheel = make();
  CHECK_FALSE(wheel.next_wake().has_value());
  wheel.schedule(kStart + 7ms, 1);
  REQUIRE(wheel.next_wake().has_value());
  CHECK(*wheel.next_wake() <= kStart + 7ms);
  while (!wheel.empty()) {
    const TimePoint wake = *wheel.next_wake();
    CHECK(wake <= kStart + 7ms);
    advance(wheel, wake);
  }
}

// A scheduler that sleeps until next_wake() and advances there fires
// every timer at its tick, with few wake-ups for far timers.
TEST_CASE("timer_wheel: sleeping until next_wake fires every timer on time",
          "[timer_wheel]") {
  TimerWheel wheel = make();
  const std::vector<Duration> dues = {3ms, 300ms, 70s, 5h, 40h, 2000h};
  for (std::size_t i = 0; i < dues.size(); ++i) {
    wheel.schedule(kStart + dues[i], i);
  }
  std::vector<TimePoint> fired_at(dues.size());
  int wakes = 0;
  while (std::optional<TimePoint> wake = wheel.next_wake()) {
    ++wakes;
    REQUIRE(wakes < 100);
    wheel.advance(*wake, [&](std::uint64_t i) { fired_at[i] = *wake; });
  }
  for (std::size_t i = 0; i < dues.size(); ++i) {
    INFO("timer " << i);
    CHECK(fired_at[i] == kStart + dues[i]);  // whole ticks: exact
  }
}

TEST_CASE(
    "timer_wheel: callbacks schedule and cancel, and 'now' means the "
    "next tick",
    "[timer_wheel]") {
  TimerWheel wheel = make();
  TimerId victim = wheel.schedule(kStart + 10ms, 100);
  wheel.schedule(kStart + 5ms, 1);
  int rearmed = 0;
  std::vector<std::uint64_t> fired;
  auto on_fire = [&](std::uint64_t payload) {
    fired.push_back(payload);
    if (payload == 1) {
      CHECK(wheel.cancel(victim));
      // Re-arm for "now" each time: one more tick each, not a spin.
      wheel.schedule(kStart, 2);
    }
    if (payload == 2 && ++rearmed < 3) wheel.schedule(kStart, 2);
  };
  wheel.advance(kStart + 5ms, on_fire);
  CHECK(fired == Fired{1});  // the re-armed timer waits for the next tick
  wheel.advance(kStart + 6ms, on_fire);
  wheel.advance(kStart + 20ms, on_fire);
  CHECK(fired == Fired{1, 2, 2, 2});
  CHECK(wheel.empty());
}

TEST_CASE("timer_wheel: a periodic timer re-armed from its callback",
          "[timer_wheel]") {
  TimerWheel wheel = make();
  std::vector<TimePoint> runs;
  TimePoint next = kStart + 250ms;
  wheel.schedule(next, 0);
  for (int second = 1; second <= 3; ++second) {
    wheel.advance(kStart + std::chrono::seconds(second), [&](std::uint64_t) {
      runs.push_back(next);
      next += 250ms;
      wheel.schedule(next, 0);
    });
  }
  CHECK(runs.size() == 12);
  CHECK(runs.back() == kStart + 3s);
}

TEST_CASE("timer_wheel: a clock at either end of its range", "[timer_wheel]") {
  TimerWheel wheel = make(1ns, TimePoint::min());
  wheel.schedule(TimePoint::max(), 1);
  wheel.schedule(TimePoint::min(), 2);
  CHECK(advance(wheel, TimePoint::min()) == Fired{2});
  CHECK(wheel.next_wake().has_value());
  // (The last two ticks of the range are one: tick + 1 must not wrap.)
  CHECK(advance(wheel, TimePoint::max() - 2ns).empty());
  CHECK(advance(wheel, TimePoint::max()) == Fired{1});
}

TEST_CASE("timer_wheel: a tick out of range is InvalidArgument",
          "[timer_wheel]") {
  for (const Duration tick : {Duration(0), Duration(-1), Duration(2h)}) {
    auto wheel = TimerWheel::Create({.tick = tick}, kStart);
    REQUIRE(wheel.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(wheel.status().message()),
               Catch::Contains("use more than 0 and at most 1 hour"));
  }
}

}  // namespace
