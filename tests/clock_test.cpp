// Tests of fnbus::SteadyClock. No timing thresholds: the cases check what
// sleep_until returns, and that a stop request ends a sleep that would
// otherwise last an hour (a broken stop fails the bounded wait below instead
// of hanging the test).

#include "fnbus/clock.hpp"

#include <chrono>
#include <future>
#include <memory>
#include <stop_token>
#include <thread>

#include <catch2/catch.hpp>

namespace fnbus_clock_test {

using namespace std::chrono_literals;
using fnbus::SteadyClock;
using fnbus::TimePoint;

TEST_CASE("clock: SteadyClock::now() is monotone and follows steady_clock",
          "[clock]") {
  SteadyClock clock;
  const auto before = std::chrono::steady_clock::now();
  TimePoint previous = clock.now();
  CHECK(previous >= before);
  for (int i = 0; i < 1000; ++i) {
    const TimePoint now = clock.now();
    CHECK(now >= previous);
    previous = now;
  }
  CHECK(std::chrono::steady_clock::now() >= previous);
}

TEST_CASE("clock: SteadyClock::instance() is one object", "[clock]") {
  CHECK(&SteadyClock::instance() == &SteadyClock::instance());
}

TEST_CASE("clock: SteadyClock::sleep_until a past deadline returns true",
          "[clock]") {
  SteadyClock clock;
  std::stop_source stop;
  CHECK(clock.sleep_until(clock.now() - 1s, stop.get_token()));
  CHECK(clock.sleep_until(TimePoint{}, stop.get_token()));
  // A deadline just ahead passes, too.
  const TimePoint soon = clock.now() + 1ms;
  CHECK(clock.sleep_until(soon, stop.get_token()));
  CHECK(clock.now() >= soon);
}

TEST_CASE(
    "clock: a stop requested before SteadyClock::sleep_until returns "
    "false",
    "[clock]") {
  SteadyClock clock;
  std::stop_source stop;
  stop.request_stop();
  CHECK_FALSE(clock.sleep_until(clock.now() + 1h, stop.get_token()));
}

TEST_CASE(
    "clock: a stop request ends a far-future SteadyClock sleep with "
    "false",
    "[clock]") {
  // Shared with the sleeper, which is detached if the stop fails to wake it
  // (so the failure is reported instead of the test hanging for an hour).
  auto clock = std::make_shared<SteadyClock>();
  auto stop = std::make_shared<std::stop_source>();
  std::promise<bool> slept;
  std::future<bool> result = slept.get_future();
  std::thread sleeper([clock, stop, slept = std::move(slept)]() mutable {
    slept.set_value(clock->sleep_until(clock->now() + 1h, stop->get_token()));
  });
  // Whether the sleeper is asleep yet or not, the stop must end its sleep.
  stop->request_stop();
  const bool woke = result.wait_for(10s) == std::future_status::ready;
  if (!woke) {
    sleeper.detach();
    FAIL("a stop request did not end SteadyClock::sleep_until");
  }
  sleeper.join();
  CHECK_FALSE(result.get());
}

TEST_CASE("clock: SteadyClock sleeps on one clock can be stopped one by one",
          "[clock]") {
  auto clock = std::make_shared<SteadyClock>();
  auto first = std::make_shared<std::stop_source>();
  auto second = std::make_shared<std::stop_source>();
  std::promise<bool> first_slept;
  std::promise<bool> second_slept;
  std::future<bool> first_result = first_slept.get_future();
  std::future<bool> second_result = second_slept.get_future();
  std::thread a([clock, first, p = std::move(first_slept)]() mutable {
    p.set_value(clock->sleep_until(clock->now() + 1h, first->get_token()));
  });
  std::thread b([clock, second, p = std::move(second_slept)]() mutable {
    p.set_value(clock->sleep_until(clock->now() + 1h, second->get_token()));
  });

  first->request_stop();
  const bool first_woke =
      first_result.wait_for(10s) == std::future_status::ready;
  // The second sleeper is not woken by the first one's stop. (It may not
  // have started sleeping yet, so this only checks it has not returned.)
  const bool second_still_asleep =
      second_result.wait_for(0s) != std::future_status::ready;
  second->request_stop();
  const bool second_woke =
      second_result.wait_for(10s) == std::future_status::ready;
  if (!first_woke || !second_woke) {
    a.detach();
    b.detach();
    FAIL("a stop request did not end SteadyClock::sleep_until");
  }
  a.join();
  b.join();
  CHECK(second_still_asleep);
  CHECK_FALSE(first_result.get());
  CHECK_FALSE(second_result.get());
}

}  // namespace fnbus_clock_test
