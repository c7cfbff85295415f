// subscribe() reads like the code around it: the event type deduced from
// the handler's parameter, and one handler object for several event types
// under one Subscription. (Misuse is a compile error with a sentence: see
// tests/compile_errors/.)

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"

namespace fnbus_subscribe_test {

using fnbus::Context;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::testing_support::make_bus;

struct OrderPlaced {
  int id = 0;
};
struct PaymentCompleted {
  int id = 0;
};
struct OrderShipped {
  int id = 0;
};

std::vector<std::string>* g_log = nullptr;
void log_order(const OrderPlaced& order) {
  g_log->push_back("fn:" + std::to_string(order.id));
}

TEST_CASE("subscribe: the event type is read off the handler's parameter",
          "[subscribe]") {
  std::vector<std::string> log;
  g_log = &log;
  auto bus = make_bus({.execution = Execution::kManual});
  auto by_ref = bus->subscribe([&](const OrderPlaced& o) {
    log.push_back("ref:" + std::to_string(o.id));
  });
  auto by_value = bus->subscribe(
      [&](PaymentCompleted p, Context& context) -> absl::Status {
        log.push_back(std::string(context.function_name()) + ":" +
                      std::to_string(p.id));
        return absl::OkStatus();
      },
      {.name = "settle"});
  auto function = bus->subscribe(&log_order);
  bus->trigger(OrderPlaced{1});
  bus->trigger(PaymentCompleted{2});
  CHECK(log == std::vector<std::string>{"ref:1", "fn:1", "settle:2"});
  const auto functions = bus->metrics().functions;
  bool settle_named = false;
  for (const auto& f : functions) settle_named |= f.function == "settle";
  CHECK(settle_named);
}

// One object, an overload per event of an order's life.
struct OrderSaga {
  std::vector<std::string>* log;
  void operator()(const OrderPlaced& o) {
    log->push_back("placed:" + std::to_string(o.id));
  }
  absl::Status operator()(const PaymentCompleted& p, Context&) {
    log->push_back("paid:" + std::to_string(p.id));
    return absl::OkStatus();
  }
  void operator()(const OrderShipped& s) {
    log->push_back("shipped:" + std::to_string(s.id));
  }
};

TEST_CASE(
    "subscribe: one saga object handles several event types under one "
    "Subscription",
    "[subscribe]") {
  std::vector<std::string> log;
  auto bus = make_bus({.execution = Execution::kManual});
  fnbus::Subscription saga =
      bus->subscribe<OrderPlaced, PaymentCompleted, OrderShipped>(
          OrderSaga{&log}, {.name = "order_saga"});
  CHECK(saga.active());
  REQUIRE(bus->publish(OrderPlaced{7}).ok());
  REQUIRE(bus->publish(PaymentCompleted{7}).ok());
  REQUIRE(bus->publish(OrderShipped{7}).ok());
  CHECK(bus->run_until_idle() == 3);
  CHECK(log == std::vector<std::string>{"placed:7", "paid:7", "shipped:7"});
  // One cancel ends all three.
  saga.cancel();
  CHECK_FALSE(saga.active());
  REQUIRE(bus->publish(OrderPlaced{8}).ok());
  REQUIRE(bus->publish(OrderShipped{8}).ok());
  CHECK(bus->run_until_idle() == 2);
  CHECK(log.size() == 3);
  CHECK(bus->stats().unhandled == 2);
}

TEST_CASE(
    "subscribe: a moved saga Subscription cancels every type when destroyed",
    "[subscribe]") {
  std::vector<std::string> log;
  auto bus = make_bus({.execution = Execution::kManual});
  {
    fnbus::Subscription outer;
    {
      auto saga = bus->subscribe<OrderPlaced, OrderShipped>(OrderSaga{&log});
      outer = std::move(saga);
    }
    bus->trigger(OrderPlaced{1});
    bus->trigger(OrderShipped{1});
    CHECK(log.size() == 2);
  }
  bus->trigger(OrderPlaced{2});
  bus->trigger(OrderShipped{2});
  CHECK(log.size() == 2);
}

}  // namespace fnbus_subscribe_test
