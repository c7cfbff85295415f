// resilience::Pipeline alone: each stage's outcome, their order, the
// breaker's sequence with a fallback, and check()'s messages. Time is a
// ManualClock (except where a case says it uses the steady clock); the
// "handler" is a lambda returning an Outcome.

#include "fnbus/resilience/pipeline.hpp"

#include <chrono>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "fnbus/testing/manual_clock.hpp"

namespace {

using fnbus::Condition;
using fnbus::Context;
using fnbus::Fallback;
using fnbus::FunctionOptions;
using fnbus::KeyOf;
using fnbus::Outcome;
using fnbus::resilience::BreakerOptions;
using fnbus::resilience::BreakerState;
using fnbus::resilience::Pipeline;
using fnbus::testing::ManualClock;
using namespace std::chrono_literals;

struct Order {
  std::string id;
  long total_cents = 0;
};
struct Refund {
  std::string id;
};

// A pipeline for Order and what its handler and fallback saw.
struct PipelineFixture {
  ManualClock clock;
  std::unique_ptr<Pipeline> pipeline;
  int handler_calls = 0;
  absl::Status handler_result;  // what the handler returns next
  bool handler_throws = false;

  explicit PipelineFixture(const FunctionOptions& options) {
    auto created = Pipeline::Create(options, fnbus::detail::type_slot<Order>(),
                                    fnbus::event_type_name<Order>(), clock);
    REQUIRE(created.ok());
    pipeline = *std::move(created);
  }

  // For tests that call pipeline->run() themselves.
  Order own_order;
  Context own_context{fnbus::event_type_name<Order>(), "f", {}};
  // Runs `body(failure)` as the handler on own_order, in own_context.
  template <typename Body>
  Outcome run_own(absl::Status& failure, Body body) {
    Pipeline::Call handler = [&body](const void*, Context&, absl::Status& out) {
      return body(out);
    };
    return pipeline->run(&own_order, own_context, failure, handler);
  }

  Outcome run(const Order& order, absl::Status& failure) {
    Context context(fnbus::event_type_name<Order>(), "f", {});
    Pipeline::Call handler = [this](const void*, Context&, absl::Status& out) {
      ++handler_calls;
      if (handler_throws) throw std::runtime_error("gateway exploded");
      if (handler_result.ok()) return Outcome::kDelivered;
      out = handler_result;
      return Outcome::kFailed;
    };
    return pipeline->run(&order, context, failure, handler);
  }
  Outcome run(const Order& order) {
    absl::Status failure;
    return run(order, failure);
  }
};

BreakerOptions small_breaker() {
  return {.failure_rate = 0.5,
          .minimum_calls = 2,
          .window = 10s,
          .window_buckets = 10,
          .open_for = 30s,
          .half_open_probes = 1};
}

}  // namespace

TEST_CASE("pipeline: no option wants no pipeline, each option wants one",
          "[pipeline]") {
  CHECK_FALSE(Pipeline::wanted(FunctionOptions{.name = "plain"}));
  CHECK(Pipeline::wanted({.when = [](const Order&) { return true; }}));
  CHECK(Pipeline::wanted(
      {.idempotency_key = [](const Order& o) { return o.id; }}));
  CHECK(Pipeline::wanted({.breaker = BreakerOptions{}}));
  CHECK(Pipeline::wanted({.fallback = [](const Order&) {}}));
  CHECK(Pipeline::wanted({.deadline = 100ms}));
}

