// How to test your own handlers with fnbus's testing kit (Catch2 v2; the
// kit itself uses no test framework). Copy this file next to your handler
// and replace OrderService with it. It shows:
//
//   1. Execution::kInline  -- handlers run inside publish(): assert right
//                             after it, including the trace ids that link
//                             a follow-up event to its cause.
//   2. Execution::kManual  -- nothing runs until the test says so:
//                             run_one(), run_all(), run_until_idle().
//   3. ManualClock         -- the bus's time moves only when the test
//                             advances it.
//   4. ErrorRecorder       -- a failing handler, reported to the error sink.
//   5. the thread pool     -- what production runs: EventRecorder::wait_for.
//
// Built as the `testing_handlers` executable, run as ctest
// example.testing_handlers.
//
// The idiom for waiting is `REQUIRE(recorder.wait_for(n, timeout));` --
// keep the call inside the assertion: on failure Catch2 prints
//   expected 3 shop.PaymentRequested events within 5000ms, recorded 2:
//   [PaymentRequested{order 1, ...}, PaymentRequested{order 2, ...}]

#include "order_service.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "shop_events.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/testing.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::EventTrace;
using fnbus::Execution;
using fnbus::testing::ErrorRecorder;
using fnbus::testing::EventRecorder;
using fnbus::testing::ManualClock;
using shop::OrderConfirmed;
using shop::OrderCreated;
using shop::OrderService;
using shop::PaymentCompleted;
using shop::PaymentRequested;

// Creates the bus, failing the test if the configuration is refused.
std::unique_ptr<fnbus::EventBus> make_bus(fnbus::BusConfig config) {
  auto bus = fnbus::EventBus::Create(std::move(config));
  REQUIRE(bus.ok());
  return *std::move(bus);
}

fnbus::BusConfig config_for(Execution execution) {
  fnbus::BusConfig config;
  config.execution = execution;
  return config;
}

// The other side of the flow, faked: a payment provider that accepts every
// PaymentRequested at once. Holds its subscription like OrderService.
class FakePaymentGateway {
 public:
  explicit FakePaymentGateway(fnbus::EventBus& bus)
      : subscription_(bus.subscribe<PaymentRequested>(
            [bus = &bus](const PaymentRequested& request) {
              return bus->publish(
                  PaymentCompleted{.order_id = request.order_id,
                                   .amount_cents = request.amount_cents});
            },
            {.name = "fake_payment_gateway"})) {}

 private:
  fnbus::Subscription subscription_;
};

