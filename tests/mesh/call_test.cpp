// Request/reply (EventBus::serve() and call(), mesh/call.hpp): replies,
// errors, timeouts on a ManualClock, no function, retries and the breaker
// applying to calls, late replies, a chain A -> B -> C carrying the trace,
// a self-call on a pool of one worker, and a call from a non-handler
// thread on a pool.

#include "fnbus/mesh/call.hpp"

#include <atomic>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../support/bus_support.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/testing/manual_clock.hpp"
#include "fnbus/testing/recording_sinks.hpp"

namespace fnbus_call_test {

using fnbus::Context;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::FunctionOptions;
using fnbus::mesh::CallFuture;
using fnbus::mesh::Service;
using fnbus::resilience::Jitter;
using fnbus::resilience::RetryOptions;
using fnbus::testing::DeadLetterRecorder;
using fnbus::testing::ManualClock;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::message_of;
using namespace std::chrono_literals;

struct GetQuote {
  std::string sku;
  int quantity = 1;
};
struct Quote {
  std::string sku;
  long cents = 0;
};

// A manual bus on a ManualClock (1 ms timer tick).
struct CallBus {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  DeadLetterRecorder dead_letters;
  std::unique_ptr<EventBus> bus;

  explicit CallBus(Execution execution = Execution::kManual) {
    bus = make_bus({.execution = execution,
                    .clock = clock,
                    .dead_letter_sink = dead_letters.sink()});
  }
  // Runs what is queued, then the timers due after `step`, then again.
  void advance(fnbus::Duration step) {
    bus->run_until_idle();
    clock->advance(step);
    bus->run_due_timers();
    bus->run_until_idle();
  }
};

absl::StatusOr<Quote> price(const GetQuote& q) {
  if (q.quantity <= 0) {
    return absl::InvalidArgumentError("quantity must be positive");
  }
  return Quote{.sku = q.sku, .cents = 250L * q.quantity};
}

TEST_CASE("call: the serving function's reply is the future's result",
          "[mesh][call]") {
  CallBus t;
  Service pricing = t.bus->serve(price, {.name = "pricing"});
  CallFuture<Quote> quote =
      t.bus->call<Quote>(GetQuote{.sku = "A-1", .quantity = 4});
  CHECK_FALSE(quote.ready());
  t.bus->run_until_idle();
  REQUIRE(quote.ready());
  absl::StatusOr<Quote> answer = quote.get();
  REQUIRE(answer.ok());
  CHECK(answer->sku == "A-1");
  CHECK(answer->cents == 1000);
  CHECK(pricing.stats().replied == 1);
  // The result is given once.
  CHECK(quote.get().status().code() == absl::StatusCode::kFailedPrecondition);
  // A call is a published event of the function: counted as such.
  CHECK(t.bus->stats().delivered == 1);
}

TEST_CASE("call: the function's error is the call's result, not a timeout",
          "[mesh][call]") {
  CallBus t;
  Service pricing = t.bus->serve(price, {.name = "pricing"});
  CallFuture<Quote> quote =
      t.bus->call<Quote>(GetQuote{.sku = "A-1", .quantity = 0});
  t.bus->run_until_idle();
  REQUIRE(quote.ready());
  absl::StatusOr<Quote> answer = quote.get();
  CHECK(answer.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(message_of(answer.status()),
             Catch::Contains("quantity must be positive"));
  CHECK(pricing.stats().failed == 1);
  CHECK(t.bus->stats().failed == 1);
}

TEST_CASE("call: a thrown exception ends the call with its message",
          "[mesh][call]") {
  CallBus t;
  Service pricing = t.bus->serve(
      [](const GetQuote&) -> absl::StatusOr<Quote> {
        throw std::runtime_error("price table missing");
      },
      {.name = "pricing"});
  CallFuture<Quote> quote = t.bus->call<Quote>(GetQuote{.sku = "A-1"});
  t.bus->run_until_idle();
  absl::StatusOr<Quote> answer = quote.get();
  CHECK(answer.status().code() == absl::StatusCode::kUnknown);
  CHECK_THAT(message_of(answer.status()),
             Catch::Contains("price table missing"));
}

TEST_CASE(
    "call: no reply within the timeout is DeadlineExceeded, and the late "
    "reply is counted and dropped",
    "[mesh][call]") {
  CallBus t;
  Service pricing = t.bus->serve(price, {.name = "pricing"});
  CallFuture<Quote> quote =
      t.bus->call<Quote>(GetQuote{.sku = "A-1"}, {.timeout = 50ms});
  // Nothing runs the request; the deadline passes on the bus clock.
  t.clock->advance(49ms);
  t.bus->run_due_timers();
  CHECK_FALSE(quote.ready());
  t.clock->advance(2ms);
  t.bus->run_due_timers();
  REQUIRE(quote.ready());
  absl::StatusOr<Quote> answer = quote.get();
  CHECK(answer.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK_THAT(message_of(answer.status()), Catch::Contains("50ms"));
  // The request is still queued: a worker that takes it now skips it.
  t.bus->run_until_idle();
  CHECK(pricing.stats().skipped == 1);
  CHECK(pricing.stats().replied == 0);
}

TEST_CASE("call: a reply that ends after the timeout is late", "[mesh][call]") {
  CallBus t;
  std::optional<CallFuture<Quote>> quote;
  Service pricing = t.bus->serve(
      [&](const GetQuote& q) -> absl::StatusOr<Quote> {
        // The caller's deadline passes while the function runs.
        t.clock->advance(100ms);
        t.bus->run_due_timers();
        return Quote{.sku = q.sku, .cents = 1};
      },
      {.name = "pricing"});
  quote.emplace(t.bus->call<Quote>(GetQuote{.sku = "A-1"}, {.timeout = 50ms}));
  t.bus->run_until_idle();
  CHECK(quote->get().status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(pricing.stats().late == 1);
  CHECK(pricing.stats().replied == 0);
}

TEST_CASE("call: no function serving the request is NotFound at once",
          "[mesh][call]") {
  CallBus t;
  CallFuture<Quote> quote = t.bus->call<Quote>(GetQuote{.sku = "A-1"});
  REQUIRE(quote.ready());
  absl::StatusOr<Quote> answer = quote.get();
  CHECK(answer.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(message_of(answer.status()), Catch::Contains("bus.serve("));
  // Nothing was published.
  CHECK(t.bus->stats().published == 0);

  // A function serving another reply type for the request does not count.
  Service strings =
      t.bus->serve([](const GetQuote& q) { return q.sku; }, {.name = "names"});
  CHECK(t.bus->call<Quote>(GetQuote{}).get().status().code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("call: a bad timeout is InvalidArgument", "[mesh][call]") {
  CallBus t;
  Service pricing = t.bus->serve(price, {.name = "pricing"});
  CallFuture<Quote> quote =
      t.bus->call<Quote>(GetQuote{.sku = "A-1"}, {.timeout = 0ms});
  absl::StatusOr<Quote> answer = quote.get();
  CHECK(answer.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(message_of(answer.status()), Catch::Contains("timeout"));
}

TEST_CASE(
    "call: a refused publish is the call's result and loses nothing "
    "silently",
    "[mesh][call]") {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::unique_ptr<EventBus> bus = make_bus(
      {.queue_capacity = 2, .execution = Execution::kManual, .clock = clock});
  Service pricing = bus->serve(price, {.name = "pricing"});
  CallFuture<Quote> first = bus->call<Quote>(GetQuote{.sku = "1"});
  CallFuture<Quote> second = bus->call<Quote>(GetQuote{.sku = "2"});
  CallFuture<Quote> third = bus->call<Quote>(GetQuote{.sku = "3"});
  REQUIRE(third.ready());
  CHECK(third.get().status().code() == absl::StatusCode::kResourceExhausted);
  bus->run_until_idle();
  CHECK(first.get().ok());
  CHECK(second.get().ok());
  // The callback form returns the refusal instead of calling back.
  CallFuture<Quote> fourth = bus->call<Quote>(GetQuote{.sku = "4"});
  CallFuture<Quote> fifth = bus->call<Quote>(GetQuote{.sku = "5"});
  int callbacks = 0;
  absl::Status refused = bus->call<Quote>(
      GetQuote{.sku = "6"}, {}, [&](absl::StatusOr<Quote>) { ++callbacks; });
  CHECK(refused.code() == absl::StatusCode::kResourceExhausted);
  bus->run_until_idle();
  CHECK(callbacks == 0);
}

TEST_CASE("call: the callback form is called once with the reply",
          "[mesh][call]") {
  CallBus t;
  Service pricing = t.bus->serve(price, {.name = "pricing"});
  std::vector<absl::StatusOr<Quote>> results;
  REQUIRE(t.bus
              ->call<Quote>(GetQuote{.sku = "A-1", .quantity = 2}, {},
                            [&](absl::StatusOr<Quote> quote) {
                              results.push_back(std::move(quote));
                            })
              .ok());
  CHECK(results.empty());
  t.advance(1min);  // past the timeout: the deadline does not call again
  REQUIRE(results.size() == 1);
  REQUIRE(results[0].ok());
  CHECK(results[0]->cents == 500);
}

TEST_CASE(
    "call: retries apply to calls, and the reply of a later attempt ends "
    "the call",
    "[mesh][call]") {
  CallBus t;
  int calls = 0;
  Service pricing = t.bus->serve(
      [&](const GetQuote& q) -> absl::StatusOr<Quote> {
        if (++calls < 3) return absl::UnavailableError("price feed down");
        return Quote{.sku = q.sku, .cents = 7};
      },
      {.name = "pricing",
       .retry = RetryOptions{
           .max_attempts = 3,
           .backoff = {.initial = 10ms, .jitter = Jitter::kNone}}});
  CallFuture<Quote> quote = t.bus->call<Quote>(GetQuote{.sku = "A-1"});
  t.advance(10ms);
  CHECK_FALSE(quote.ready());
  t.advance(20ms);
  REQUIRE(quote.ready());
  absl::StatusOr<Quote> answer = quote.get();
  REQUIRE(answer.ok());
  CHECK(answer->cents == 7);
  CHECK(calls == 3);
  CHECK(pricing.stats().failed == 2);
  CHECK(pricing.stats().replied == 1);
}

TEST_CASE("call: when retries run out the last error ends the call at once",
          "[mesh][call]") {
  CallBus t;
  Service pricing = t.bus->serve(
      [](const GetQuote&) -> absl::StatusOr<Quote> {
        return absl::UnavailableError("price feed down");
      },
      {.name = "pricing",
       .retry = RetryOptions{
           .max_attempts = 2,
           .backoff = {.initial = 10ms, .jitter = Jitter::kNone}}});
  CallFuture<Quote> quote = t.bus->call<Quote>(GetQuote{.sku = "A-1"});
  t.advance(10ms);
  REQUIRE(quote.ready());  // well before the 30 s timeout
  absl::StatusOr<Quote> answer = quote.get();
  CHECK(answer.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(message_of(answer.status()), Catch::Contains("2 calls"));
  CHECK_THAT(message_of(answer.status()), Catch::Contains("price feed down"));
  // The request was dead-lettered for the function, as an event would be.
  CHECK(t.dead_letters.size() == 1);
}

TEST_CASE(
    "call: an open breaker answers with the fallback, or Unavailable "
    "without one",
    "[mesh][call]") {
  const fnbus::resilience::BreakerOptions opens_at_once{.failure_rate = 0.5,
                                                        .minimum_calls = 1,
                                                        .window = 10s,
                                                        .window_buckets = 10,
                                                        .open_for = 1min};
  SECTION("with a fallback") {
    CallBus t;
    Service pricing = t.bus->serve(
        [](const GetQuote&) -> absl::StatusOr<Quote> {
          return absl::UnavailableError("down");
        },
        {.name = "pricing", .breaker = opens_at_once},
        [](const GetQuote& q) { return Quote{.sku = q.sku, .cents = -1}; });
    // The first call fails (and opens the breaker): the fallback answers.
    CallFuture<Quote> first = t.bus->call<Quote>(GetQuote{.sku = "A"});
    t.bus->run_until_idle();
    REQUIRE(first.get().ok());
    // The breaker is open: the handler is not called, the fallback answers.
    CallFuture<Quote> second = t.bus->call<Quote>(GetQuote{.sku = "B"});
    t.bus->run_until_idle();
    absl::StatusOr<Quote> answer = second.get();
    REQUIRE(answer.ok());
    CHECK(answer->sku == "B");
    CHECK(answer->cents == -1);
  }
  SECTION("without one") {
    CallBus t;
    Service pricing = t.bus->serve(
        [](const GetQuote&) -> absl::StatusOr<Quote> {
          return absl::UnavailableError("down");
        },
        {.name = "pricing", .breaker = opens_at_once});
    CallFuture<Quote> first = t.bus->call<Quote>(GetQuote{.sku = "A"});
    t.bus->run_until_idle();
    CHECK(first.get().status().code() == absl::StatusCode::kUnavailable);
    CallFuture<Quote> second = t.bus->call<Quote>(GetQuote{.sku = "B"});
    t.bus->run_until_idle();
    absl::StatusOr<Quote> answer = second.get();
    CHECK(answer.status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(message_of(answer.status()), Catch::Contains("breaker"));
  }
}

TEST_CASE("call: a condition written for the request filters calls",
          "[mesh][call]") {
  CallBus t;
  Service pricing = t.bus->serve(
      price, {.name = "pricing",
              .when = [](const GetQuote& q) { return !q.sku.empty(); }});
  CallFuture<Quote> kept = t.bus->call<Quote>(GetQuote{.sku = "A"});
  CallFuture<Quote> filtered = t.bus->call<Quote>(GetQuote{.sku = ""});
  t.bus->run_until_idle();
  CHECK(kept.get().ok());
  CHECK(filtered.get().status().code() == absl::StatusCode::kUnavailable);
}

TEST_CASE(
    "call: a drain answers pending calls, a cancel ends them as "
    "dropped",
    "[mesh][call]") {
  SECTION("kDrain") {
    CallBus t;
    Service pricing = t.bus->serve(price, {.name = "pricing"});
    CallFuture<Quote> quote = t.bus->call<Quote>(GetQuote{.sku = "A"});
    REQUIRE(t.bus->shutdown(fnbus::ShutdownMode::kDrain).ok());
    REQUIRE(quote.ready());
    CHECK(quote.get().ok());
    CHECK(t.dead_letters.size() == 0);
  }
  SECTION("kCancelPending") {
    CallBus t;
    Service pricing = t.bus->serve(price, {.name = "pricing"});
    CallFuture<Quote> quote = t.bus->call<Quote>(GetQuote{.sku = "A"});
    REQUIRE(t.bus->shutdown(fnbus::ShutdownMode::kCancelPending).ok());
    REQUIRE(quote.ready());
    absl::StatusOr<Quote> answer = quote.get();
    CHECK(answer.status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(message_of(answer.status()), Catch::Contains("dead-lettered"));
    CHECK(t.dead_letters.size() == 1);
  }
}

TEST_CASE("call: a call whose request outlives the shutdown ends Cancelled",
          "[mesh][call]") {
  CallBus t;
  std::vector<fnbus::OwnedEvent> kept;  // as a dead-letter store would
  t.bus->set_dead_letter_sink([&](const fnbus::DeadLetter& letter) {
    absl::StatusOr<fnbus::OwnedEvent> copy =
        fnbus::OwnedEvent::Copy(letter.event);
    if (copy.ok()) kept.push_back(*std::move(copy));
  });
  Service pricing = t.bus->serve(price, {.name = "pricing"});
  CallFuture<Quote> quote = t.bus->call<Quote>(GetQuote{.sku = "A"});
  REQUIRE(t.bus->shutdown(fnbus::ShutdownMode::kCancelPending).ok());
  REQUIRE(kept.size() == 1);
  REQUIRE(quote.ready());
  absl::StatusOr<Quote> answer = quote.get();
  CHECK(answer.status().code() == absl::StatusCode::kCancelled);
  CHECK_THAT(message_of(answer.status()), Catch::Contains("shut down"));
}

TEST_CASE("call: get() on a pending call of a manual bus says to run it",
          "[mesh][call]") {
  CallBus t;
  Service pricing = t.bus->serve(price, {.name = "pricing"});
  CallFuture<Quote> quote = t.bus->call<Quote>(GetQuote{.sku = "A"});
  absl::StatusOr<Quote> answer = quote.get();
  CHECK(answer.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(message_of(answer.status()), Catch::Contains("run_until_idle"));
  // Still pending, not lost.
  t.bus->run_until_idle();
  CHECK(quote.get().ok());
}

struct PlaceOrder {
  std::string sku;
};
struct CheckStock {
  std::string sku;
};
struct Stock {
  int units = 0;
};

TEST_CASE("call: a chain A -> B -> C carries one trace", "[mesh][call]") {
  CallBus t;
  std::vector<fnbus::EventTrace> traces;
  Service stock = t.bus->serve(
      [&](const CheckStock&, Context& context) -> absl::StatusOr<Stock> {
        traces.push_back(context.event_trace());
        return Stock{.units = 3};
      },
      {.name = "stock"});
  Service pricing = t.bus->serve(
      [&](const GetQuote& q, Context& context) -> absl::StatusOr<Quote> {
        traces.push_back(context.event_trace());
        // B calls C without waiting: the callback form.
        absl::Status started = t.bus->call<Stock>(CheckStock{.sku = q.sku}, {},
                                                  [](absl::StatusOr<Stock>) {});
        if (!started.ok()) return started;
        return Quote{.sku = q.sku, .cents = 1};
      },
      {.name = "pricing"});
  fnbus::Subscription orders = t.bus->subscribe(
      [&](const PlaceOrder& o, Context& context) {
        traces.push_back(context.event_trace());
        return t.bus->call<Quote>(GetQuote{.sku = o.sku}, {},
                                  [](absl::StatusOr<Quote>) {});
      },
      {.name = "orders"});
  REQUIRE(t.bus->publish(PlaceOrder{.sku = "A"}).ok());
  t.bus->run_until_idle();
  REQUIRE(traces.size() == 3);
  CHECK(traces[1].context.correlation_id == traces[0].context.correlation_id);
  CHECK(traces[2].context.correlation_id == traces[0].context.correlation_id);
  CHECK(traces[1].context.parent_id == traces[0].event_id);
  CHECK(traces[2].context.parent_id == traces[1].event_id);
}

TEST_CASE(
    "call: a handler calling its own function on a pool of one worker "
    "does not deadlock",
    "[mesh][call]") {
  std::unique_ptr<EventBus> bus = make_bus({.workers = 1});
  struct Factorial {
    int n = 0;
  };
  Service factorial;
  factorial = bus->serve(
      [&bus](const Factorial& f) -> absl::StatusOr<long> {
        if (f.n <= 1) return 1L;
        // Blocks in get(): the request is run here, on this worker.
        absl::StatusOr<long> rest =
            bus->call<long>(Factorial{.n = f.n - 1}).get();
        if (!rest.ok()) return rest.status();
        return f.n * *rest;
      },
      {.name = "factorial"});
  absl::StatusOr<long> answer = bus->call<long>(Factorial{.n = 10}).get();
  REQUIRE(answer.ok());
  CHECK(*answer == 3628800L);
  // The queued copies of the inner requests were skipped, not run twice.
  REQUIRE(bus->shutdown().ok());
  CHECK(factorial.stats().replied == 10);
  CHECK(factorial.stats().skipped == 9);
}

TEST_CASE("call: many threads calling a pool get each their own reply",
          "[mesh][call]") {
  std::unique_ptr<EventBus> bus = make_bus({.workers = 2});
  Service pricing = bus->serve(price, {.name = "pricing"});
  constexpr int kThreads = 4;
  constexpr int kCalls = 500;
  std::atomic<int> wrong{0};
  std::vector<std::thread> callers;
  for (int thread = 0; thread < kThreads; ++thread) {
    callers.emplace_back([&, thread] {
      for (int i = 1; i <= kCalls; ++i) {
        const std::string sku = std::to_string(thread * kCalls + i);
        absl::StatusOr<Quote> quote =
            bus->call<Quote>(
                   GetQuote{.sku = sku, .quantity = i},
                   {.publish = {.overflow = fnbus::OverflowPolicy::kBlock,
                                .block_timeout = 10s}})
                .get();
        if (!quote.ok() || quote->sku != sku || quote->cents != 250L * i) {
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  CHECK(wrong.load() == 0);
  REQUIRE(bus->shutdown().ok());
  CHECK(pricing.stats().replied == kThreads * kCalls);
}

}  // namespace fnbus_call_test
