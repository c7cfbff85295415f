// Payments: a flaky gateway retried, an outage behind a circuit breaker,
// the payments it turned away kept as dead letters and replayed once the
// gateway is back, a fallback for refunds, and unpaid orders cancelled by
// a timer.
//
//   OrderPlaced      -> arm_unpaid_timer: publish_after(30 min, CancelIfUnpaid)
//                    -> request_payment -> PaymentRequested (unless the
//                       customer walks away)
//   PaymentRequested -> charge_card (retries, breaker, idempotency key)
//                       -> PaymentCompleted
//   RefundRequested  -> refund_card (fallback: refund_as_store_credit)
//   PaymentCompleted -> disarm_unpaid_timer (cancels the order's timer)
//   CancelIfUnpaid   -> cancel_order
//
// 1. The gateway is flaky: it times out on each order's first try.
//    charge_card retries only transient errors (kUnavailable,
//    kDeadlineExceeded; a declined card is not retried), after a jittered
//    backoff, and the second attempt succeeds. The retries are not
//    reported as errors.
// 2. The gateway goes down. The first order's 3 attempts fail: its
//    retries are exhausted, and those failures open the breaker. The next
//    payments are turned away without a call to the gateway. charge_card
//    has no fallback (a charge must happen eventually, with the customer's
//    card), so each of these payments is dead-lettered to a
//    DeadLetterStore, with its reason, attempts and last error. A refund
//    asked for meanwhile can be given another way at once: refund_card's
//    fallback gives it as store credit.
// 3. The gateway is back; once the breaker's cool-down has passed, one
//    customer pays again at the checkout (the probe that closes the
//    breaker), then the shop replays the dead letters. charge_card's
//    idempotency key (the order id) makes the replay of the order already
//    paid a duplicate: no order is charged twice.
// 4. The customer who walked away has their order cancelled by its timer,
//    30 minutes after placing it; every other timer is cancelled by the
//    payment.
//
// Time is simulated: the bus runs on a testing::ManualClock with
// Execution::kManual, so 41 minutes of the shop play out in a few
// milliseconds and the output is the same on every run (the backoff's
// jitter changes when a retry runs, not what happens). In production the
// same functions run on a thread-pool bus and the steady clock (the
// default).

#include <cstdint>
#include <map>
#include <memory>
#include <set>
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
namespace resilience = fnbus::resilience;

constexpr std::int64_t kOrders = 8;
constexpr std::int64_t kFlakyOrders = 3;  // orders 1..3: the gateway is flaky
constexpr std::int64_t kWalksAway = 7;    // never pays
constexpr std::int64_t kPaysAgain = 6;    // pays at the checkout once it is up
constexpr std::int64_t kReturned = 2;     // refunded during the outage

// A stand-in for the payment provider.
class Gateway {
 public:
  enum class State { kFlaky, kDown, kUp };

  absl::Status charge(std::int64_t order_id) {
    ++calls_;
    if (state_ == State::kDown) {
      return absl::UnavailableError(
          fmt::format("gateway unreachable charging order {}", order_id));
    }
    if (state_ == State::kFlaky && tried_.insert(order_id).second) {
      return absl::DeadlineExceededError(
          fmt::format("gateway timed out charging order {}", order_id));
    }
    ++charges_[order_id];
    return absl::OkStatus();
  }
  absl::Status refund(std::int64_t order_id) {
    ++calls_;
    if (state_ != State::kDown) return absl::OkStatus();
    return absl::UnavailableError(
        fmt::format("gateway unreachable refunding order {}", order_id));
  }
  void set(State state) { state_ = state; }
  [[nodiscard]] int calls() const { return calls_; }
  // Successful charges by order.
  [[nodiscard]] const std::map<std::int64_t, int>& charges() const {
    return charges_;
  }

 private:
  State state_ = State::kFlaky;
  int calls_ = 0;
  std::set<std::int64_t> tried_;
  std::map<std::int64_t, int> charges_;
};

