// Priorities through the bus (PublishOptions::priority, exec/priority_lanes):
// order and the starvation bound on a manual bus, a class of its own
// capacity, bad input, keys, shutdown, and a thread pool saturated by a
// high-priority chain that must not starve low events.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/testing/recording_sinks.hpp"

namespace fnbus_priority_test {

using fnbus::BusConfig;
using fnbus::BusStats;
using fnbus::DeadLetterReason;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::OverflowPolicy;
using fnbus::Priority;
using fnbus::PriorityLanes;
using fnbus::PublishOptions;
using fnbus::ShutdownMode;
using fnbus::testing::DeadLetterRecorder;
using fnbus::testing_support::check_final_stats;
using fnbus::testing_support::contains;
using fnbus::testing_support::longest_wait;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::message_of;

struct Payment {
  static constexpr std::string_view kEventName = "prio.Payment";
  int id = 0;
};
struct Order {
  static constexpr std::string_view kEventName = "prio.Order";
  int id = 0;
};
struct Analytics {
  static constexpr std::string_view kEventName = "prio.Analytics";
  int id = 0;
};

const PublishOptions kHigh{.priority = Priority::kHigh};
const PublishOptions kLow{.priority = Priority::kLow};

// Which event types ran, in order: 'P'ayment, 'O'rder, 'A'nalytics.
struct Trail {
  std::vector<char> ran;
  fnbus::Subscription payments, orders, analytics;
  explicit Trail(EventBus& bus)
      : payments(bus.subscribe<Payment>(
            [this](const Payment&) { ran.push_back('P'); })),
        orders(
            bus.subscribe<Order>([this](const Order&) { ran.push_back('O'); })),
        analytics(bus.subscribe<Analytics>(
            [this](const Analytics&) { ran.push_back('A'); })) {}
};

TEST_CASE("bus priorities: a payment goes before the analytics backlog",
          "[priorities]") {
  auto bus = make_bus({.execution = Execution::kManual});
  Trail trail(*bus);
  for (int i = 0; i < 100; ++i) {
    REQUIRE(bus->publish(Analytics{i}, kLow).ok());
  }
  REQUIRE(bus->publish(Order{1}).ok());
  REQUIRE(bus->publish(Payment{1}, kHigh).ok());
  CHECK(bus->stats().queue_depth == 102);
  REQUIRE(bus->run_one());
  REQUIRE(bus->run_one());
  CHECK(trail.ran == std::vector<char>{'P', 'O'});
  CHECK(bus->run_until_idle() == 100);
  REQUIRE(bus->shutdown().ok());
  CHECK(bus->stats().delivered == 102);
  check_final_stats(bus->stats());
}

TEST_CASE(
    "bus priorities: saturating high events delay the others within "
    "the documented bound",
    "[priorities]") {
  auto bus = make_bus({.execution = Execution::kManual});
  Trail trail(*bus);
  for (int i = 0; i < 20; ++i) REQUIRE(bus->publish(Analytics{i}, kLow).ok());
  for (int i = 0; i < 40; ++i) REQUIRE(bus->publish(Order{i}).ok());
  for (int i = 0; i < 2000; ++i) REQUIRE(bus->publish(Payment{i}, kHigh).ok());
  CHECK(bus->run_until_idle() == 2060);
  REQUIRE(trail.ran.size() == 2060);
  CHECK(longest_wait(trail.ran, 'O') <= PriorityLanes<int>::kNormalBound);  // 8
  CHECK(longest_wait(trail.ran, 'A') <= PriorityLanes<int>::kLowBound);  // 16
  // High still gets most: 12 of the first 16.
  CHECK(std::count(trail.ran.begin(), trail.ran.begin() + 16, 'P') == 12);
  REQUIRE(bus->shutdown().ok());
  check_final_stats(bus->stats());
}

TEST_CASE("bus priorities: each class has queue_capacity slots of its own",
          "[priorities]") {
  auto bus = make_bus({.queue_capacity = 4,
                       .overflow = OverflowPolicy::kReject,
                       .execution = Execution::kManual});
  Trail trail(*bus);
  for (int i = 0; i < 4; ++i) REQUIRE(bus->publish(Analytics{i}, kLow).ok());
  const absl::Status full = bus->publish(Analytics{4}, kLow);
  CHECK(full.code() == absl::StatusCode::kResourceExhausted);
  // A full low class refuses no payment and no order.
  for (int i = 0; i < 4; ++i) REQUIRE(bus->publish(Payment{i}, kHigh).ok());
  for (int i = 0; i < 4; ++i) REQUIRE(bus->publish(Order{i}).ok());
  CHECK(bus->stats().queue_depth == 12);
  CHECK(bus->stats().rejected == 1);
  CHECK(bus->run_until_idle() == 12);
  REQUIRE(bus->shutdown().ok());
  check_final_stats(bus->stats());
}

TEST_CASE("bus priorities: an unknown priority is refused with a clear status",
          "[priorities]") {
  auto bus = make_bus({.execution = Execution::kManual});
  Trail trail(*bus);
  const absl::Status bad =
      bus->publish(Payment{1}, {.priority = static_cast<Priority>(7)});
  CHECK(bad.code() == absl::StatusCode::kInvalidArgument);
  CHECK(contains(message_of(bad), "use Priority::kHigh, kNormal or kLow"));
  CHECK(bus->stats().rejected == 1);
  CHECK(bus->stats().queue_depth == 0);
  // And a timer refuses it when it is set, not when it fires.
  auto timer = bus->publish_after(std::chrono::seconds(1), Payment{2},
                                  {.priority = static_cast<Priority>(3)});
  CHECK(timer.status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("bus priorities: one key's events keep publish order across classes",
          "[priorities][strands]") {
  auto bus = make_bus({.execution = Execution::kManual});
  std::vector<int> ran;
  auto sub =
      bus->subscribe<Order>([&](const Order& o) { ran.push_back(o.id); });
  REQUIRE(bus->publish(Order{1}, {.key = 7, .priority = Priority::kLow}).ok());
  REQUIRE(bus->publish(Order{2}, {.key = 7, .priority = Priority::kHigh}).ok());
  REQUIRE(bus->publish(Order{3}, {.key = 8, .priority = Priority::kHigh}).ok());
  CHECK(bus->run_until_idle() == 3);
  // Key 7's high turn ran first, and ran key 7's oldest event.
  CHECK(ran == std::vector<int>{1, 3, 2});
  REQUIRE(bus->shutdown().ok());
  check_final_stats(bus->stats());
}

TEST_CASE("bus priorities: shutdown drains or dead-letters every class",
          "[priorities]") {
  const ShutdownMode mode =
      GENERATE(ShutdownMode::kDrain, ShutdownMode::kCancelPending);
  DeadLetterRecorder letters;
  auto bus = make_bus(
      {.execution = Execution::kManual, .dead_letter_sink = letters.sink()});
  Trail trail(*bus);
  REQUIRE(bus->publish(Analytics{1}, kLow).ok());
  REQUIRE(bus->publish(Order{1}).ok());
  REQUIRE(bus->publish(Payment{1}, kHigh).ok());
  REQUIRE(bus->shutdown(mode).ok());
  if (mode == ShutdownMode::kDrain) {
    CHECK(trail.ran == std::vector<char>{'P', 'O', 'A'});
    CHECK(letters.size() == 0);
  } else {
    CHECK(trail.ran.empty());
    REQUIRE(letters.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
      CHECK(letters.at(i).reason == DeadLetterReason::kCancelledAtShutdown);
    }
  }
  check_final_stats(bus->stats());
}

// A chain of payments keeps the high class busy on a thread pool (each
// payment publishes two more until the budget is spent); the low events
// published before it must all be handled early in the chain, within the
// bound: each worker takes a waiting low event at least once in every
// kLowBound events it takes.
TEST_CASE(
    "bus priorities: a saturating high chain on a pool worker does not "
    "starve low events",
    "[priorities][stress]") {
  constexpr int kLowEvents = 10;
  constexpr int kChain = 20000;
  // One worker: with two, the worker that took the last low event can be
  // descheduled before its handler counts it while the other runs
  // payments, which makes the count below the machine's, not the bus's.
  constexpr int kWorkers = 1;
  auto bus = make_bus({.queue_capacity = 65536, .workers = kWorkers});
  std::atomic<int> budget{kChain};
  std::atomic<int> payments{0};
  std::atomic<int> lows{0};
  std::atomic<int> payments_at_last_low{-1};
  std::atomic<bool> start{false};
  auto pay = bus->subscribe<Payment>([&](const Payment& p) {
    payments.fetch_add(1);
    for (int i = 0; i < 2; ++i) {
      if (budget.fetch_sub(1) > 0) (void)bus->publish(Payment{p.id + 1}, kHigh);
    }
  });
  auto low = bus->subscribe<Analytics>([&](const Analytics&) {
    if (lows.fetch_add(1) + 1 == kLowEvents) {
      payments_at_last_low.store(payments.load());
    }
  });
  // Hold the workers until everything is queued: the low events wait
  // behind a high class that is never empty.
  auto gate = bus->subscribe<Order>([&](const Order&) {
    while (!start.load()) std::this_thread::yield();
  });
  for (int i = 0; i < kWorkers; ++i) REQUIRE(bus->publish(Order{i}).ok());
  for (int i = 0; i < kLowEvents; ++i) {
    REQUIRE(bus->publish(Analytics{i}, kLow).ok());
  }
  for (int i = 0; i < 64; ++i) {
    REQUIRE(bus->publish(Payment{0}, kHigh).ok());
  }
  start = true;
  REQUIRE(bus->shutdown().ok());
  CHECK(lows.load() == kLowEvents);
  CHECK(payments.load() == 64 + kChain);
  // At most kLowBound takes per low event per worker came before the last.
  const int bound =
      kWorkers * kLowEvents * static_cast<int>(PriorityLanes<int>::kLowBound);
  CHECK(payments_at_last_low.load() >= 0);
  CHECK(payments_at_last_low.load() <= bound);
  check_final_stats(bus->stats());
}

}  // namespace fnbus_priority_test
