// Batch functions on the bus (EventBus::subscribe_batch): size and age
// cuts, partial failures retrying only the failed items, items out of
// retries dead-lettered, shutdown flushing (kDrain) or dead-lettering
// (kCancelPending) a waiting batch, cancel, bad options, metrics, and a
// bounded many-thread run. Deterministic but the last: a ManualClock and
// Execution::kManual.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../support/bus_support.hpp"
#include "absl/status/status.h"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/testing/manual_clock.hpp"
#include "fnbus/testing/recording_sinks.hpp"

namespace fnbus_bus_batches_test {

using fnbus::BatchOptions;
using fnbus::BatchResult;
using fnbus::DeadLetterReason;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::FunctionOptions;
using fnbus::ShutdownMode;
using fnbus::resilience::Jitter;
using fnbus::resilience::RetryOptions;
using fnbus::testing::DeadLetterRecorder;
using fnbus::testing::ErrorRecorder;
using fnbus::testing::ManualClock;
using fnbus::testing_support::check_final_stats;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::message_of;
using namespace std::chrono_literals;

struct Order {
  int id = 0;
};

using Ids = std::vector<int>;

// Retries without jitter: 100 ms, 200 ms, 400 ms...
RetryOptions fixed_retries(std::uint32_t max_attempts) {
  return {.max_attempts = max_attempts,
          .backoff = {.initial = 100ms,
                      .multiplier = 2.0,
                      .max = 10s,
                      .jitter = Jitter::kNone}};
}

// A manual bus on a ManualClock whose batch handler records each call's
// ids and attempt, and fails the items `fails` picks.
struct BatchBus {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  DeadLetterRecorder dead_letters;
  ErrorRecorder errors;
  std::unique_ptr<EventBus> bus;
  std::vector<Ids> calls;               // each call's ids
  std::vector<std::uint32_t> attempts;  // each call's attempt
  std::function<bool(int id, std::uint32_t attempt)> fails = {};

  explicit BatchBus(Execution execution = Execution::kManual) {
    dead_letters.keep<Order>();
    bus = make_bus({.execution = execution,
                    .clock = clock,
                    .error_sink = errors.sink(),
                    .dead_letter_sink = dead_letters.sink()});
  }