TEST_CASE("pipeline: the condition filters before the handler runs",
          "[pipeline]") {
  PipelineFixture f(
      {.when = [](const Order& o) { return o.total_cents > 100'000; }});
  CHECK(f.run({.id = "small", .total_cents = 5'000}) == Outcome::kFiltered);
  CHECK(f.handler_calls == 0);
  CHECK(f.run({.id = "big", .total_cents = 250'000}) == Outcome::kDelivered);
  CHECK(f.handler_calls == 1);
}

TEST_CASE("pipeline: a key handled once is a duplicate after, until it fails",
          "[pipeline]") {
  PipelineFixture f({.idempotency_key = [](const Order& o) { return o.id; }});
  CHECK(f.run({.id = "o-1"}) == Outcome::kDelivered);
  CHECK(f.run({.id = "o-1"}) == Outcome::kDuplicate);
  CHECK(f.run({.id = "o-2"}) == Outcome::kDelivered);
  CHECK(f.handler_calls == 2);

  // A failed call forgets its key: the retry or replay is handled.
  f.handler_result = absl::UnavailableError("down");
  CHECK(f.run({.id = "o-3"}) == Outcome::kFailed);
  f.handler_result = absl::OkStatus();
  CHECK(f.run({.id = "o-3"}) == Outcome::kDelivered);
  CHECK(f.run({.id = "o-3"}) == Outcome::kDuplicate);
  CHECK(f.handler_calls == 4);
}

TEST_CASE(
    "pipeline: a shared seen-store makes two functions idempotent "
    "together",
    "[pipeline]") {
  auto store = fnbus::resilience::InMemorySeenStore::Create({});
  REQUIRE(store.ok());
  std::shared_ptr<fnbus::resilience::SeenStore> shared = *std::move(store);
  const FunctionOptions options{
      .idempotency_key = [](const Order& o) { return o.id; },
      .seen_store = shared};
  PipelineFixture first(options);
  PipelineFixture second(options);
  CHECK(first.run({.id = "o-1"}) == Outcome::kDelivered);
  CHECK(second.run({.id = "o-1"}) == Outcome::kDuplicate);
}

TEST_CASE("pipeline: the condition runs before the key is recorded",
          "[pipeline]") {
  PipelineFixture f({.when = [](const Order& o) { return o.total_cents > 0; },
                     .idempotency_key = [](const Order& o) { return o.id; }});
  CHECK(f.run({.id = "o-1", .total_cents = 0}) == Outcome::kFiltered);
  // Filtered, so never seen: the same key with a total is handled.
  CHECK(f.run({.id = "o-1", .total_cents = 10}) == Outcome::kDelivered);
}

TEST_CASE(
    "pipeline: breaker opens, rejects without a fallback, probes, "
    "closes",
    "[pipeline]") {
  PipelineFixture f({.breaker = small_breaker()});
  f.handler_result = absl::UnavailableError("gateway down");
  absl::Status failure;
  CHECK(f.run({.id = "1"}, failure) == Outcome::kFailed);
  CHECK(failure.code() == absl::StatusCode::kUnavailable);
  CHECK(f.run({.id = "2"}) == Outcome::kFailed);
  REQUIRE(f.pipeline->breaker()->state(f.clock.now()) == BreakerState::kOpen);

  // Open: the handler is not called and the event is rejected.
  CHECK(f.run({.id = "3"}) == Outcome::kRejected);
  CHECK(f.handler_calls == 2);

  // After open_for, one probe; it succeeds and the breaker closes.
  f.clock.advance(30s);
  f.handler_result = absl::OkStatus();
  CHECK(f.run({.id = "4"}) == Outcome::kDelivered);
  CHECK(f.pipeline->breaker()->state(f.clock.now()) == BreakerState::kClosed);
  CHECK(f.handler_calls == 3);
}

// The bus's default clock: the breaker may then read the coarse clock
// (when its resolution suits the options); counts and the trip are the
// same. The 10 s window and 30 s cool-down dwarf the test's run time.
TEST_CASE("pipeline: a breaker on the steady clock counts and trips",
          "[pipeline]") {
  fnbus::SteadyClock& clock = fnbus::SteadyClock::instance();
  auto created = Pipeline::Create({.breaker = small_breaker()},
                                  fnbus::detail::type_slot<Order>(),
                                  fnbus::event_type_name<Order>(), clock);
  REQUIRE(created.ok());
  Pipeline& pipeline = **created;
  bool fail = false;
  auto run = [&] {
    Context context(fnbus::event_type_name<Order>(), "f", {});
    const Order order{.id = "1"};
    absl::Status failure;
    Pipeline::Call handler = [&](const void*, Context&, absl::Status& out) {
      if (!fail) return Outcome::kDelivered;
      out = absl::UnavailableError("gateway down");
      return Outcome::kFailed;
    };
    return pipeline.run(&order, context, failure, handler);
  };
  for (int i = 0; i < 3; ++i) CHECK(run() == Outcome::kDelivered);
  fail = true;
  CHECK(run() == Outcome::kFailed);
  CHECK(run() == Outcome::kFailed);
  CHECK(pipeline.breaker()->state(clock.now()) == BreakerState::kClosed);
  CHECK(run() == Outcome::kFailed);  // 3 of 6
  CHECK(pipeline.breaker()->state(clock.now()) == BreakerState::kOpen);
  CHECK(run() == Outcome::kRejected);
  const auto stats = pipeline.breaker()->stats();
  CHECK(stats.successes == 3);
  CHECK(stats.failures == 3);
  CHECK(stats.refused == 1);
}

TEST_CASE("pipeline: the fallback handles an open breaker and a failure",
          "[pipeline]") {
  auto fallback_calls = std::make_shared<int>(0);
  PipelineFixture f(
      {.breaker = small_breaker(),
       .fallback = [fallback_calls](const Order&) { ++*fallback_calls; }});
  f.handler_result = absl::UnavailableError("gateway down");

  // A failure: the fallback runs; the handler's failure stays in
  // `failure` for the bus to report.
  absl::Status failure;
  CHECK(f.run({.id = "1"}, failure) == Outcome::kFellBack);
  CHECK(failure.code() == absl::StatusCode::kUnavailable);
  CHECK(*fallback_calls == 1);
  CHECK(f.run({.id = "2"}) == Outcome::kFellBack);
  REQUIRE(f.pipeline->breaker()->state(f.clock.now()) == BreakerState::kOpen);

  // Open: only the fallback runs, and there is no failure to report.
  absl::Status open_failure;
  CHECK(f.run({.id = "3"}, open_failure) == Outcome::kFellBack);
  CHECK(open_failure.ok());
  CHECK(f.handler_calls == 2);
  CHECK(*fallback_calls == 3);
}

TEST_CASE(
    "pipeline: a throwing handler counts for the breaker and falls "
    "back, or propagates without a fallback",
    "[pipeline]") {
  SECTION("with a fallback") {
    PipelineFixture f({.fallback = [](const Order&) {}});
    f.handler_throws = true;
    absl::Status failure;
    CHECK(f.run({.id = "1"}, failure) == Outcome::kFellBack);
    CHECK(failure.code() == absl::StatusCode::kUnknown);
    CHECK(std::string(failure.message()) == "gateway exploded");
  }
  SECTION("without one") {
    PipelineFixture f({.idempotency_key = [](const Order& o) { return o.id; },
                       .breaker = small_breaker()});
    f.handler_throws = true;
    CHECK_THROWS_AS(f.run({.id = "1"}), std::runtime_error);
    CHECK_THROWS_AS(f.run({.id = "1"}), std::runtime_error);  // forgotten
    CHECK(f.pipeline->breaker()->state(f.clock.now()) == BreakerState::kOpen);
  }
}

TEST_CASE("pipeline: a failing fallback fails with both messages",
          "[pipeline]") {
  PipelineFixture f({.fallback = [](const Order&) {
    return absl::InternalError("queue full");
  }});
  f.handler_result = absl::UnavailableError("gateway down");
  absl::Status failure;
  CHECK(f.run({.id = "1"}, failure) == Outcome::kFailed);
  CHECK(failure.code() == absl::StatusCode::kInternal);
  const std::string message(failure.message());
  CHECK_THAT(message, Catch::Contains("fallback failed: queue full"));
  CHECK_THAT(message, Catch::Contains("gateway down"));
}

TEST_CASE(
    "pipeline: a fallback failing while the breaker is open leaves the "
    "event rejected, with its failure",
    "[pipeline]") {
  PipelineFixture f({.breaker = small_breaker(), .fallback = [](const Order&) {
                       return absl::InternalError("queue full");
                     }});
  f.handler_result = absl::UnavailableError("gateway down");
  absl::Status failure;
  CHECK(f.run({.id = "1"}, failure) == Outcome::kFailed);  // fallback failed
  failure = absl::OkStatus();
  CHECK(f.run({.id = "2"}, failure) == Outcome::kFailed);  // opens it
  failure = absl::OkStatus();
  CHECK(f.run({.id = "3"}, failure) == Outcome::kRejected);
  CHECK(f.handler_calls == 2);  // not called while open
  CHECK(failure.code() == absl::StatusCode::kInternal);
  CHECK_THAT(std::string(failure.message()),
             Catch::Contains("called because the circuit breaker is open"));
}

TEST_CASE(
    "pipeline: options of another event type or out of range are "
    "InvalidArgument naming each",
    "[pipeline]") {
  const FunctionOptions wrong{
      .name = "refunds",
      .when = [](const Refund&) { return true; },
      .breaker = BreakerOptions{.failure_rate = 1.5, .minimum_calls = 0},
      .fallback = Fallback::For<Refund>([](const auto&) {})};
  const absl::Status status = fnbus::resilience::check_options<Order>(wrong);
  REQUIRE(status.code() == absl::StatusCode::kInvalidArgument);
  const std::string message(status.message());
  INFO(message);
  CHECK_THAT(message, Catch::Contains("'refunds'"));
  CHECK_THAT(message, Catch::Contains("when takes"));
  CHECK_THAT(message, Catch::Contains("fallback takes"));
  CHECK_THAT(message, Catch::Contains("failure_rate is 1.5"));
  CHECK_THAT(message, Catch::Contains("minimum_calls is 0"));
  CHECK_FALSE(Pipeline::Create(wrong, fnbus::detail::type_slot<Order>(),
                               fnbus::event_type_name<Order>(),
                               *std::make_shared<ManualClock>())
                  .ok());

  const FunctionOptions store_without_key{
      .seen_store = std::shared_ptr<fnbus::resilience::SeenStore>(
          *fnbus::resilience::InMemorySeenStore::Create({}))};
  CHECK_THAT(
      std::string(
          fnbus::resilience::check_options<Order>(store_without_key).message()),
      Catch::Contains("seen_store is set without an idempotency_key"));

  CHECK(fnbus::resilience::check_options<Order>(
            {.when = Condition::For<Order>([](const auto&) { return true; }),
             .idempotency_key =
                 KeyOf::For<Order>([](const auto& o) { return o.id; })})
            .ok());
}

TEST_CASE("pipeline: a zero or negative deadline is InvalidArgument",
          "[pipeline][deadline]") {
  for (const fnbus::Duration deadline :
       {fnbus::Duration::zero(), fnbus::Duration(-5'000'000)}) {
    const absl::Status status = fnbus::resilience::check_options<Order>(
        {.name = "charge", .deadline = deadline});
    REQUIRE(status.code() == absl::StatusCode::kInvalidArgument);
    const std::string message(status.message());
    INFO(message);
    CHECK_THAT(message, Catch::Contains("'charge'"));
    CHECK_THAT(message, Catch::Contains("deadline is " +
                                        std::to_string(deadline.count()) +
                                        " ns; give how long one call may run"));
  }
  CHECK(fnbus::resilience::check_options<Order>({.deadline = 1ns}).ok());
}

TEST_CASE(
    "pipeline: a handler ending past its deadline is kTimedOut, exactly "
    "at it is on time",
    "[pipeline][deadline]") {
  PipelineFixture f({.deadline = 100ms});
  absl::Status failure;
  CHECK(f.run_own(failure, [&](absl::Status&) {
    f.clock.advance(100ms);
    return Outcome::kDelivered;
  }) == Outcome::kDelivered);
  CHECK(failure.ok());
  CHECK(f.run_own(failure, [&](absl::Status&) {
    f.clock.advance(100ms + 1ns);
    return Outcome::kDelivered;
  }) == Outcome::kTimedOut);
  CHECK(failure.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(std::string(failure.message()) ==
        "ran 100.000ms, past its deadline of 100ms");
  const fnbus::detail::DeadlineState* state =
      fnbus::detail::ContextAccess::deadline(f.own_context);
  REQUIRE(state != nullptr);
  CHECK(state->timed_out);
  CHECK(state->late);
  CHECK_FALSE(state->running);
  CHECK(f.own_context.deadline() == fnbus::TimePoint::max());  // returned
}

// The bus's default clock with a deadline of 100 coarse ticks: the start
// is read from the coarse clock (a tick early, about), and the end from
// it too unless the call ran more than half its deadline, when
// steady_clock decides. Real time passes (the coarse clock is the steady
// clock's alone), but nothing depends on how fast: the bounds below hold
// however late a thread wakes. ~0.4 s at 4 ms ticks (HZ=250).
TEST_CASE(
    "pipeline: on the steady clock a deadline is at most a tick early, "
    "and a call ending past it is always kTimedOut",
    "[pipeline][deadline]") {
  timespec resolution{};
  REQUIRE(::clock_getres(CLOCK_MONOTONIC_COARSE, &resolution) == 0);
  const fnbus::Duration tick = std::chrono::seconds(resolution.tv_sec) +
                               fnbus::Duration(resolution.tv_nsec);
  REQUIRE(tick > fnbus::Duration::zero());
  const fnbus::Duration budget = tick * 100;  // the coarse clock's limit
  fnbus::SteadyClock& clock = fnbus::SteadyClock::instance();
  auto created = Pipeline::Create(
      {.breaker =
           BreakerOptions{.window = budget * 100, .open_for = budget * 100},
       .deadline = budget},
      fnbus::detail::type_slot<Order>(), fnbus::event_type_name<Order>(),
      clock);
  REQUIRE(created.ok());
  Pipeline& pipeline = **created;
  const Order order{.id = "1"};
  auto run = [&](fnbus::Duration ran_past_deadline, fnbus::TimePoint& seen) {
    Context context(fnbus::event_type_name<Order>(), "f", {});
    absl::Status failure;
    Pipeline::Call handler = [&](const void*, Context&, absl::Status&) {
      seen = context.deadline();
      if (ran_past_deadline != fnbus::Duration::max()) {
        std::this_thread::sleep_until(seen + ran_past_deadline);
      }
      return Outcome::kDelivered;
    };
    return pipeline.run(&order, context, failure, handler);
  };

  fnbus::TimePoint seen;
  const fnbus::TimePoint before = clock.now();
  CHECK(run(fnbus::Duration::max(), seen) == Outcome::kDelivered);  // quick
  const fnbus::TimePoint after = clock.now();
  // Never later than the exact deadline; early by the coarse clock's lag
  // (a tick; bounded here by half the deadline, 50 ticks, so that a
  // kernel tick served late on a loaded machine does not matter).
  CHECK(seen <= after + budget);
  CHECK(seen >= before + budget / 2);

  // Past the deadline by 1 ns (sleep_until wakes no earlier): the end is
  // read exactly, and the call is late whatever the coarse clock says.
  CHECK(run(1ns, seen) == Outcome::kTimedOut);
  CHECK(pipeline.breaker()->stats().failures == 1);
}
