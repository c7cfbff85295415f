// Payments: a flaky gateway behind a circuit breaker, a fallback, and
// unpaid orders cancelled by a timer.
//
//   OrderPlaced      -> arm_unpaid_timer: publish_after(30 min, CancelIfUnpaid)
//                    -> request_payment -> PaymentRequested (unless the
//                       customer walks away)
//   PaymentRequested -> charge_card (breaker; fallback: hold_payment)
//                       -> PaymentCompleted
//   PaymentCompleted -> disarm_unpaid_timer (cancels the order's timer)
//   CancelIfUnpaid   -> cancel_order
//
// The gateway is down for the first orders: charge_card fails, the breaker
// opens after 3 failures, and while it is open hold_payment keeps the
// payments without calling the gateway at all (each failed charge is held
// too: the fallback also runs after a failure). When the gateway is back
// and the breaker's cool-down has passed, the shop charges the held
// payments; a probe closes the breaker. The customer who walked away has
// their order cancelled by its timer, 30 minutes after placing it; every
// other timer is cancelled by the payment.
//
// Time is simulated: the bus runs on a testing::ManualClock with
// Execution::kManual, so 39 minutes of the shop play out in a millisecond
// and the output is the same on every run. In production the same
// functions run on a thread-pool bus and the steady clock (the default).

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "checks.hpp"
#include "fmt/core.h"
#include "parts.hpp"

#include "fnbus/fnbus.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace shop {
namespace {

using namespace std::chrono_literals;

constexpr std::int64_t kOrders = 8;
constexpr std::int64_t kWalksAway = 7;  // never pays

// A stand-in for the payment provider, down until bring_up().
class Gateway {
 public:
  absl::Status charge(std::int64_t order_id) {
    ++calls_;
    if (!up_) {
      return absl::UnavailableError(
          fmt::format("gateway unreachable charging order {}", order_id));
    }
    return absl::OkStatus();
  }
  void bring_up() { up_ = true; }
  [[nodiscard]] int calls() const { return calls_; }