  absl::StatusOr<fnbus::Subscription> subscribe(BatchOptions batch,
                                                FunctionOptions options = {}) {
    options.name = "store_orders";
    return bus->subscribe_batch<Order>(
        [this](std::span<const Order> orders, BatchResult& result) {
          Ids ids;
          for (std::size_t i = 0; i < orders.size(); ++i) {
            ids.push_back(orders[i].id);
            if (fails && fails(orders[i].id, result.attempt())) {
              result.fail(i, absl::UnavailableError("db busy"));
            }
          }
          calls.push_back(ids);
          attempts.push_back(result.attempt());
        },
        batch, std::move(options));
  }
  void publish(int first, int last) {
    for (int id = first; id <= last; ++id) {
      REQUIRE(bus->publish(Order{id}).ok());
    }
    bus->run_until_idle();
  }
  // Advances the clock and runs what came due.
  void advance(fnbus::Duration step) {
    clock->advance(step);
    bus->run_due_timers();
    bus->run_until_idle();
  }
  [[nodiscard]] std::uint64_t dispatched_orders() const {
    const fnbus::metrics::MetricsSnapshot m = bus->metrics();
    const auto* type = m.find_event(fnbus::event_type_name<Order>());
    return type != nullptr ? type->dispatched : 0;
  }
};

TEST_CASE("bus batches: a batch is cut when max_items events came",
          "[bus_batches]") {
  BatchBus t;
  auto sub = t.subscribe({.max_items = 3, .max_wait = 1s});
  REQUIRE(sub.ok());
  t.publish(1, 7);
  CHECK(t.calls == std::vector<Ids>{{1, 2, 3}, {4, 5, 6}});
  CHECK(t.attempts == std::vector<std::uint32_t>{1, 1});
}

TEST_CASE("bus batches: a batch is cut max_wait after its first event",
          "[bus_batches]") {
  BatchBus t;
  auto sub = t.subscribe({.max_items = 10, .max_wait = 100ms});
  REQUIRE(sub.ok());
  t.publish(1, 2);
  t.advance(50ms);
  t.publish(3, 3);
  t.advance(49ms);
  CHECK(t.calls.empty());  // 99 ms after the first
  t.advance(1ms);
  CHECK(t.calls == std::vector<Ids>{{1, 2, 3}});
  t.publish(4, 4);  // a new batch, its own 100 ms
  t.advance(99ms);
  CHECK(t.calls.size() == 1);
  t.advance(1ms);
  CHECK(t.calls == std::vector<Ids>{{1, 2, 3}, {4}});
  CHECK(t.dead_letters.empty());
}

TEST_CASE("bus batches: an inline bus runs size cuts, age cuts and retries",
          "[bus_batches]") {
  BatchBus t(Execution::kInline);
  t.fails = [](int id, std::uint32_t attempt) {
    return id == 1 && attempt == 1;
  };
  auto sub = t.subscribe({.max_items = 2, .max_wait = 50ms},
                         {.retry = fixed_retries(2)});
  REQUIRE(sub.ok());
  REQUIRE(t.bus->publish(Order{1}).ok());
  REQUIRE(t.bus->publish(Order{2}).ok());  // fills the batch: runs at once
  REQUIRE(t.bus->publish(Order{3}).ok());
  CHECK(t.calls == std::vector<Ids>{{1, 2}});
  t.clock->advance(50ms);
  t.bus->run_due_timers();  // {3}'s age cut
  CHECK(t.calls == std::vector<Ids>{{1, 2}, {3}});
  t.clock->advance(50ms);
  t.bus->run_due_timers();  // 1's retry (100 ms after its failure)
  CHECK(t.calls == std::vector<Ids>{{1, 2}, {3}, {1}});
  CHECK(t.attempts == std::vector<std::uint32_t>{1, 1, 2});
  REQUIRE(t.bus->shutdown().ok());
  CHECK(t.dead_letters.empty());
  check_final_stats(t.bus->stats());
}

TEST_CASE("bus batches: only the failed items are retried, after the backoff",
          "[bus_batches]") {
  BatchBus t;
  // Odd ids fail their first call; 3 fails its second too.
  t.fails = [](int id, std::uint32_t attempt) {
    return (id % 2 == 1 && attempt == 1) || (id == 3 && attempt == 2);
  };
  auto sub = t.subscribe({.max_items = 4, .max_wait = 1s},
                         {.retry = fixed_retries(3)});
  REQUIRE(sub.ok());
  t.publish(1, 4);
  CHECK(t.calls == std::vector<Ids>{{1, 2, 3, 4}});
  t.advance(99ms);
  CHECK(t.calls.size() == 1);  // the backoff is 100 ms
  t.advance(1ms);
  CHECK(t.calls == std::vector<Ids>{{1, 2, 3, 4}, {1, 3}});
  t.advance(200ms);
  CHECK(t.calls == std::vector<Ids>{{1, 2, 3, 4}, {1, 3}, {3}});
  CHECK(t.attempts == std::vector<std::uint32_t>{1, 2, 3});
  CHECK(t.dead_letters.empty());
  CHECK(t.errors.empty());  // no final failure
  // Each order counted as dispatched once, retries or not.
  CHECK(t.dispatched_orders() == 4);
}

TEST_CASE("bus batches: an item out of retries is reported and dead-lettered",
          "[bus_batches]") {
  BatchBus t;
  t.fails = [](int id, std::uint32_t) { return id == 2; };
  auto sub = t.subscribe({.max_items = 3, .max_wait = 1s},
                         {.retry = fixed_retries(2)});
  REQUIRE(sub.ok());
  t.publish(1, 3);
  t.advance(100ms);
  CHECK(t.calls == std::vector<Ids>{{1, 2, 3}, {2}});
  REQUIRE(t.dead_letters.size() == 1);
  const auto& letter = t.dead_letters.last();
  CHECK(letter.reason == DeadLetterReason::kRetriesExhausted);
  CHECK(letter.function == "store_orders");
  CHECK(letter.attempts == 2);
  CHECK(letter.last_error.code() == absl::StatusCode::kUnavailable);
  REQUIRE(letter.get<Order>() != nullptr);
  CHECK(letter.get<Order>()->id == 2);
  REQUIRE(t.errors.size() == 1);
  CHECK(t.errors.last().function_name == "store_orders");
  CHECK(t.errors.last().code == absl::StatusCode::kUnavailable);
  const fnbus::metrics::MetricsSnapshot m = t.bus->metrics();
  const auto* f =
      m.find_function(fnbus::event_type_name<Order>(), "store_orders");
  REQUIRE(f != nullptr);
  CHECK(f->dead_letter_reasons[DeadLetterReason::kRetriesExhausted] == 1);
}

TEST_CASE("bus batches: a handler that throws fails the whole batch",
          "[bus_batches]") {
  BatchBus t;
  std::vector<Ids> calls;
  auto sub = t.bus->subscribe_batch<Order>(
      [&](std::span<const Order> orders, BatchResult& result) {
        Ids ids;
        for (const Order& o : orders) ids.push_back(o.id);
        calls.push_back(ids);
        if (result.attempt() == 1) throw std::runtime_error("disk full");
        return absl::OkStatus();
      },
      {.max_items = 2, .max_wait = 1s},
      {.name = "thrower", .retry = fixed_retries(2)});
  REQUIRE(sub.ok());
  t.publish(1, 2);
  t.advance(100ms);
  CHECK(calls == std::vector<Ids>{{1, 2}, {1, 2}});
  CHECK(t.dead_letters.empty());
}

TEST_CASE("bus batches: without retry a failed item is reported once",
          "[bus_batches]") {
  BatchBus t;
  t.fails = [](int id, std::uint32_t) { return id == 1; };
  auto sub = t.subscribe({.max_items = 2, .max_wait = 1s});
  REQUIRE(sub.ok());
  t.publish(1, 2);
  t.advance(10s);
  CHECK(t.calls == std::vector<Ids>{{1, 2}});
  CHECK(t.errors.size() == 1);
  CHECK(t.dead_letters.empty());  // as any function without retries
}

TEST_CASE("bus batches: a non-retryable failure is dead-lettered at once",
          "[bus_batches]") {
  BatchBus t;
  RetryOptions retry = fixed_retries(5);
  retry.retry_if =
      fnbus::resilience::retry_on_codes({absl::StatusCode::kDeadlineExceeded});
  t.fails = [](int id, std::uint32_t) { return id == 1; };
  auto sub = t.subscribe({.max_items = 1, .max_wait = 1s}, {.retry = retry});
  REQUIRE(sub.ok());
  t.publish(1, 1);
  t.advance(10s);
  CHECK(t.calls.size() == 1);
  REQUIRE(t.dead_letters.size() == 1);
  CHECK(t.dead_letters.last().reason == DeadLetterReason::kNotRetryable);
  CHECK(t.dead_letters.last().attempts == 1);
}

TEST_CASE("bus batches: shutdown kDrain runs a batch still waiting",
          "[bus_batches]") {
  BatchBus t;
  auto sub = t.subscribe({.max_items = 10, .max_wait = 1h});
  REQUIRE(sub.ok());
  t.publish(1, 3);
  REQUIRE(t.calls.empty());
  REQUIRE(t.bus->shutdown(ShutdownMode::kDrain).ok());
  CHECK(t.calls == std::vector<Ids>{{1, 2, 3}});
  CHECK(t.dead_letters.empty());
  check_final_stats(t.bus->stats());
}

TEST_CASE("bus batches: shutdown kCancelPending dead-letters a waiting batch",
          "[bus_batches]") {
  BatchBus t;
  auto sub = t.subscribe({.max_items = 10, .max_wait = 1h});
  REQUIRE(sub.ok());
  t.publish(1, 3);
  REQUIRE(t.bus->shutdown(ShutdownMode::kCancelPending).ok());
  CHECK(t.calls.empty());
  REQUIRE(t.dead_letters.size() == 3);
  Ids ids;
  for (const auto& letter : t.dead_letters.records()) {
    CHECK(letter.reason == DeadLetterReason::kCancelledAtShutdown);
    CHECK(letter.function == "store_orders");
    CHECK(letter.attempts == 0);
    REQUIRE(letter.get<Order>() != nullptr);
    ids.push_back(letter.get<Order>()->id);
  }
  CHECK(ids == Ids{1, 2, 3});
  check_final_stats(t.bus->stats());
}

TEST_CASE("bus batches: a retry waiting at shutdown is dead-lettered",
          "[bus_batches]") {
  BatchBus t;
  t.fails = [](int id, std::uint32_t) { return id == 2; };
  auto sub = t.subscribe({.max_items = 2, .max_wait = 1s},
                         {.retry = fixed_retries(3)});
  REQUIRE(sub.ok());
  t.publish(1, 2);
  REQUIRE(t.bus->shutdown(ShutdownMode::kDrain).ok());
  CHECK(t.calls == std::vector<Ids>{{1, 2}});
  REQUIRE(t.dead_letters.size() == 1);
  CHECK(t.dead_letters.last().reason ==
        DeadLetterReason::kRetryPendingAtShutdown);
  CHECK(t.dead_letters.last().attempts == 1);
  CHECK(t.dead_letters.last().get<Order>()->id == 2);
  check_final_stats(t.bus->stats());
}

TEST_CASE(
    "bus batches: a batch waiting when its function is cancelled is "
    "dead-lettered as function gone",
    "[bus_batches]") {
  BatchBus t;
  fnbus::testing::UnhandledRecorder unhandled;
  t.bus->set_unhandled_sink(unhandled.sink());
  auto sub = t.subscribe({.max_items = 10, .max_wait = 100ms});
  REQUIRE(sub.ok());
  t.publish(1, 2);
  sub->cancel();
  t.advance(100ms);
  CHECK(t.calls.empty());
  REQUIRE(t.dead_letters.size() == 2);
  CHECK(t.dead_letters.last().reason == DeadLetterReason::kFunctionGone);
  CHECK(unhandled.empty());  // the internal delivery is not reported
}

TEST_CASE("bus batches: two batch functions of one type run their own batches",
          "[bus_batches]") {
  BatchBus t;
  std::vector<Ids> other;
  auto sub = t.subscribe({.max_items = 2, .max_wait = 100ms});
  auto second = t.bus->subscribe_batch<Order>(
      [&](std::span<const Order> orders, BatchResult&) {
        Ids ids;
        for (const Order& o : orders) ids.push_back(o.id);
        other.push_back(ids);
      },
      {.max_items = 3, .max_wait = 100ms}, {.name = "audit"});
  REQUIRE(sub.ok());
  REQUIRE(second.ok());
  t.publish(1, 4);
  t.advance(100ms);
  CHECK(t.calls == std::vector<Ids>{{1, 2}, {3, 4}});
  CHECK(other == std::vector<Ids>{{1, 2, 3}, {4}});
}

TEST_CASE("bus batches: when filters events before they join a batch",
          "[bus_batches]") {
  BatchBus t;
  auto sub =
      t.subscribe({.max_items = 2, .max_wait = 1s},
                  {.when = [](const Order& o) { return o.id % 2 == 0; }});
  REQUIRE(sub.ok());
  t.publish(1, 4);
  CHECK(t.calls == std::vector<Ids>{{2, 4}});
}

TEST_CASE("bus batches: bad options are InvalidArgument naming each one",
          "[bus_batches]") {
  BatchBus t;
  auto bad = t.subscribe({.max_items = 0, .max_wait = -1s},
                         {.deadline = 1s, .max_concurrency = 2});
  REQUIRE(bad.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message = message_of(bad.status());
  CHECK_THAT(message, Catch::Contains("max_items is 0"));
  CHECK_THAT(message, Catch::Contains("max_wait is"));
  CHECK_THAT(message, Catch::Contains("FunctionOptions::deadline is not"));
  CHECK_THAT(message, Catch::Contains("FunctionOptions::max_concurrency"));
  auto bad_retry = t.subscribe({}, {.retry = RetryOptions{.max_attempts = 0}});
  REQUIRE(bad_retry.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(message_of(bad_retry.status()),
             Catch::Contains("max_attempts is 0"));
}

TEST_CASE("bus batches: an index out of range fails the whole batch",
          "[bus_batches]") {
  BatchBus t;
  auto sub = t.bus->subscribe_batch<Order>(
      [](std::span<const Order> orders, BatchResult& result) {
        result.fail(orders.size());
      },
      {.max_items = 2, .max_wait = 1s}, {.name = "off_by_one"});
  REQUIRE(sub.ok());
  t.publish(1, 2);
  REQUIRE(t.errors.size() == 2);
  CHECK(t.errors.last().code == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(t.errors.last().message,
             Catch::Contains("fail(2) on a batch of 2 items"));
}

TEST_CASE("bus batches: many publishers on a thread pool lose no item",
          "[bus_batches]") {
  constexpr int kPublishers = 4;
  constexpr int kPerPublisher = 2000;
  DeadLetterRecorder dead_letters;
  dead_letters.keep<Order>();
  auto bus = make_bus({.queue_capacity = 1024,
                       .workers = 3,
                       .overflow = fnbus::OverflowPolicy::kBlock,
                       .block_timeout = std::chrono::seconds(30),
                       .dead_letter_sink = dead_letters.sink()});
  std::atomic<std::int64_t> handled_sum{0};
  std::atomic<std::int64_t> handled{0};
  std::atomic<bool> oversized{false};
  RetryOptions retry{.max_attempts = 2,
                     .backoff = {.initial = 1ms, .jitter = Jitter::kNone}};
  auto sub = bus->subscribe_batch<Order>(
      [&](std::span<const Order> orders, BatchResult& result) {
        if (orders.size() > 16)
          oversized.store(true, std::memory_order_relaxed);
        for (std::size_t i = 0; i < orders.size(); ++i) {
          // Every 7th order fails its first call.
          if (orders[i].id % 7 == 0 && result.attempt() == 1) {
            result.fail(i);
            continue;
          }
          // relaxed: totals read after shutdown() joined the workers.
          handled_sum.fetch_add(orders[i].id, std::memory_order_relaxed);
          handled.fetch_add(1, std::memory_order_relaxed);
        }
      },
      {.max_items = 16, .max_wait = 1ms}, {.name = "sum", .retry = retry});
  REQUIRE(sub.ok());
  {
    std::vector<std::jthread> publishers;
    std::atomic<int> refused{0};
    for (int p = 0; p < kPublishers; ++p) {
      publishers.emplace_back([&, p] {
        for (int i = 1; i <= kPerPublisher; ++i) {
          if (!bus->publish(Order{p * kPerPublisher + i}).ok()) {
            refused.fetch_add(1, std::memory_order_relaxed);
          }
        }
      });
    }
    publishers.clear();  // joins
    REQUIRE(refused.load() == 0);
  }
  REQUIRE(bus->shutdown(ShutdownMode::kDrain).ok());
  std::int64_t lost_sum = 0;
  for (const auto& letter : dead_letters.records()) {
    REQUIRE(letter.get<Order>() != nullptr);
    lost_sum += letter.get<Order>()->id;
  }
  constexpr std::int64_t kItems = std::int64_t{kPublishers} * kPerPublisher;
  CHECK(handled.load() + static_cast<std::int64_t>(dead_letters.size()) ==
        kItems);
  CHECK(handled_sum.load() + lost_sum == kItems * (kItems + 1) / 2);
  CHECK_FALSE(oversized.load());
  check_final_stats(bus->stats());
}

}  // namespace fnbus_bus_batches_test