// The shop's state (a database in a real service).
struct Shop {
  Gateway gateway;
  std::map<std::int64_t, fnbus::timers::TimerHandle> unpaid;  // by order
  std::vector<std::int64_t> paid;
  std::vector<std::int64_t> cancelled;
  std::vector<std::int64_t> store_credit;  // refunds given as store credit
};

fnbus::FunctionOptions charge_card_options() {
  fnbus::FunctionOptions options = named("charge_card");
  // An order is charged once, however often its payment is published
  // (a replay, a customer paying again).
  options.idempotency_key = [](const PaymentRequested& payment) {
    return std::to_string(payment.order_id);
  };
  // Open when at least 3 of 4 calls in the last minute failed (3 calls at
  // least); probe the gateway again after 5 minutes, with one call.
  options.breaker = resilience::BreakerOptions{
      .failure_rate = 0.75,
      .minimum_calls = 3,
      .window = 1min,
      .window_buckets = 6,
      .open_for = 5min,
      .half_open_probes = 1,
  };
  // 3 calls at most; the second after up to 1 s, the third after up to
  // 2 s (full jitter: many shops retrying together do not come back in
  // step), never more than 4 s. Only transient errors are retried.
  options.retry = resilience::RetryOptions{
      .max_attempts = 3,
      .backoff = {.initial = 1s,
                  .multiplier = 2.0,
                  .max = 4s,
                  .jitter = resilience::Jitter::kFull},
      .retry_if =
          resilience::retry_on_codes({absl::StatusCode::kUnavailable,
                                      absl::StatusCode::kDeadlineExceeded}),
      .max_event_age = 1min,
  };
  return options;
}

fnbus::FunctionOptions refund_card_options(Shop& shop) {
  fnbus::FunctionOptions options = named("refund_card");
  options.fallback = [&shop](const RefundRequested& refund) {
    fmt::print("[refund_as_store_credit] order {}: {} given as store credit\n",
               refund.order_id, dollars(refund.amount_cents));
    shop.store_credit.push_back(refund.order_id);
  };
  return options;
}

// The functions that call the gateway.
void subscribe_gateway(fnbus::EventBus& bus, Shop& shop,
                       std::vector<fnbus::Subscription>& subscriptions) {
  subscriptions.push_back(bus.subscribe(
      [&bus, &shop](const PaymentRequested& payment, fnbus::Context& context) {
        if (absl::Status status = shop.gateway.charge(payment.order_id);
            !status.ok()) {
          return status;
        }
        fmt::print("[charge_card] order {}: charged {} (attempt {})\n",
                   payment.order_id, dollars(payment.amount_cents),
                   context.attempt());
        return bus.publish(
            PaymentCompleted{.order_id = payment.order_id,
                             .amount_cents = payment.amount_cents});
      },
      charge_card_options()));
  subscriptions.push_back(bus.subscribe(
      [&shop](const RefundRequested& refund) {
        return shop.gateway.refund(refund.order_id);
      },
      refund_card_options(shop)));
}

// The order's life: its timer, its payment request, paid or cancelled.
void subscribe_orders(fnbus::EventBus& bus, Shop& shop,
                      std::vector<fnbus::Subscription>& subscriptions) {
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
}

// The simulated clock moves on a second at a time; the timers due by then
// (unpaid orders, retries after their backoff) publish, and the bus runs
// everything queued.
void advance(fnbus::testing::ManualClock& clock, fnbus::EventBus& bus,
             fnbus::Duration duration) {
  for (fnbus::Duration passed{}; passed < duration; passed += 1s) {
    clock.advance(1s);
    bus.run_due_timers();
    bus.run_until_idle();
  }
}

