// The mesh: functions asking each other, replicas and a canary.
//
//   GetQuote       -> pricing (served by 2 replicas, each with its own
//                     price table "connection"; P2C by calls in flight)
//   CartCheckedOut -> checkout: asks pricing for the cart's quote (the
//                     callback form: no worker waits), then publishes
//                     ChargeRequested with the quoted total
//   OrderStep      -> track_order (published with the order id as key)
//   ChargeRequested -> charge (a versioned function: v1 stable, v2 as a
//                     canary taking 20% of the charges)
//
// 1. The shop's front end asks for quotes directly: call<Quote>() and
//    get() on the caller's own thread.
// 2. 2000 carts check out; each checkout calls pricing and charges the
//    quoted total.
// 3. Each order's steps (placed, paid, packed, shipped) are published by
//    two threads with the order id as key: every order's steps are
//    handled in order while different orders run in parallel.
// 4. v2 of the charge function has a bug: it fails one charge in four.
//    The bus notices from the canary's failure rate against v1's and
//    rolls v2 back by itself, reporting why; the remaining charges go to
//    v1. No charge is lost or made twice: every cart is charged exactly
//    once, by v1 or (successfully) by v2, or failed once by v2 (reported
//    to the error sink; in a real shop, retried or compensated).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checks.hpp"
#include "fmt/core.h"
#include "parts.hpp"

