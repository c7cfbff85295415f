// A function's stages on a bus (FunctionOptions: when, idempotency_key,
// breaker, fallback): what runs, what is counted per function, what the
// dead-letter and error sinks hear. Deterministic: Execution::kManual and
// a ManualClock.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/metrics/exposition.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace fnbus_stages_test {

using fnbus::BusConfig;
using fnbus::DeadLetter;
using fnbus::DeadLetterReason;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::HandlerError;
using fnbus::metrics::FunctionMetrics;
using fnbus::resilience::BreakerOptions;
using fnbus::resilience::BreakerState;
using fnbus::testing::ManualClock;
using fnbus::testing_support::make_bus;
using namespace std::chrono_literals;

struct OrderPlaced {
  int order_id = 0;
  long total_cents = 0;
};
struct PaymentRequested {
  std::string payment_id;
};

// A manual bus on a ManualClock that keeps what its sinks hear.
struct StagesBus {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::vector<std::string> errors;  // "function: message"
  struct KeptDeadLetter {
    DeadLetterReason reason;
    std::string function;
    std::string payment_id;
  };
  std::vector<KeptDeadLetter> dead_letters;
  std::unique_ptr<EventBus> bus;

  StagesBus() {
    BusConfig config{.execution = Execution::kManual, .clock = clock};
    config.error_sink = [this](const HandlerError& error) {
      errors.push_back(std::string(error.function_name) + ": " +
                       std::string(error.message));
    };
    config.dead_letter_sink = [this](const DeadLetter& letter) {
      const PaymentRequested* payment = letter.event.get<PaymentRequested>();
      dead_letters.push_back(
          {letter.reason, std::string(letter.function),
           payment != nullptr ? payment->payment_id : std::string()});
    };
    bus = make_bus(std::move(config));
  }

  template <typename E>
  void publish_and_run(E event) {
    REQUIRE(bus->publish(std::move(event)).ok());
    REQUIRE(bus->run_all() == 1);
  }

  // The metrics of one function (which must exist).
  FunctionMetrics function(const std::string& name) const {
    for (const FunctionMetrics& f : bus->metrics().functions) {
      if (f.function == name) return f;
    }
    FAIL("no function named " << name);
    return {};
  }
};

BreakerOptions trips_after_two() {
  return {.failure_rate = 0.5,
          .minimum_calls = 2,
          .window = 10s,
          .window_buckets = 10,
          .open_for = 30s,
          .half_open_probes = 1};
}

