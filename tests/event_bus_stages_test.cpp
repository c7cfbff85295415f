// A function's stages on a bus (FunctionOptions: when, idempotency_key,
// breaker, fallback): what runs, what is counted per function, what the
// dead-letter and error sinks hear. Deterministic: Execution::kManual and
// a ManualClock.

#include <memory>
#include <string>
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

}  // namespace fnbus_stages_test