namespace shop {
namespace {

struct GetQuote {
  std::int64_t cart_id = 0;
  std::int32_t items = 0;
};
struct Quote {
  std::int64_t total_cents = 0;
  std::size_t replica = 0;  // which pricing replica answered
};
struct CartCheckedOut {
  std::int64_t cart_id = 0;
  std::int32_t items = 0;
};
struct OrderStep {
  std::int64_t order_id = 0;
  std::int32_t step = 0;  // 1 placed, 2 paid, 3 packed, 4 shipped
};
struct ChargeRequested {
  std::int64_t cart_id = 0;
  std::int64_t amount_cents = 0;
};

// One pricing replica: in a real shop, a client with its own connection
// to the price service.
struct PriceService {
  std::size_t replica = 0;
  absl::StatusOr<Quote> operator()(const GetQuote& q) const {
    if (q.items <= 0) return absl::InvalidArgumentError("an empty cart");
    return Quote{.total_cents = 1999 * std::int64_t{q.items},
                 .replica = replica};
  }
};

}  // namespace

bool run_mesh() {
  fmt::print("\n== mesh: request/reply, replicas, a canary rolled back ==\n");
  Checks check("mesh");
  fnbus::BusConfig config;
  config.workers = 2;
  auto bus = *fnbus::EventBus::Create(std::move(config));

  // Pricing: 2 replicas, served as one function.
  fnbus::mesh::ReplicatedOptions replicas;
  replicas.replicas.balancing = fnbus::mesh::Balancing::kLeastOutstanding;
  auto pricing_replicas =
      fnbus::mesh::Replicated<GetQuote, PriceService>::Create(
          2, [](std::size_t i) { return PriceService{.replica = i}; },
          bus->clock(), replicas);
  fnbus::mesh::Service pricing =
      bus->serve(*pricing_replicas, named("pricing"));

  // 1. A quote asked for from outside the bus.
  absl::StatusOr<Quote> quote =
      bus->call<Quote>(GetQuote{.cart_id = 1, .items = 3}).get();
  check(quote.ok() && quote->total_cents == 3 * 1999, "a direct quote");
  absl::StatusOr<Quote> empty = bus->call<Quote>(GetQuote{.cart_id = 2}).get();
  check(empty.status().code() == absl::StatusCode::kInvalidArgument,
        "an empty cart's quote is the pricing function's error");
  fmt::print("quote for 3 items: {} (replica {}); empty cart: {}\n",
             quote.ok() ? dollars(quote->total_cents) : "error",
             quote.ok() ? quote->replica : 0, empty.status().ToString());

  // 3. Steps of one order in order; orders in parallel.
  constexpr int kOrders = 500;
  constexpr int kSteps = 4;
  // The last step seen per order: each element is touched only by its own
  // order's handler calls, one at a time, so it needs no lock.
  std::vector<std::int32_t> last_step(kOrders, 0);
  std::atomic<int> out_of_order{0};
  fnbus::Subscription tracking = bus->subscribe(
      [&](const OrderStep& s) {
        std::int32_t& last = last_step[static_cast<std::size_t>(s.order_id)];
        if (s.step != last + 1) ++out_of_order;
        last = s.step;
      },
      named("track_order"));
  auto publish_steps = [&](int first_order) {
    fnbus::PublishOptions keyed;
    keyed.overflow = fnbus::OverflowPolicy::kBlock;
    keyed.block_timeout = std::chrono::seconds(10);
    for (std::int32_t step = 1; step <= kSteps; ++step) {
      for (int order = first_order; order < kOrders; order += 2) {
        keyed.key = fnbus::OrderingKey(order);
        (void)bus->publish(OrderStep{.order_id = order, .step = step}, keyed);
      }
    }
  };
  std::thread even([&] { publish_steps(0); });
  std::thread odd([&] { publish_steps(1); });
  even.join();
  odd.join();

  // 4. The charge function, v1, and its buggy v2 as a canary.
  std::atomic<int> charged_v1{0};
  std::atomic<int> charged_v2{0};
  std::atomic<int> failed_v2{0};
  std::atomic<int> rollbacks{0};
  using Charge = fnbus::mesh::VersionedHandler<ChargeRequested>;
  Charge::Options versions;
  versions.clock = &bus->clock();
  versions.on_rollback = [&](const fnbus::mesh::RollbackReport& report) {
    ++rollbacks;
    fmt::print("automatic rollback of {} to {}: {}\n", report.canary_label,
               report.stable_label, report.reason);
  };
  auto charge = Charge::Create(
      "v1", [&](const ChargeRequested&) { ++charged_v1; }, versions);
  fnbus::Subscription charging = bus->subscribe(*charge, named("charge"));
  (void)charge->deploy_canary(
      "v2",
      [&](const ChargeRequested& c) -> absl::Status {
        if (c.cart_id % 4 == 0) {
          ++failed_v2;
          return absl::InternalError("v2 rounds the amount wrongly");
        }
        ++charged_v2;
        return absl::OkStatus();
      },
      0.2);

  // 2. Checkouts: each asks pricing, then requests the charge.
  std::atomic<int> quoted{0};
  fnbus::Subscription checkout = bus->subscribe(
      [&](const CartCheckedOut& cart) {
        return bus->call<Quote>(
            GetQuote{.cart_id = cart.cart_id, .items = cart.items}, {},
            [&bus, &quoted, cart](absl::StatusOr<Quote> q) {
              if (!q.ok()) return;
              ++quoted;
              (void)bus->publish(ChargeRequested{
                  .cart_id = cart.cart_id, .amount_cents = q->total_cents});
            });
      },
      named("checkout"));
  constexpr int kCarts = 2000;
  for (int i = 1; i <= kCarts; ++i) {
    fnbus::PublishOptions blocking;
    blocking.overflow = fnbus::OverflowPolicy::kBlock;
    blocking.block_timeout = std::chrono::seconds(10);
    (void)bus->publish(CartCheckedOut{.cart_id = i, .items = 1 + i % 5},
                       blocking);
  }
  (void)bus->shutdown();

  const fnbus::mesh::VersionedFunction::Stats stats = charge->stats();
  fmt::print(
      "carts quoted: {}; charged by v1: {}, by v2: {}; failed by v2: {}; "
      "pricing: {} replies\n",
      quoted.load(), charged_v1.load(), charged_v2.load(), failed_v2.load(),
      pricing.stats().replied);
  check(quoted.load() == kCarts, "every cart was quoted");
  check(rollbacks.load() == 1, "the canary was rolled back automatically");
  check(stats.automatic_rollbacks == 1, "one automatic rollback counted");
  check(charged_v1.load() + charged_v2.load() + failed_v2.load() == kCarts,
        "every charge handled exactly once (by v1, by v2, or failed by v2)");
  check(charged_v1.load() > charged_v2.load(), "v1 took the rest");
  int finished = 0;
  for (std::int32_t step : last_step) finished += step == kSteps ? 1 : 0;
  fmt::print(
      "orders tracked to the last step: {} of {}; steps out of order: "
      "{}\n",
      finished, kOrders, out_of_order.load());
  check(finished == kOrders, "every order reached its last step");
  check(out_of_order.load() == 0, "every order's steps in publish order");
  print_stats("mesh", bus->stats());
  return check.report();
}

}  // namespace shop