 private:
  bool up_ = false;
  int calls_ = 0;
};

// The shop's state (a database in a real service).
struct Shop {
  Gateway gateway;
  std::map<std::int64_t, fnbus::timers::TimerHandle> unpaid;  // by order
  std::vector<PaymentRequested> held;  // payments to charge later
  std::vector<std::int64_t> paid;
  std::vector<std::int64_t> cancelled;
};

fnbus::FunctionOptions charge_card_options(Shop& shop) {
  fnbus::FunctionOptions options = named("charge_card");
  // Open when at least half of the calls in the last 10 minutes failed
  // (3 calls at least); probe the gateway again after 5 minutes, with one
  // call.
  options.breaker = fnbus::resilience::BreakerOptions{
      .failure_rate = 0.5,
      .minimum_calls = 3,
      .window = 10min,
      .window_buckets = 10,
      .open_for = 5min,
      .half_open_probes = 1,
  };
  options.fallback = [&shop](const PaymentRequested& payment) {
    fmt::print(
        "[hold_payment] order {}: held, the customer is told the "
        "payment is pending\n",
        payment.order_id);
    shop.held.push_back(payment);
  };
  return options;
}

std::vector<fnbus::Subscription> subscribe_functions(fnbus::EventBus& bus,
                                                     Shop& shop) {
  std::vector<fnbus::Subscription> subscriptions;
  subscriptions.push_back(bus.subscribe(
      [&bus, &shop](const OrderPlaced& order) {
        auto timer = bus.publish_after(
            30min, CancelIfUnpaid{.order_id = order.order_id});
        if (timer.ok()) shop.unpaid[order.order_id] = *timer;
      },
      named("arm_unpaid_timer")));
  subscriptions.push_back(bus.subscribe(
      [&bus](const OrderPlaced& order) {
        if (order.order_id == kWalksAway) return absl::OkStatus();
        return bus.publish(PaymentRequested{
            .order_id = order.order_id, .amount_cents = order.amount_cents});
      },
      named("request_payment")));
  subscriptions.push_back(bus.subscribe(
      [&bus, &shop](const PaymentRequested& payment) {
        if (absl::Status status = shop.gateway.charge(payment.order_id);
            !status.ok()) {
          return status;
        }
        fmt::print("[charge_card] order {}: charged {}\n", payment.order_id,
                   dollars(payment.amount_cents));
        return bus.publish(
            PaymentCompleted{.order_id = payment.order_id,
                             .amount_cents = payment.amount_cents});
      },
      charge_card_options(shop)));
  subscriptions.push_back(bus.subscribe(
      [&shop](const PaymentCompleted& payment) {
        shop.unpaid[payment.order_id].cancel();
        shop.unpaid.erase(payment.order_id);
        shop.paid.push_back(payment.order_id);
      },
      named("disarm_unpaid_timer")));
  subscriptions.push_back(bus.subscribe(
      [&shop](const CancelIfUnpaid& unpaid) {
        fmt::print(
            "[cancel_order] order {}: unpaid after 30 minutes, "
            "cancelled\n",
            unpaid.order_id);
        shop.unpaid.erase(unpaid.order_id);
        shop.cancelled.push_back(unpaid.order_id);
      },
      named("cancel_order")));
  return subscriptions;
}

// The simulated clock moves on; the timers due by then publish, and the
// bus runs everything queued.
void advance(fnbus::testing::ManualClock& clock, fnbus::EventBus& bus,
             fnbus::Duration step) {
  clock.advance(step);
  bus.run_due_timers();
  bus.run_until_idle();
}

const fnbus::metrics::FunctionMetrics* function(
    const fnbus::metrics::MetricsSnapshot& snapshot, std::string_view event,
    std::string_view name) {
  return snapshot.find_function(event, name);
}

void check_outcome(Checks& check, const Shop& shop, fnbus::EventBus& bus) {
  const fnbus::metrics::MetricsSnapshot m = bus.metrics();
  const auto* charge =
      function(m, fnbus::event_type_name<PaymentRequested>(), "charge_card");
  check(charge != nullptr, "charge_card has metrics");
  if (charge == nullptr) return;
  fmt::print(
      "charge_card: delivered={} failed={} fell_back={}; gateway calls={}\n",
      charge->delivered, charge->failed, charge->fell_back,
      shop.gateway.calls());
  fmt::print("timers: scheduled={} fired={} cancelled={} pending={}\n",
             m.timers.scheduled, m.timers.fired, m.timers.cancelled,
             m.timers.pending);
  check(charge->failed == 3, "3 charges failed before the breaker opened");
  check(charge->fell_back == kOrders - 1,
        "every payment made while the gateway was down was held");
  check(shop.gateway.calls() == 3 + (kOrders - 1),
        "no gateway call while the breaker was open");
  check(shop.paid.size() == static_cast<std::size_t>(kOrders - 1),
        "every order but one was paid");
  check(shop.cancelled == std::vector<std::int64_t>{kWalksAway},
        "only the order never paid was cancelled");
  check(m.timers.scheduled == kOrders && m.timers.fired == 1 &&
            m.timers.cancelled == kOrders - 1 && m.timers.pending == 0,
        "one timer fired, the others were cancelled by the payment");
}

}  // namespace

bool run_payments() {
  fmt::print(
      "\n== payments: a gateway outage behind a circuit breaker, unpaid "
      "orders cancelled by a timer ==\n");
  Checks check("payments");
  auto clock = std::make_shared<fnbus::testing::ManualClock>();
  fnbus::BusConfig config;
  config.execution = fnbus::Execution::kManual;
  config.clock = clock;
  config.error_sink = [](const fnbus::HandlerError& error) {
    fmt::print("[{}] failed: {}\n", error.function_name,
               std::string(error.message));
  };
  auto bus_or = fnbus::EventBus::Create(std::move(config));
  if (!bus_or.ok()) {
    check(false, "cannot start the bus: " + bus_or.status().ToString());
    return check.report();
  }
  fnbus::EventBus& bus = **bus_or;
  Shop shop;
  const std::vector<fnbus::Subscription> functions =
      subscribe_functions(bus, shop);

  for (std::int64_t id = 1; id <= kOrders; ++id) {
    (void)bus.publish(OrderPlaced{.order_id = id, .amount_cents = 2'500 * id});
    advance(*clock, bus, 30s);  // an order every 30 s, the gateway down
  }
  fmt::print("{} payments held; the gateway comes back\n", shop.held.size());
  shop.gateway.bring_up();
  advance(*clock, bus, 5min);  // the breaker's cool-down passes
  std::vector<PaymentRequested> held = std::exchange(shop.held, {});
  for (const PaymentRequested& payment : held) (void)bus.publish(payment);
  bus.run_until_idle();
  advance(*clock, bus, 30min);  // the unpaid order's timer fires

  (void)bus.shutdown(fnbus::ShutdownMode::kDrain);
  check_outcome(check, shop, bus);
  return check.report();
}

}  // namespace shop