// What an operator would look at: each letter's payment, why it was given
// up, the calls made and the last one's error.
void print_dead_letters(const resilience::DeadLetterStore& store) {
  fmt::print("{} payments dead-lettered:\n", store.size());
  for (const resilience::StoredDeadLetter& letter : store.snapshot()) {
    const auto* payment = letter.event.get<PaymentRequested>();
    fmt::print(
        "  order {}: {}, {} calls{}\n",
        payment != nullptr ? payment->order_id : 0,
        fnbus::to_string(letter.reason), letter.attempts,
        letter.last_error.ok()
            ? std::string()
            : ", last error: " + std::string(letter.last_error.message()));
  }
}

void check_letters(Checks& check, const resilience::DeadLetterStore& store) {
  const std::vector<resilience::StoredDeadLetter> letters = store.snapshot();
  check(letters.size() == 4, "4 payments dead-lettered (orders 4, 5, 6, 8)");
  if (letters.size() != 4) return;
  const auto& exhausted = letters.front();
  check(exhausted.reason == fnbus::DeadLetterReason::kRetriesExhausted &&
            exhausted.attempts == 3 &&
            exhausted.last_error.code() == absl::StatusCode::kUnavailable,
        "the first payment of the outage exhausted its 3 attempts");
  bool turned_away = true;
  for (std::size_t i = 1; i < letters.size(); ++i) {
    turned_away &= letters[i].reason == fnbus::DeadLetterReason::kCircuitOpen &&
                   letters[i].attempts == 0;
  }
  check(turned_away, "the open breaker turned the next payments away");
}

const fnbus::metrics::FunctionMetrics* function(
    const fnbus::metrics::MetricsSnapshot& snapshot, std::string_view event,
    std::string_view name) {
  return snapshot.find_function(event, name);
}

void check_charges(Checks& check, const fnbus::metrics::FunctionMetrics& charge,
                   const Shop& shop) {
  fmt::print(
      "charge_card: delivered={} failed={} retried={} dead_lettered={} "
      "duplicates={} breaker opened={} closed={}; gateway calls={}\n",
      charge.delivered, charge.failed, charge.retried, charge.dead_lettered,
      charge.duplicates, charge.breaker_opened, charge.breaker_closed,
      shop.gateway.calls());
  check(charge.retried == kFlakyOrders + 2,
        "each flaky charge retried once, the outage's first one twice");
  check(charge.failed == kFlakyOrders + 3, "only the calls made failed");
  check(charge.dead_lettered == 4 && charge.rejected == 3,
        "one payment exhausted its retries, the breaker turned 3 away");
  check(charge.breaker_opened == 1 && charge.breaker_closed == 1,
        "the breaker opened once and a probe closed it");
  check(charge.duplicates == 1, "the replay of the order paid meanwhile");
  bool once = shop.gateway.charges().size() == kOrders - 1;
  for (const auto& [order, charges] : shop.gateway.charges()) {
    once &= order != kWalksAway && charges == 1;
  }
  check(once, "every order but one charged, each exactly once");
}

void check_outcome(Checks& check, const Shop& shop, fnbus::EventBus& bus) {
  const fnbus::metrics::MetricsSnapshot m = bus.metrics();
  const auto* charge =
      function(m, fnbus::event_type_name<PaymentRequested>(), "charge_card");
  const auto* refund =
      function(m, fnbus::event_type_name<RefundRequested>(), "refund_card");
  check(charge != nullptr && refund != nullptr, "the gateway's functions");
  if (charge == nullptr || refund == nullptr) return;
  check_charges(check, *charge, shop);
  check(refund->failed == 1 && refund->fell_back == 1 &&
            shop.store_credit == std::vector<std::int64_t>{kReturned},
        "the refund asked for during the outage was given as store credit");
  fmt::print("timers: scheduled={} fired={} cancelled={} pending={}\n",
             m.timers.scheduled, m.timers.fired, m.timers.cancelled,
             m.timers.pending);
  check(shop.paid.size() == static_cast<std::size_t>(kOrders - 1),
        "every order but one was paid");
  check(shop.cancelled == std::vector<std::int64_t>{kWalksAway},
        "only the order never paid was cancelled");
  // A retry's backoff is a timer too.
  check(m.timers.scheduled == kOrders + charge->retried &&
            m.timers.fired == 1 + charge->retried &&
            m.timers.cancelled == kOrders - 1 && m.timers.pending == 0,
        "one order timer fired, the others were cancelled by the payment");
}