const OrderCreated kBooks{
    .order_id = 1001, .customer_id = 7, .amount_cents = 2'599, .items = 1};
const OrderCreated kLamp{
    .order_id = 1002, .customer_id = 8, .amount_cents = 12'000, .items = 3};

// ---------------------------------------------------------------------------
// 1. Execution::kInline: publish() returns after the handlers ran.

TEST_CASE("order_service: a valid order requests its payment (kInline)",
          "[order_service]") {
  auto bus = make_bus(config_for(Execution::kInline));
  // Recorders first: they see each event before the service does.
  EventRecorder<OrderCreated> orders(*bus);
  EventRecorder<PaymentRequested> payments(*bus);
  OrderService service(*bus);

  REQUIRE(bus->publish(kBooks).ok());

  // The handler ran inside publish(), and so did the follow-up's dispatch.
  REQUIRE(payments.size() == 1);
  const PaymentRequested payment = payments.last();
  CHECK(payment.order_id == 1001);
  CHECK(payment.amount_cents == 2'599);

  // The follow-up names the order as its parent and shares its
  // correlation id: both can be followed through logs and traces.
  const EventTrace order = orders.last_trace();
  const EventTrace follow_up = payments.last_trace();
  CHECK(order.event_id != 0);
  CHECK(follow_up.context.parent_id == order.event_id);
  CHECK(follow_up.context.correlation_id == order.context.correlation_id);
  CHECK(follow_up.event_id != order.event_id);
}

TEST_CASE("order_service: one correlation id runs through the whole flow",
          "[order_service]") {
  auto bus = make_bus(config_for(Execution::kInline));
  EventRecorder<PaymentRequested> payments(*bus);
  EventRecorder<PaymentCompleted> completed(*bus);
  EventRecorder<OrderConfirmed> confirmed(*bus);
  OrderService service(*bus);
  FakePaymentGateway gateway(*bus);

  // E.g. the id of the HTTP request that created the order.
  fnbus::PublishOptions options;
  options.trace = fnbus::TraceContext{.correlation_id = 0xC0FFEE};
  REQUIRE(bus->publish(kBooks, options).ok());

  REQUIRE(confirmed.size() == 1);
  CHECK(confirmed.last().order_id == 1001);
  // Each event is caused by the one before it.
  CHECK(payments.last_trace().context.correlation_id == 0xC0FFEE);
  CHECK(completed.last_trace().context.parent_id ==
        payments.last_trace().event_id);
  CHECK(confirmed.last_trace().context.parent_id ==
        completed.last_trace().event_id);
  CHECK(confirmed.last_trace().context.correlation_id == 0xC0FFEE);
}

// ---------------------------------------------------------------------------
// 2. Execution::kManual: the test decides when each event runs.

TEST_CASE("order_service: step through the flow (kManual)", "[order_service]") {
  auto bus = make_bus(config_for(Execution::kManual));
  EventRecorder<OrderCreated> orders(*bus);
  EventRecorder<PaymentRequested> payments(*bus);
  EventRecorder<OrderConfirmed> confirmed(*bus);
  OrderService service(*bus);
  FakePaymentGateway gateway(*bus);

  REQUIRE(bus->publish(kBooks).ok());
  // Queued, not run.
  CHECK(orders.empty());
  CHECK(payments.empty());
  CHECK(bus->stats().queue_depth == 1);

  // Runs the OrderCreated: the service handled it and queued the payment.
  REQUIRE(bus->run_one());
  CHECK(orders.size() == 1);
  CHECK(payments.empty());
  CHECK(bus->stats().queue_depth == 1);

  // PaymentRequested -> PaymentCompleted -> OrderConfirmed.
  CHECK(bus->run_until_idle() == 3);
  CHECK(payments.size() == 1);
  REQUIRE(confirmed.size() == 1);
  CHECK(confirmed.last().order_id == 1001);
  CHECK_FALSE(bus->run_one());  // nothing left
}

TEST_CASE("order_service: run_all runs one generation of events (kManual)",
          "[order_service]") {
  auto bus = make_bus(config_for(Execution::kManual));
  EventRecorder<OrderCreated> orders(*bus);
  EventRecorder<PaymentRequested> payments(*bus);
  OrderService service(*bus);

  REQUIRE(bus->publish(kBooks).ok());
  REQUIRE(bus->publish(kLamp).ok());
  // The two orders, not the payments they queue.
  CHECK(bus->run_all() == 2);
  CHECK(orders.size() == 2);
  CHECK(payments.empty());
  CHECK(bus->run_all() == 2);
  REQUIRE(payments.size() == 2);
  CHECK(payments.at(0).order_id == 1001);  // in publish order
  CHECK(payments.at(1).order_id == 1002);
}

// ---------------------------------------------------------------------------
// 3. A ManualClock: the bus's time stands still until the test moves it.

TEST_CASE("order_service: the payment window starts on the bus clock",
          "[order_service]") {
  auto clock = std::make_shared<ManualClock>();
  fnbus::BusConfig config = config_for(Execution::kManual);
  config.clock = clock;
  auto bus = make_bus(std::move(config));
  EventRecorder<PaymentRequested> payments(*bus);
  OrderService service(*bus, {.payment_window = 15min});

  const fnbus::TimePoint published_at = clock->now();
  REQUIRE(bus->publish(kBooks).ok());
  // The order waits in the queue for five (simulated) minutes...
  clock->advance(5min);
  REQUIRE(bus->run_until_idle() == 2);
  // ...and the window is counted from when the handler ran.
  REQUIRE(payments.size() == 1);
  CHECK(payments.last().expires_at == published_at + 5min + 15min);
  CHECK(payments.last().expires_at == clock->now() + 15min);
}

// ---------------------------------------------------------------------------
// 4. A failing handler: its error goes to the error sink.

TEST_CASE("order_service: a bad order is reported to the error sink",
          "[order_service]") {
  ErrorRecorder errors;  // before the bus: the bus calls its sink
  fnbus::BusConfig config = config_for(Execution::kInline);
  config.error_sink = errors.sink();
  auto bus = make_bus(std::move(config));
  EventRecorder<PaymentRequested> payments(*bus);
  OrderService service(*bus, {.max_amount_cents = 100'000});

  struct Case {
    OrderCreated order;
    const char* reason;
  };
  const Case bad = GENERATE(
      Case{{.order_id = 1, .amount_cents = 100, .items = 0}, "has no items"},
      Case{{.order_id = 2, .amount_cents = 0, .items = 1},
           "has a non-positive amount"},
      Case{{.order_id = 3, .amount_cents = 250'000, .items = 1},
           "is over the limit of 100000 cents"});
  INFO(bad.order);

  // Accepted by the bus; refused by the handler.
  REQUIRE(bus->publish(bad.order).ok());

  CHECK(payments.empty());  // nothing published for a bad order
  REQUIRE(errors.size() == 1);
  const auto error = errors.last();
  CHECK(error.function_name == "order_service.request_payment");
  CHECK(error.event_type == "shop.OrderCreated");
  CHECK(error.code == absl::StatusCode::kInvalidArgument);
  CHECK(error.message ==
        "order " + std::to_string(bad.order.order_id) + " " + bad.reason);
  CHECK(bus->stats().failed == 1);

  // The handler can also be called directly, without dispatch.
  CHECK(service.on_order_created(bad.order).code() ==
        absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// 5. The thread pool, as in production: wait (bounded) for the workers.

TEST_CASE("order_service: orders flow through the thread pool",
          "[order_service]") {
  ErrorRecorder errors;
  fnbus::BusConfig config;  // Execution::kThreadPool
  config.workers = 2;
  config.error_sink = errors.sink();
  auto bus = make_bus(std::move(config));
  EventRecorder<PaymentRequested> payments(*bus);
  EventRecorder<OrderConfirmed> confirmed(*bus);
  OrderService service(*bus);
  FakePaymentGateway gateway(*bus);

  const std::vector<OrderCreated> orders = {
      kBooks,
      kLamp,
      {.order_id = 1003, .customer_id = 9, .amount_cents = 4'250, .items = 2},
      {.order_id = 1004, .customer_id = 9, .amount_cents = 0, .items = 2},
  };
  for (const OrderCreated& order : orders) {
    REQUIRE(bus->publish(order).ok());
  }

  // The call stays inside REQUIRE, so a failure prints what was recorded.
  REQUIRE(confirmed.wait_for(3, 5s));
  REQUIRE(errors.wait_for(1, 5s));
  REQUIRE(bus->shutdown().ok());  // drain: nothing runs after this

  // Workers run events in parallel: compare as sets, not sequences.
  std::vector<std::int64_t> ids;
  for (const OrderConfirmed& order : confirmed.events()) {
    ids.push_back(order.order_id);
  }
  std::sort(ids.begin(), ids.end());
  CHECK(ids == std::vector<std::int64_t>{1001, 1002, 1003});
  CHECK(payments.size() == 3);
  CHECK(errors.size() == 1);
  CHECK(errors.last().message == "order 1004 has a non-positive amount");
}

}  // namespace
