// PublishOptions::on_settled (fnbus/settlement.hpp): called once per
// accepted event, after the last call of its last function (retries
// included), with the verdict a bridge acknowledges by -- on a manual bus
// driven by a ManualClock, and once across a thread pool.

#include "fnbus/settlement.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/testing/manual_clock.hpp"
#include "fnbus/testing/recording_sinks.hpp"

namespace fnbus_settlement_test {

using fnbus::Context;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::FunctionOptions;
using fnbus::OverflowPolicy;
using fnbus::PublishOptions;
using fnbus::Settlement;
using fnbus::ShutdownMode;
using fnbus::Verdict;
using fnbus::resilience::Jitter;
using fnbus::resilience::RetryOptions;
using fnbus::testing::DeadLetterRecorder;
using fnbus::testing::ManualClock;
using fnbus::testing_support::make_bus;
using namespace std::chrono_literals;

struct Order {
  static constexpr std::string_view kEventName = "settle.Order";
  int id = 0;
};

RetryOptions retries(std::uint32_t max_attempts) {
  return {.max_attempts = max_attempts,
          .backoff = {.initial = 100ms,
                      .multiplier = 1.0,
                      .max = 1s,
                      .jitter = Jitter::kNone}};
}

// A manual bus on a ManualClock, and the settlements it reported.
struct SettleBus {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  DeadLetterRecorder dead_letters;
  std::unique_ptr<EventBus> bus;
  std::vector<Settlement> settled;

