// Retries on the bus (FunctionOptions::retry): backoff on the bus clock,
// the retry reaching its function alone, the final failure dead-lettered
// with its attempts and last error, retry_if, max_event_age, fallback after
// the last call, deadlines and breakers as failures, unsubscribe and
// shutdown while a retry waits, traces and metrics. Deterministic: a
// ManualClock and Execution::kManual.

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../support/bus_support.hpp"
#include "absl/status/status.h"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/resilience/dead_letter_store.hpp"
#include "fnbus/resilience/pipeline.hpp"
#include "fnbus/testing/manual_clock.hpp"
#include "fnbus/testing/recording_sinks.hpp"

namespace fnbus_bus_retries_test {

using fnbus::Context;
using fnbus::DeadLetterReason;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::FunctionOptions;
using fnbus::ShutdownMode;
using fnbus::metrics::FunctionMetrics;
using fnbus::resilience::Jitter;
using fnbus::resilience::RetryOptions;
using fnbus::testing::DeadLetterRecorder;
using fnbus::testing::ErrorRecorder;
using fnbus::testing::ManualClock;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::message_of;
using namespace std::chrono_literals;

struct Charge {
  int order = 0;
};

// Retries without jitter: 100 ms, 200 ms, 400 ms... (a cap of 10 s).
RetryOptions fixed_retries(std::uint32_t max_attempts) {
  return {.max_attempts = max_attempts,
          .backoff = {.initial = 100ms,
                      .multiplier = 2.0,
                      .max = 10s,
                      .jitter = Jitter::kNone}};
}

// A breaker that opens on the first failure and stays open for a minute.
fnbus::resilience::BreakerOptions breaker_opening_at_first_failure() {
  return {.failure_rate = 0.5,
          .minimum_calls = 1,
          .window = 10s,
          .window_buckets = 10,
          .open_for = 1min};
}

// A payment gateway that fails its next `failures` calls.
struct Gateway {
  int failures = 0;
  absl::StatusCode code = absl::StatusCode::kUnavailable;
  std::vector<std::uint32_t> attempts;  // Context::attempt() of each call
  std::vector<int> orders;              // the order of each call

  absl::Status charge(const Charge& charge, Context& context) {
    attempts.push_back(context.attempt());
    orders.push_back(charge.order);
    if (failures > 0) {
      --failures;
      return absl::Status(code, "gateway unavailable");
    }
    return absl::OkStatus();
  }
};

// A manual bus on a ManualClock (1 ms timer tick) recording its dead
// letters and errors.
struct RetryBus {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  DeadLetterRecorder dead_letters;
  ErrorRecorder errors;
  std::unique_ptr<EventBus> bus;
  Gateway gateway;

  RetryBus() {
    dead_letters.keep<Charge>();
    bus = make_bus({.execution = Execution::kManual,
                    .clock = clock,
                    .error_sink = errors.sink(),
                    .dead_letter_sink = dead_letters.sink()});
  }