TEST_CASE(
    "stages: a condition filters events per function, counted as "
    "filtered",
    "[stages]") {
  StagesBus s;
  std::vector<int> reviewed;
  int all = 0;
  auto review = s.bus->subscribe(
      [&](const OrderPlaced& o) { reviewed.push_back(o.order_id); },
      {.name = "fraud-review",
       .when = [](const OrderPlaced& o) { return o.total_cents > 100'000; }});
  auto every = s.bus->subscribe([&](const OrderPlaced&) { ++all; },
                                {.name = "every-order"});
  s.publish_and_run(OrderPlaced{.order_id = 1, .total_cents = 5'000});
  s.publish_and_run(OrderPlaced{.order_id = 2, .total_cents = 250'000});
  s.bus->trigger(OrderPlaced{.order_id = 3, .total_cents = 1});

  CHECK(reviewed == std::vector<int>{2});
  CHECK(all == 3);
  const FunctionMetrics f = s.function("fraud-review");
  CHECK(f.filtered == 1);  // trigger() counts only failures
  CHECK(f.delivered == 1);
  CHECK(f.failed == 0);
  CHECK(s.bus->stats().unhandled == 0);
  CHECK(s.bus->stats().failed == 0);
  CHECK(s.errors.empty());
}

TEST_CASE("stages: an idempotency key runs a duplicate once", "[stages]") {
  StagesBus s;
  std::vector<std::string> charged;
  auto charge = s.bus->subscribe(
      [&](const PaymentRequested& p) { charged.push_back(p.payment_id); },
      {.name = "charge", .idempotency_key = [](const PaymentRequested& p) {
         return p.payment_id;
       }});
  s.publish_and_run(PaymentRequested{"pay-1"});
  s.publish_and_run(PaymentRequested{"pay-1"});  // a broker re-delivery
  s.publish_and_run(PaymentRequested{"pay-2"});
  CHECK(charged == std::vector<std::string>{"pay-1", "pay-2"});
  CHECK(s.function("charge").duplicates == 1);
  CHECK(s.function("charge").delivered == 2);
}

TEST_CASE("stages: an open breaker dead-letters for its function alone",
          "[stages]") {
  StagesBus s;
  int gateway_calls = 0;
  int audit_calls = 0;
  auto charge = s.bus->subscribe(
      [&](const PaymentRequested&) {
        ++gateway_calls;
        return absl::UnavailableError("gateway down");
      },
      {.name = "charge", .breaker = trips_after_two()});
  auto audit = s.bus->subscribe([&](const PaymentRequested&) { ++audit_calls; },
                                {.name = "audit"});
  s.publish_and_run(PaymentRequested{"pay-1"});
  s.publish_and_run(PaymentRequested{"pay-2"});
  s.publish_and_run(PaymentRequested{"pay-3"});  // open now

  CHECK(gateway_calls == 2);
  CHECK(audit_calls == 3);
  REQUIRE(s.dead_letters.size() == 1);
  CHECK(s.dead_letters[0].reason == DeadLetterReason::kCircuitOpen);
  CHECK(s.dead_letters[0].function == "charge");
  CHECK(s.dead_letters[0].payment_id == "pay-3");
  const FunctionMetrics f = s.function("charge");
  CHECK(f.failed == 2);
  CHECK(f.rejected == 1);
  CHECK(s.errors.size() == 2);
  // The event was dispatched (its other function ran): not a bus-level
  // dead letter.
  CHECK(s.bus->stats().dead_lettered == 0);

  // After the cool-down a probe goes through, succeeds and closes it.
  s.clock->advance(30s);
  int recovered = 0;
  auto healthy =
      s.bus->subscribe([&](const PaymentRequested&) { ++recovered; },
                       {.name = "charge-v2", .breaker = trips_after_two()});
  s.publish_and_run(PaymentRequested{"pay-4"});
  CHECK(gateway_calls == 3);  // the probe (it failed again: open again)
  CHECK(recovered == 1);
  CHECK(s.function("charge").failed == 3);
}

// The breaker metrics of one function as one line:
// "<state> closed/half_open/open opened,half_opened,closed".
std::string breaker_line(const FunctionMetrics& f) {
  const auto state = f.breaker_state();
  return std::string(state ? to_string(*state) : "none") + " " +
         std::to_string(f.breakers.closed) + "/" +
         std::to_string(f.breakers.half_open) + "/" +
         std::to_string(f.breakers.open) + " " +
         std::to_string(f.breaker_opened) + "," +
         std::to_string(f.breaker_half_opened) + "," +
         std::to_string(f.breaker_closed);
}

TEST_CASE(
    "stages: a breaker's state and transitions are in its function's "
    "metrics, JSON and Prometheus text",
    "[stages][breaker_metrics]") {
  StagesBus s;
  bool failing = true;
  BreakerOptions options = trips_after_two();
  options.half_open_probes = 2;  // so that half-open lasts an event
  auto charge = s.bus->subscribe(
      [&](const PaymentRequested&) {
        return failing ? absl::UnavailableError("gateway down")
                       : absl::OkStatus();
      },
      {.name = "charge", .breaker = options});
  auto audit =
      s.bus->subscribe([](const PaymentRequested&) {}, {.name = "audit"});

  CHECK(breaker_line(s.function("charge")) == "closed 1/0/0 0,0,0");
  CHECK(breaker_line(s.function("audit")) == "none 0/0/0 0,0,0");
  CHECK_FALSE(s.function("audit").has_breaker_metrics());

  s.publish_and_run(PaymentRequested{"pay-1"});
  CHECK(breaker_line(s.function("charge")) == "closed 1/0/0 0,0,0");
  s.publish_and_run(PaymentRequested{"pay-2"});  // trips
  CHECK(breaker_line(s.function("charge")) == "open 0/0/1 1,0,0");
  s.publish_and_run(PaymentRequested{"pay-3"});  // refused: no transition
  CHECK(breaker_line(s.function("charge")) == "open 0/0/1 1,0,0");
  CHECK(s.function("charge").rejected == 1);

  // Cooled down: the first probe succeeds (still half-open), the second
  // closes it.
  s.clock->advance(30s);
  failing = false;
  s.publish_and_run(PaymentRequested{"pay-4"});
  CHECK(breaker_line(s.function("charge")) == "half_open 0/1/0 1,1,0");
  {
    const std::string text =
        fnbus::metrics::to_prometheus_text(s.bus->metrics());
    INFO(text);
    CHECK_THAT(text, Catch::Contains(
                         "fnbus_function_breaker_state{event=\"fnbus_stages_"
                         "test::PaymentRequested\",function=\"charge\"} 1\n"));
    CHECK_THAT(text, Catch::Contains(
                         "fnbus_function_breakers{event=\"fnbus_stages_test::"
                         "PaymentRequested\",function=\"charge\",state="
                         "\"half_open\"} 1\n"));
  }
  s.publish_and_run(PaymentRequested{"pay-5"});
  CHECK(breaker_line(s.function("charge")) == "closed 1/0/0 1,1,1");

  // Open again, and a failed probe: half-open -> open.
  failing = true;
  s.publish_and_run(PaymentRequested{"pay-6"});
  s.publish_and_run(PaymentRequested{"pay-7"});
  CHECK(breaker_line(s.function("charge")) == "open 0/0/1 2,1,1");
  s.clock->advance(30s);
  s.publish_and_run(PaymentRequested{"pay-8"});
  CHECK(breaker_line(s.function("charge")) == "open 0/0/1 3,2,1");

  const fnbus::metrics::MetricsSnapshot snapshot = s.bus->metrics();
  const std::string text = fnbus::metrics::to_prometheus_text(snapshot);
  INFO(text);
  const std::string labels =
      "{event=\"fnbus_stages_test::PaymentRequested\",function=\"charge\"";
  for (const std::string& line : std::vector<std::string>{
           "# TYPE fnbus_function_breaker_state gauge\n",
           "fnbus_function_breaker_state" + labels + "} 2\n",
           "fnbus_function_breakers" + labels + ",state=\"closed\"} 0\n",
           "fnbus_function_breakers" + labels + ",state=\"half_open\"} 0\n",
           "fnbus_function_breakers" + labels + ",state=\"open\"} 1\n",
           "# TYPE fnbus_function_breaker_opened_total counter\n",
           "fnbus_function_breaker_opened_total" + labels + "} 3\n",
           "fnbus_function_breaker_half_opened_total" + labels + "} 2\n",
           "fnbus_function_breaker_closed_total" + labels + "} 1\n",
       }) {
    CHECK_THAT(text, Catch::Contains(line));
  }
  // The function without a breaker has no breaker series.
  CHECK_THAT(text, !Catch::Contains("breaker_state{event=\"fnbus_stages_test::"
                                    "PaymentRequested\",function=\"audit\""));
  const std::string json = fnbus::metrics::to_json(snapshot);
  INFO(json);
  CHECK_THAT(json, Catch::Contains(
                       "\"breaker_state\":\"open\",\"breakers\":{\"closed\":0,"
                       "\"half_open\":0,\"open\":1},\"breaker_opened\":3,"
                       "\"breaker_half_opened\":2,\"breaker_closed\":1}"));
}

TEST_CASE(
    "stages: subscriptions sharing a function's name share its breaker "
    "series: the state is the most open, ended breakers leave the gauge",
    "[stages][breaker_metrics]") {
  StagesBus s;
  auto failing = s.bus->subscribe(
      [](const PaymentRequested&) {
        return absl::UnavailableError("gateway down");
      },
      {.name = "charge", .breaker = trips_after_two()});
  auto healthy =
      s.bus->subscribe([](const PaymentRequested&) {},
                       {.name = "charge", .breaker = trips_after_two()});
  CHECK(breaker_line(s.function("charge")) == "closed 2/0/0 0,0,0");
  s.publish_and_run(PaymentRequested{"pay-1"});
  s.publish_and_run(PaymentRequested{"pay-2"});  // the first trips
  CHECK(breaker_line(s.function("charge")) == "open 1/0/1 1,0,0");

  // The open one ends: the gauge counts live breakers alone; the
  // transitions stay counted.
  failing.cancel();
  CHECK(breaker_line(s.function("charge")) == "closed 1/0/0 1,0,0");
  healthy.cancel();
  CHECK(breaker_line(s.function("charge")) == "none 0/0/0 1,0,0");
  const std::string text = fnbus::metrics::to_prometheus_text(s.bus->metrics());
  INFO(text);
  CHECK_THAT(text, !Catch::Contains("fnbus_function_breaker_state{"));
  CHECK_THAT(text,
             Catch::Contains(
                 "fnbus_function_breaker_opened_total{event=\"fnbus_"
                 "stages_test::PaymentRequested\",function=\"charge\"} 1\n"));
}

TEST_CASE(
    "stages: a fallback handles failures and the open breaker, and "
    "the failure is still reported",
    "[stages]") {
  StagesBus s;
  std::vector<std::string> queued_for_later;
  std::vector<std::string> on_error;
  auto charge = s.bus->subscribe(
      [&](const PaymentRequested&) {
        return absl::UnavailableError("gateway down");
      },
      {.name = "charge",
       .on_error =
           [&](const HandlerError& e) {
             on_error.push_back(std::string(e.message));
           },
       .breaker = trips_after_two(),
       .fallback =
           [&](const PaymentRequested& p) {
             queued_for_later.push_back(p.payment_id);
           }});
  s.publish_and_run(PaymentRequested{"pay-1"});
  s.publish_and_run(PaymentRequested{"pay-2"});
  s.publish_and_run(PaymentRequested{"pay-3"});  // open: fallback alone

  CHECK(queued_for_later ==
        std::vector<std::string>{"pay-1", "pay-2", "pay-3"});
  CHECK(on_error == std::vector<std::string>{"gateway down", "gateway down"});
  CHECK(s.errors.size() == 2);
  CHECK(s.dead_letters.empty());
  const FunctionMetrics f = s.function("charge");
  CHECK(f.failed == 2);
  CHECK(f.fell_back == 3);
  CHECK(f.rejected == 0);
}

TEST_CASE("stages: the outcomes are in the Prometheus text", "[stages]") {
  StagesBus s;
  auto f = s.bus->subscribe([](const OrderPlaced&) {},
                            {.name = "big", .when = [](const OrderPlaced& o) {
                               return o.total_cents > 10;
                             }});
  s.publish_and_run(OrderPlaced{.order_id = 1, .total_cents = 1});
  const std::string text = fnbus::metrics::to_prometheus_text(s.bus->metrics());
  CHECK_THAT(text,
             Catch::Contains("fnbus_function_filtered_total{event=\"fnbus_"
                             "stages_test::OrderPlaced\",function=\"big\"} 1"));
  CHECK_THAT(text, Catch::Contains("# TYPE fnbus_function_fell_back_total "
                                   "counter"));
}

TEST_CASE(
    "stages: a call that ends past its deadline is timed out and late, "
    "reported, a failure for the breaker, and handed to the fallback",
    "[stages][deadline]") {
  StagesBus s;
  int gateway_calls = 0;
  int fallbacks = 0;
  std::vector<absl::StatusCode> on_error;
  auto charge = s.bus->subscribe(
      [&](const PaymentRequested&) {
        ++gateway_calls;
        s.clock->advance(120ms);  // the gateway is slow, but answers OK
      },
      {.name = "charge",
       .on_error = [&](const HandlerError& e) { on_error.push_back(e.code); },
       .breaker = trips_after_two(),
       .fallback = [&](const PaymentRequested&) { ++fallbacks; },
       .deadline = 100ms});
  s.publish_and_run(PaymentRequested{"pay-1"});
  s.publish_and_run(PaymentRequested{"pay-2"});
  s.publish_and_run(PaymentRequested{"pay-3"});  // open: fallback alone

  CHECK(gateway_calls == 2);
  CHECK(fallbacks == 3);
  CHECK(s.errors == std::vector<std::string>{
                        "charge: ran 120ms, past its deadline of 100ms",
                        "charge: ran 120ms, past its deadline of 100ms"});
  CHECK(on_error ==
        std::vector<absl::StatusCode>{absl::StatusCode::kDeadlineExceeded,
                                      absl::StatusCode::kDeadlineExceeded});
  const FunctionMetrics f = s.function("charge");
  CHECK(f.timed_out == 2);
  CHECK(f.late == 2);
  CHECK(f.failed == 2);
  CHECK(f.delivered == 0);
  CHECK(f.fell_back == 3);
  CHECK(f.rejected == 0);
}

TEST_CASE(
    "stages: a failure or a throw past the deadline is timed out, not "
    "late, and carries its own message",
    "[stages][deadline]") {
  StagesBus s;
  bool fail_by_throwing = false;
  auto charge = s.bus->subscribe(
      [&](const PaymentRequested&) {
        s.clock->advance(150ms);
        if (fail_by_throwing) throw std::runtime_error("socket closed");
        return absl::UnavailableError("gateway down");
      },
      {.name = "charge", .deadline = 100ms});
  s.publish_and_run(PaymentRequested{"pay-1"});
  fail_by_throwing = true;
  s.publish_and_run(PaymentRequested{"pay-2"});

  CHECK(s.errors ==
        std::vector<std::string>{
            "charge: failed after 150ms, past its deadline of 100ms: "
            "gateway down",
            "charge: threw after 150ms, past its deadline of 100ms: "
            "socket closed"});
  const FunctionMetrics f = s.function("charge");
  CHECK(f.timed_out == 2);
  CHECK(f.late == 0);
  CHECK(f.failed == 2);
  CHECK(s.bus->stats().failed == 2);
}

TEST_CASE(
    "stages: a call within its deadline sees it in its Context, and its "
    "token is not requested",
    "[stages][deadline]") {
  StagesBus s;
  std::vector<fnbus::TimePoint> deadlines;
  std::vector<bool> requested;
  std::vector<bool> possible;
  auto record = [&](const fnbus::Context& context) {
    deadlines.push_back(context.deadline());
    requested.push_back(context.stop_token().stop_requested());
    possible.push_back(context.stop_token().stop_possible());
  };
  auto charge = s.bus->subscribe(
      [&](const PaymentRequested&, fnbus::Context& context) {
        s.clock->advance(100ms);  // exactly at the deadline: on time
        record(context);
      },
      {.name = "charge", .deadline = 100ms});
  auto audit =
      s.bus->subscribe([&](const PaymentRequested&,
                           fnbus::Context& context) { record(context); },
                       {.name = "audit"});
  const fnbus::TimePoint start = s.clock->now();
  s.publish_and_run(PaymentRequested{"pay-1"});

  REQUIRE(deadlines.size() == 2);
  CHECK(deadlines[0] == start + 100ms);
  CHECK(requested[0] == false);
  CHECK(possible[0] == true);
  // The next function in the same dispatch has no deadline.
  CHECK(deadlines[1] == fnbus::TimePoint::max());
  CHECK(requested[1] == false);
  CHECK(possible[1] == false);
  const FunctionMetrics f = s.function("charge");
  CHECK(f.delivered == 1);
  CHECK(f.timed_out == 0);
  CHECK(f.failed == 0);
  CHECK(s.errors.empty());
}

TEST_CASE(
    "stages: on a thread pool, the watchdog requests the stop token of a "
    "call running past its deadline",
    "[stages][deadline]") {
  auto clock = std::make_shared<ManualClock>();
  std::unique_ptr<EventBus> bus =
      make_bus({.workers = 1, .clock = clock, .record_latency = false});
  std::atomic<bool> started{false};
  std::atomic<bool> saw_stop{false};
  auto slow = bus->subscribe(
      [&](const OrderPlaced&, fnbus::Context& context) {
        // release: the test reads `started` before advancing the clock.
        started.store(true, std::memory_order_release);
        std::mutex mutex;
        std::condition_variable_any wake;
        std::unique_lock lock(mutex);
        // Bounded in real time: a watchdog that never fires fails the
        // test instead of hanging it.
        (void)wake.wait_for(lock, context.stop_token(), 10s,
                            [] { return false; });
        // relaxed: read after shutdown() joined the worker.
        saw_stop.store(context.stop_token().stop_requested(),
                       std::memory_order_relaxed);
      },
      {.name = "slow", .deadline = 100ms});
  REQUIRE(bus->publish(OrderPlaced{.order_id = 1}).ok());
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  // acquire: pairs with the handler's release store.
  while (!started.load(std::memory_order_acquire) &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::yield();
  }
  REQUIRE(started.load(std::memory_order_acquire));
  // The watchdog's timer thread is the clock's only sleeper.
  REQUIRE(clock->wait_for_sleepers(1));
  clock->advance(125ms);  // past the deadline, and a watch period
  REQUIRE(bus->shutdown().ok());

  CHECK(saw_stop.load(std::memory_order_relaxed));
  const fnbus::metrics::MetricsSnapshot m = bus->metrics();
  REQUIRE(m.functions.size() == 1);
  CHECK(m.functions[0].timed_out == 1);
  CHECK(m.functions[0].late == 1);
  CHECK(m.functions[0].failed == 1);
}

TEST_CASE("stages: timed out and late calls are in the Prometheus text",
          "[stages][deadline]") {
  StagesBus s;
  auto f = s.bus->subscribe([&](const OrderPlaced&) { s.clock->advance(2s); },
                            {.name = "slow", .deadline = 1s});
  s.publish_and_run(OrderPlaced{.order_id = 1});
  const std::string text = fnbus::metrics::to_prometheus_text(s.bus->metrics());
  CHECK_THAT(
      text, Catch::Contains("fnbus_function_timed_out_total{event=\"fnbus_"
                            "stages_test::OrderPlaced\",function=\"slow\"} 1"));
  CHECK_THAT(
      text, Catch::Contains("fnbus_function_late_total{event=\"fnbus_"
                            "stages_test::OrderPlaced\",function=\"slow\"} 1"));
  CHECK_THAT(fnbus::metrics::to_json(s.bus->metrics()),
             Catch::Contains("\"timed_out\":1,\"late\":1"));
}

}  // namespace fnbus_stages_test