void place_orders(fnbus::testing::ManualClock& clock, fnbus::EventBus& bus,
                  std::int64_t first, std::int64_t last) {
  for (std::int64_t id = first; id <= last; ++id) {
    (void)bus.publish(OrderPlaced{.order_id = id, .amount_cents = 2'500 * id});
    advance(clock, bus, 30s);  // an order every 30 s
  }
}

}  // namespace

bool run_payments() {
  fmt::print(
      "\n== payments: retries, a circuit breaker, dead letters replayed, a "
      "fallback, unpaid orders cancelled by a timer ==\n");
  Checks check("payments");
  auto clock = std::make_shared<fnbus::testing::ManualClock>();
  resilience::DeadLetterStoreOptions store_options;
  store_options.capacity = 1'000;
  store_options.clock = clock;
  auto store = resilience::DeadLetterStore::Create(std::move(store_options));
  fnbus::BusConfig config;
  config.execution = fnbus::Execution::kManual;
  config.clock = clock;
  config.error_sink = [](const fnbus::HandlerError& error) {
    fmt::print("[{}] failed: {}\n", error.function_name,
               std::string(error.message));
  };
  if (store.ok()) config.dead_letter_sink = (*store)->sink();
  auto bus_or = fnbus::EventBus::Create(std::move(config));
  if (!store.ok() || !bus_or.ok()) {
    check(false, "cannot start the bus and its dead-letter store");
    return check.report();
  }
  fnbus::EventBus& bus = **bus_or;
  resilience::DeadLetterStore& letters = **store;
  Shop shop;
  std::vector<fnbus::Subscription> functions;
  subscribe_gateway(bus, shop, functions);
  subscribe_orders(bus, shop, functions);

  fmt::print("the gateway is flaky: it times out on each order's first try\n");
  place_orders(*clock, bus, 1, kFlakyOrders);
  advance(*clock, bus, 2min);
  fmt::print("the gateway goes down\n");
  shop.gateway.set(Gateway::State::kDown);
  place_orders(*clock, bus, kFlakyOrders + 1, kOrders);
  (void)bus.publish(RefundRequested{.order_id = kReturned,
                                    .amount_cents = 2'500 * kReturned});
  bus.run_until_idle();
  print_dead_letters(letters);
  check_letters(check, letters);

  fmt::print("the gateway is back\n");
  shop.gateway.set(Gateway::State::kUp);
  advance(*clock, bus, 5min);  // the breaker's cool-down passes
  fmt::print("order {}'s customer pays again at the checkout\n", kPaysAgain);
  (void)bus.publish(PaymentRequested{.order_id = kPaysAgain,
                                     .amount_cents = 2'500 * kPaysAgain});
  bus.run_until_idle();
  const resilience::ReplaySummary replay =
      letters.replay(bus, [](const resilience::StoredDeadLetter& letter) {
        return letter.function == "charge_card";
      });
  bus.run_until_idle();
  fmt::print(
      "replayed {} dead letters ({} refused, {} left); order {}'s was a "
      "duplicate: not charged again\n",
      replay.replayed, replay.failed, letters.size(), kPaysAgain);
  check(replay.replayed == 4 && letters.size() == 0,
        "every dead letter replayed");
  advance(*clock, bus, 30min);  // the unpaid order's timer fires

  (void)bus.shutdown(fnbus::ShutdownMode::kDrain);
  check_outcome(check, shop, bus);
  return check.report();
}

}  // namespace shop