  fnbus::Subscription subscribe(FunctionOptions options) {
    options.name = "charge_card";
    return bus->subscribe<Charge>(
        [this](const Charge& c, Context& context) {
          return gateway.charge(c, context);
        },
        std::move(options));
  }
  void publish(int order) {
    REQUIRE(bus->publish(Charge{order}).ok());
    bus->run_until_idle();
  }
  // Advances the clock and runs the retries that came due.
  void advance(fnbus::Duration step) {
    clock->advance(step);
    bus->run_due_timers();
    bus->run_until_idle();
  }
  [[nodiscard]] FunctionMetrics function() const {
    const fnbus::metrics::MetricsSnapshot m = bus->metrics();
    const FunctionMetrics* f =
        m.find_function(fnbus::event_type_name<Charge>(), "charge_card");
    REQUIRE(f != nullptr);
    return *f;
  }
};

TEST_CASE("bus retries: a failed call is retried after its backoff",
          "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 2;
  auto sub = t.subscribe({.retry = fixed_retries(4)});
  t.publish(7);
  REQUIRE(t.gateway.attempts.size() == 1);
  CHECK(t.bus->metrics().timers.pending == 1);  // the waiting retry
  t.advance(99ms);
  CHECK(t.gateway.attempts.size() == 1);  // not before its backoff
  t.advance(1ms);
  REQUIRE(t.gateway.attempts.size() == 2);
  t.advance(199ms);
  CHECK(t.gateway.attempts.size() == 2);  // the second wait is 200 ms
  t.advance(1ms);
  REQUIRE(t.gateway.attempts.size() == 3);
  CHECK(t.gateway.attempts == std::vector<std::uint32_t>{1, 2, 3});
  CHECK(t.gateway.orders == std::vector<int>{7, 7, 7});
  t.advance(1h);
  CHECK(t.gateway.attempts.size() == 3);  // succeeded: no more
  const FunctionMetrics f = t.function();
  CHECK(f.delivered == 1);
  CHECK(f.failed == 2);
  CHECK(f.retried == 2);
  CHECK(f.dead_lettered == 0);
  CHECK(t.errors.empty());  // only a final failure is reported
  CHECK(t.dead_letters.empty());
  CHECK(t.bus->metrics().timers.pending == 0);
  REQUIRE(t.bus->shutdown(ShutdownMode::kDrain).ok());
  // Each retry was a queued delivery: published and dispatched.
  fnbus::testing_support::check_final_stats(t.bus->stats());
  CHECK(t.bus->stats().published == 3);
}

TEST_CASE(
    "bus retries: when the attempts run out the event is dead-lettered "
    "with its attempts and last error",
    "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 100;
  int compensations = 0;
  auto sub = t.subscribe(
      {.on_error = [&](const fnbus::HandlerError&) { ++compensations; },
       .retry = fixed_retries(3)});
  t.publish(8);
  t.advance(100ms);
  t.advance(200ms);
  REQUIRE(t.gateway.attempts.size() == 3);
  t.advance(1h);
  CHECK(t.gateway.attempts.size() == 3);
  REQUIRE(t.dead_letters.size() == 1);
  const auto& letter = t.dead_letters.last();
  CHECK(letter.reason == DeadLetterReason::kRetriesExhausted);
  CHECK(letter.function == "charge_card");
  CHECK(letter.attempts == 3);
  CHECK(letter.last_error.code() == absl::StatusCode::kUnavailable);
  REQUIRE(letter.get<Charge>() != nullptr);
  CHECK(letter.get<Charge>()->order == 8);
  CHECK(compensations == 1);  // the final failure only
  CHECK(t.errors.size() == 1);
  CHECK(t.bus->metrics().dead_letters[DeadLetterReason::kRetriesExhausted] ==
        1);
  const FunctionMetrics f = t.function();
  CHECK(f.failed == 3);
  CHECK(f.retried == 2);
  CHECK(f.dead_lettered == 1);
  CHECK(f.dead_letter_reasons[DeadLetterReason::kRetriesExhausted] == 1);
}

TEST_CASE("bus retries: max_attempts = 1 dead-letters without retrying",
          "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 1;
  auto sub = t.subscribe({.retry = fixed_retries(1)});
  t.publish(1);
  t.advance(1h);
  CHECK(t.gateway.attempts.size() == 1);
  REQUIRE(t.dead_letters.size() == 1);
  CHECK(t.dead_letters.last().reason == DeadLetterReason::kRetriesExhausted);
  CHECK(t.dead_letters.last().attempts == 1);
}

TEST_CASE("bus retries: a retry reaches only the function that failed",
          "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 1;
  auto sub = t.subscribe({.retry = fixed_retries(3)});
  int emails = 0;
  auto email = t.bus->subscribe([&](const Charge&) { ++emails; },
                                {.name = "send_receipt"});
  t.publish(3);
  t.advance(100ms);
  CHECK(t.gateway.attempts.size() == 2);
  CHECK(emails == 1);
}

TEST_CASE("bus retries: retry_if turns a failure down: not retried",
          "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 5;
  t.gateway.code = absl::StatusCode::kInvalidArgument;  // a card declined
  RetryOptions retry = fixed_retries(5);
  retry.retry_if =
      fnbus::resilience::retry_on_codes({absl::StatusCode::kUnavailable});
  auto sub = t.subscribe({.retry = retry});
  t.publish(4);
  t.advance(1h);
  CHECK(t.gateway.attempts.size() == 1);
  REQUIRE(t.dead_letters.size() == 1);
  CHECK(t.dead_letters.last().reason == DeadLetterReason::kNotRetryable);
  CHECK(t.dead_letters.last().attempts == 1);
  CHECK(t.dead_letters.last().last_error.code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("bus retries: a thrown exception is retried and reported once",
          "[bus_retries]") {
  RetryBus t;
  int calls = 0;
  auto sub = t.bus->subscribe<Charge>(
      [&](const Charge&) {
        if (++calls < 3) throw std::runtime_error("socket reset");
      },
      {.name = "charge_card", .retry = fixed_retries(3)});
  t.publish(5);
  t.advance(100ms);
  t.advance(200ms);
  CHECK(calls == 3);
  CHECK(t.dead_letters.empty());
  CHECK(t.errors.empty());
  CHECK(t.function().failed == 2);
  CHECK(t.function().delivered == 1);
}

TEST_CASE("bus retries: the fallback runs after the last call, not before",
          "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 100;
  int held = 0;
  auto sub = t.subscribe(
      {.fallback = [&](const Charge&) { ++held; }, .retry = fixed_retries(3)});
  t.publish(6);
  t.advance(100ms);
  CHECK(held == 0);
  t.advance(200ms);
  CHECK(t.gateway.attempts.size() == 3);
  CHECK(held == 1);
  CHECK(t.dead_letters.empty());  // the fallback handled it
  CHECK(t.function().fell_back == 1);
}

TEST_CASE("bus retries: a retry due after max_event_age is dead-lettered",
          "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 100;
  RetryOptions retry = fixed_retries(10);
  retry.max_event_age = 250ms;  // retries due at +100 ms, then +300 ms
  auto sub = t.subscribe({.retry = retry});
  t.publish(9);
  t.advance(100ms);
  REQUIRE(t.gateway.attempts.size() == 2);
  REQUIRE(t.dead_letters.size() == 1);  // the next would come at +300 ms
  CHECK(t.dead_letters.last().reason == DeadLetterReason::kEventExpired);
  CHECK(t.dead_letters.last().attempts == 2);
  t.advance(1h);
  CHECK(t.gateway.attempts.size() == 2);
  CHECK(t.function().dead_lettered == 1);
}

TEST_CASE(
    "bus retries: a retry that waited in the queue past max_event_age is "
    "not run",
    "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 100;
  RetryOptions retry = fixed_retries(10);
  retry.max_event_age = 150ms;
  auto sub = t.subscribe({.retry = retry});
  t.publish(10);
  t.clock->advance(100ms);
  CHECK(t.bus->run_due_timers() == 1);  // queued, not yet run
  t.clock->advance(100ms);              // it waits in the queue: too old
  t.bus->run_until_idle();
  CHECK(t.gateway.attempts.size() == 1);
  REQUIRE(t.dead_letters.size() == 1);
  CHECK(t.dead_letters.last().reason == DeadLetterReason::kEventExpired);
  CHECK(t.dead_letters.last().attempts == 1);
}

TEST_CASE("bus retries: full jitter spreads retries within the ceiling",
          "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 200;
  auto sub = t.subscribe(
      {.retry = RetryOptions{.max_attempts = 2,
                             .backoff = {.initial = 1s, .max = 1s}}});
  for (int order = 0; order < 200; ++order) t.publish(order);
  REQUIRE(t.gateway.attempts.size() == 200);
  std::size_t ticks_with_retries = 0;
  for (int step = 0; step < 100; ++step) {  // 100 steps of 10 ms = 1 s
    const std::size_t before = t.gateway.attempts.size();
    t.advance(10ms);
    if (t.gateway.attempts.size() > before) ++ticks_with_retries;
  }
  CHECK(t.gateway.attempts.size() == 400);  // every retry within 1 s
  // Spread, not in step: 200 uniform draws over 100 steps fill many.
  CHECK(ticks_with_retries > 50);
}

TEST_CASE("bus retries: a deadline overrun is a failure that is retried",
          "[bus_retries]") {
  RetryBus t;
  int calls = 0;
  auto sub = t.bus->subscribe<Charge>(
      [&](const Charge&) {
        if (++calls == 1) t.clock->advance(2s);  // the first call is slow
      },
      {.name = "charge_card", .deadline = 1s, .retry = fixed_retries(3)});
  t.publish(11);
  CHECK(t.function().timed_out == 1);
  CHECK(t.function().retried == 1);
  t.advance(100ms);
  CHECK(calls == 2);
  CHECK(t.function().delivered == 1);
  CHECK(t.dead_letters.empty());
}

TEST_CASE("bus retries: an idempotent function is retried (key forgotten)",
          "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 1;
  auto sub =
      t.subscribe({.idempotency_key =
                       [](const Charge& c) { return std::to_string(c.order); },
                   .retry = fixed_retries(3)});
  t.publish(12);
  t.advance(100ms);
  CHECK(t.gateway.attempts.size() == 2);
  CHECK(t.function().duplicates == 0);
  t.publish(12);  // now a duplicate
  CHECK(t.gateway.attempts.size() == 2);
  CHECK(t.function().duplicates == 1);
}

TEST_CASE(
    "bus retries: an open breaker dead-letters a retry with the calls made",
    "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 100;
  auto sub = t.subscribe({.breaker = breaker_opening_at_first_failure(),
                          .retry = fixed_retries(5)});
  t.publish(13);  // fails: the breaker opens
  t.advance(100ms);
  CHECK(t.gateway.attempts.size() == 1);  // the retry found it open
  REQUIRE(t.dead_letters.size() == 1);
  CHECK(t.dead_letters.last().reason == DeadLetterReason::kCircuitOpen);
  CHECK(t.dead_letters.last().attempts == 1);
  CHECK(t.dead_letters.last().last_error.code() ==
        absl::StatusCode::kUnavailable);
}

TEST_CASE(
    "bus retries: a fallback failing while the breaker is open is reported, "
    "and the retry dead-lettered as circuit open",
    "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 100;
  auto sub =
      t.subscribe({.breaker = breaker_opening_at_first_failure(),
                   .fallback =
                       [](const Charge&) {
                         return absl::ResourceExhaustedError("hold queue full");
                       },
                   .retry = fixed_retries(5)});
  t.publish(19);  // fails: the breaker opens; a retry is scheduled
  CHECK(t.errors.empty());
  t.advance(100ms);  // the retry finds it open; the fallback fails
  CHECK(t.gateway.attempts.size() == 1);
  REQUIRE(t.dead_letters.size() == 1);
  const auto letter = t.dead_letters.last();
  CHECK(letter.reason == DeadLetterReason::kCircuitOpen);
  CHECK(letter.attempts == 1);  // the one call that reached the handler
  CHECK(letter.last_error.code() == absl::StatusCode::kUnavailable);
  REQUIRE(t.errors.size() == 1);  // the fallback's failure
  CHECK(t.errors.last().code == absl::StatusCode::kResourceExhausted);
  const FunctionMetrics f = t.function();
  CHECK(f.rejected == 1);
  CHECK(f.dead_lettered == 1);
  CHECK(f.fell_back == 0);
}

TEST_CASE("bus retries: unsubscribing drops the waiting retry, dead-lettered",
          "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 1;
  auto sub = t.subscribe({.retry = fixed_retries(3)});
  t.publish(14);
  sub.cancel();
  t.advance(100ms);
  CHECK(t.gateway.attempts.size() == 1);
  REQUIRE(t.dead_letters.size() == 1);
  CHECK(t.dead_letters.last().reason == DeadLetterReason::kFunctionGone);
  CHECK(t.dead_letters.last().function == "charge_card");
}

TEST_CASE("bus retries: a retry waiting at shutdown is dead-lettered",
          "[bus_retries]") {
  const ShutdownMode mode =
      GENERATE(ShutdownMode::kDrain, ShutdownMode::kCancelPending);
  RetryBus t;
  t.gateway.failures = 1;
  auto sub = t.subscribe({.retry = fixed_retries(3)});
  t.publish(15);
  REQUIRE(t.bus->shutdown(mode).ok());
  CHECK(t.gateway.attempts.size() == 1);
  REQUIRE(t.dead_letters.size() == 1);
  CHECK(t.dead_letters.last().reason ==
        DeadLetterReason::kRetryPendingAtShutdown);
  CHECK(t.dead_letters.last().attempts == 1);
  REQUIRE(t.dead_letters.last().get<Charge>() != nullptr);
  CHECK(t.dead_letters.last().get<Charge>()->order == 15);
  fnbus::testing_support::check_final_stats(t.bus->stats());
}

TEST_CASE(
    "bus retries: a queued retry cancelled at shutdown is dead-lettered as "
    "its event",
    "[bus_retries]") {
  RetryBus t;
  t.gateway.failures = 1;
  auto sub = t.subscribe({.retry = fixed_retries(3)});
  t.publish(16);
  t.clock->advance(100ms);
  CHECK(t.bus->run_due_timers() == 1);  // queued
  REQUIRE(t.bus->shutdown(ShutdownMode::kCancelPending).ok());
  REQUIRE(t.dead_letters.size() == 1);
  const auto& letter = t.dead_letters.last();
  CHECK(letter.reason == DeadLetterReason::kCancelledAtShutdown);
  CHECK(letter.event_type == fnbus::event_type_name<Charge>());
  CHECK(letter.function == "charge_card");
  REQUIRE(letter.get<Charge>() != nullptr);
  CHECK(letter.get<Charge>()->order == 16);
  fnbus::testing_support::check_final_stats(t.bus->stats());
}

TEST_CASE("bus retries: a retry continues the failed event's trace",
          "[bus_retries]") {
  RetryBus t;
  std::vector<fnbus::EventTrace> traces;
  int calls = 0;
  auto sub = t.bus->subscribe<Charge>(
      [&](const Charge&, Context& context) {
        traces.push_back(context.event_trace());
        return ++calls == 1 ? absl::UnavailableError("down") : absl::OkStatus();
      },
      {.name = "charge_card", .retry = fixed_retries(3)});
  t.publish(17);
  t.advance(100ms);
  REQUIRE(traces.size() == 2);
  CHECK(traces[1].context.correlation_id == traces[0].context.correlation_id);
  CHECK(traces[1].context.parent_id == traces[0].event_id);
  CHECK(traces[1].event_id != traces[0].event_id);
}

TEST_CASE(
    "bus retries: dead letters kept in a store replay once the gateway "
    "recovers",
    "[bus_retries]") {
  auto store = fnbus::resilience::DeadLetterStore::Create();
  REQUIRE(store.ok());
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus({.execution = Execution::kManual,
                       .clock = clock,
                       .dead_letter_sink = (*store)->sink()});
  Gateway gateway;
  gateway.failures = 2;  // down for both calls of order 18
  auto sub = bus->subscribe<Charge>(
      [&](const Charge& c, Context& context) {
        return gateway.charge(c, context);
      },
      {.name = "charge_card", .retry = fixed_retries(2)});
  REQUIRE(bus->publish(Charge{18}).ok());
  bus->run_until_idle();
  clock->advance(100ms);
  bus->run_due_timers();
  bus->run_until_idle();
  REQUIRE((*store)->size() == 1);
  CHECK((*store)->snapshot().front().attempts == 2);
  // The gateway is back: replay.
  const auto replay = (*store)->replay(*bus);
  CHECK(replay.replayed == 1);
  bus->run_until_idle();
  CHECK(gateway.orders == std::vector<int>{18, 18, 18});
  CHECK((*store)->size() == 0);
}

TEST_CASE("bus retries: bad retry options are refused at configuration",
          "[bus_retries]") {
  const absl::Status status = fnbus::resilience::check_options<Charge>(
      {.name = "charge_card",
       .retry = RetryOptions{.max_attempts = 0, .backoff = {.initial = -1s}}});
  REQUIRE(status.code() == absl::StatusCode::kInvalidArgument);
  const std::string message = message_of(status);
  CHECK(message.find("charge_card") != std::string::npos);
  CHECK(message.find("max_attempts is 0") != std::string::npos);
  CHECK(message.find("initial is") != std::string::npos);

  struct Sealed {
    Sealed() = default;
    Sealed(Sealed&&) = default;
    Sealed(const Sealed&) = delete;
  };
  const absl::Status sealed = fnbus::resilience::check_options<Sealed>(
      {.name = "seal", .retry = RetryOptions{}});
  REQUIRE(sealed.code() == absl::StatusCode::kInvalidArgument);
  CHECK(message_of(sealed).find("cannot be copied") != std::string::npos);
}

}  // namespace fnbus_bus_retries_test