  explicit SettleBus(std::size_t queue_capacity = 64) {
    dead_letters.keep<Order>();
    bus = make_bus({.queue_capacity = queue_capacity,
                    .execution = Execution::kManual,
                    .clock = clock,
                    .dead_letter_sink = dead_letters.sink()});
  }
  PublishOptions options() {
    return {
        .on_settled = [this](const Settlement& s) { settled.push_back(s); }};
  }
  absl::Status publish(int id) { return bus->publish(Order{id}, options()); }
  void advance(fnbus::Duration step) {
    clock->advance(step);
    bus->run_due_timers();
    bus->run_until_idle();
  }
  [[nodiscard]] Verdict only_verdict() const {
    REQUIRE(settled.size() == 1);
    return settled.front().verdict;
  }
};

TEST_CASE("on_settled: every function succeeded - done, after they ran",
          "[settlement]") {
  SettleBus t;
  int ran = 0;
  auto a = t.bus->subscribe<Order>([&](const Order&) { ++ran; });
  auto b = t.bus->subscribe<Order>([&](const Order&) { ++ran; });
  REQUIRE(t.publish(1).ok());
  CHECK(t.settled.empty());  // queued, not yet run
  t.bus->run_until_idle();
  CHECK(ran == 2);
  CHECK(t.only_verdict() == Verdict::kDone);
  CHECK(t.settled.front().failed == 0);
}

TEST_CASE("on_settled: a function without retries fails - failed",
          "[settlement]") {
  SettleBus t;
  auto ok = t.bus->subscribe<Order>([](const Order&) {});
  auto bad = t.bus->subscribe<Order>(
      [](const Order&) { return absl::UnavailableError("down"); });
  auto throws = t.bus->subscribe<Order>(
      [](const Order&) { throw std::runtime_error("boom"); });
  REQUIRE(t.publish(1).ok());
  t.bus->run_until_idle();
  CHECK(t.only_verdict() == Verdict::kFailed);
  CHECK(t.settled.front().failed == 2);
}

TEST_CASE("on_settled: waits for a retry, and settles by its outcome",
          "[settlement]") {
  SettleBus t;
  int failures_left = 1;
  auto sub = t.bus->subscribe<Order>(
      [&](const Order&) {
        return failures_left-- > 0 ? absl::UnavailableError("once")
                                   : absl::OkStatus();
      },
      FunctionOptions{.retry = retries(3)});
  REQUIRE(t.publish(1).ok());
  t.bus->run_until_idle();
  CHECK(t.settled.empty());  // the retry holds it
  t.advance(100ms);
  CHECK(t.only_verdict() == Verdict::kDone);
}

TEST_CASE("on_settled: retries exhausted - dead-lettered", "[settlement]") {
  SettleBus t;
  auto sub = t.bus->subscribe<Order>(
      [](const Order&) { return absl::UnavailableError("always"); },
      FunctionOptions{.name = "charge", .retry = retries(2)});
  REQUIRE(t.publish(7).ok());
  t.bus->run_until_idle();
  t.advance(100ms);
  CHECK(t.only_verdict() == Verdict::kDeadLettered);
  CHECK(t.settled.front().dead_lettered == 1);
  CHECK(t.dead_letters.size() == 1);
}

TEST_CASE("on_settled: a filtered event is done, an unhandled one is not",
          "[settlement]") {
  SettleBus t;
  REQUIRE(t.publish(1).ok());  // nobody subscribes yet
  t.bus->run_until_idle();
  CHECK(t.only_verdict() == Verdict::kUnhandled);
  t.settled.clear();
  auto sub = t.bus->subscribe<Order>(
      [](const Order&) { FAIL("filtered out"); },
      FunctionOptions{.when = [](const Order& o) { return o.id > 10; }});
  REQUIRE(t.publish(2).ok());
  t.bus->run_until_idle();
  CHECK(t.only_verdict() == Verdict::kDone);
}

TEST_CASE("on_settled: a refused publish never settles", "[settlement]") {
  SettleBus t(/*queue_capacity=*/2);
  auto sub = t.bus->subscribe<Order>([](const Order&) {});
  REQUIRE(t.publish(1).ok());
  REQUIRE(t.publish(2).ok());
  PublishOptions refused = t.options();
  refused.overflow = OverflowPolicy::kReject;
  CHECK_FALSE(t.bus->publish(Order{3}, refused).ok());  // the queue is full
  t.bus->run_until_idle();
  REQUIRE(t.settled.size() == 2);  // events 1 and 2 only
  CHECK(t.settled[1].verdict == Verdict::kDone);
}

TEST_CASE("on_settled: shutdown abandons queued events and waiting retries",
          "[settlement]") {
  SettleBus t;
  auto sub = t.bus->subscribe<Order>(
      [](const Order& o) {
        return o.id == 1 ? absl::UnavailableError("retry me")
                         : absl::OkStatus();
      },
      FunctionOptions{.retry = retries(5)});
  REQUIRE(t.publish(1).ok());
  t.bus->run_until_idle();     // event 1 now waits for its retry
  REQUIRE(t.publish(2).ok());  // event 2 stays queued
  REQUIRE(t.bus->shutdown(ShutdownMode::kCancelPending).ok());
  REQUIRE(t.settled.size() == 2);
  CHECK(t.settled[0].verdict == Verdict::kAbandoned);
  CHECK(t.settled[1].verdict == Verdict::kAbandoned);
}

TEST_CASE("on_settled: keyed events and events that wait for a slot settle",
          "[settlement]") {
  SettleBus t;
  std::vector<int> ran;
  auto sub =
      t.bus->subscribe<Order>([&](const Order& o) { ran.push_back(o.id); },
                              FunctionOptions{.max_concurrency = 1});
  PublishOptions keyed = t.options();
  keyed.key = fnbus::OrderingKey(42);
  REQUIRE(t.bus->publish(Order{1}, keyed).ok());
  REQUIRE(t.bus->publish(Order{2}, keyed).ok());
  t.bus->run_until_idle();
  CHECK(ran == std::vector<int>{1, 2});
  REQUIRE(t.settled.size() == 2);
  CHECK(t.settled[0].verdict == Verdict::kDone);
  CHECK(t.settled[1].verdict == Verdict::kDone);
}

TEST_CASE("on_settled: refused for timers, with what to do instead",
          "[settlement]") {
  SettleBus t;
  auto timer = t.bus->publish_after(1s, Order{1}, t.options());
  REQUIRE_FALSE(timer.ok());
  CHECK(timer.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(fnbus::testing_support::contains(
      fnbus::testing_support::message_of(timer.status()), "on_settled"));
}

TEST_CASE("on_settled: once per event across a thread pool", "[settlement]") {
  constexpr int kEvents = 2000;
  auto bus = make_bus({.queue_capacity = 256, .workers = 2});
  std::atomic<int> calls{0};
  std::atomic<int> done{0};
  std::atomic<int> failed{0};
  auto sub = bus->subscribe<Order>([&](const Order& o) {
    calls.fetch_add(1, std::memory_order_relaxed);
    return o.id % 3 == 0 ? absl::UnavailableError("every third")
                         : absl::OkStatus();
  });
  auto publisher = [&](int first) {
    for (int i = first; i < kEvents; i += 2) {
      REQUIRE(bus->publish(Order{i},
                           {.overflow = OverflowPolicy::kBlock,
                            .on_settled =
                                [&](const Settlement& s) {
                                  (s.verdict == Verdict::kDone ? done : failed)
                                      .fetch_add(1, std::memory_order_relaxed);
                                }})
                  .ok());
    }
  };
  std::thread other(publisher, 1);
  publisher(0);
  other.join();
  REQUIRE(bus->shutdown(ShutdownMode::kDrain).ok());
  CHECK(calls.load() == kEvents);
  CHECK(failed.load() == (kEvents + 2) / 3);
  CHECK(done.load() + failed.load() == kEvents);
}

TEST_CASE("Verdict has a name for each value", "[settlement]") {
  CHECK(fnbus::to_string(Verdict::kAbandoned) == "abandoned");
  CHECK(fnbus::to_string(Verdict::kFailed) == "failed");
  CHECK(fnbus::to_string(Verdict::kUnhandled) == "unhandled");
  CHECK(fnbus::to_string(Verdict::kDeadLettered) == "dead-lettered");
  CHECK(fnbus::to_string(Verdict::kDone) == "done");
}

}  // namespace fnbus_settlement_test
