// Storefront: the flow of a small shop, end to end, on one fnbus::EventBus.
//
//   UserRegistered   -> send_welcome_email, track_signup
//   OrderCreated     -> reserve_inventory, request_payment -> PaymentCompleted
//   PaymentCompleted -> ship_order -> OrderShipped, send_receipt_email
//   OrderShipped     -> notify_customer (reads its fnbus::Context)
//   AuditEntry       -> write_audit_log (trigger(): synchronous, in the caller)
//   CartAbandoned    -> no subscriber yet: reported to the unhandled sink
//
// Order 1003 is over the card limit: the fake payment gateway declines it,
// request_payment returns the error Status, and the bus reports it to the
// error sink (throwing from the handler would be reported the same way).
//
// Two workers run the handlers, so lines from different events interleave
// differently from run to run; the counters printed at the end do not. The
// program checks them and exits with 1 if one is off.

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "fmt/core.h"

#include "fnbus/fnbus.hpp"

namespace shop {

// Events are plain structs. Up to 48 bytes (ids as integers, money in
// cents) they are stored inside the queue slot: publishing them does not
// allocate. The std::string in UserRegistered allocates only for long
// emails.
struct UserRegistered {
  std::int64_t user_id = 0;
  std::string email;
};
struct OrderCreated {
  std::int64_t order_id = 0;
  std::int64_t user_id = 0;
  std::int64_t amount_cents = 0;
  std::int32_t items = 0;
};
struct PaymentCompleted {
  std::int64_t order_id = 0;
  std::int64_t user_id = 0;
  std::int64_t amount_cents = 0;
};
struct OrderShipped {
  std::int64_t order_id = 0;
  std::int64_t user_id = 0;
  std::int64_t tracking_number = 0;
};
struct AuditEntry {
  std::string_view action;  // a string literal: lives for the whole program
  std::int64_t order_id = 0;
};
struct CartAbandoned {
  std::int64_t user_id = 0;
};

std::string dollars(std::int64_t cents) {
  return fmt::format("${}.{:02}", cents / 100, cents % 100);
}

// A stand-in for a payment provider's API.
absl::Status charge_card(std::int64_t user_id, std::int64_t amount_cents) {
  constexpr std::int64_t kCardLimitCents = 100'000;
  if (amount_cents > kCardLimitCents) {
    return absl::FailedPreconditionError(
        fmt::format("card of user {} declined: {} is over its limit of {}",
                    user_id, dollars(amount_cents), dollars(kCardLimitCents)));
  }
  return absl::OkStatus();
}

// --- Handlers ("functions"). Each prints one line, prefixed by its name. ---

void send_welcome_email(const UserRegistered& user) {
  fmt::print("[send_welcome_email] to {} (user {})\n", user.email,
             user.user_id);
}

void track_signup(const UserRegistered& user) {
  fmt::print("[track_signup] analytics: signup of user {}\n", user.user_id);
}

void reserve_inventory(const OrderCreated& order) {
  fmt::print("[reserve_inventory] order {}: {} item(s) reserved\n",
             order.order_id, order.items);
}

// Handlers may publish follow-up events. Returning the publish Status makes
// a refused follow-up count as a failure of this handler.
absl::Status request_payment(fnbus::EventBus& bus, const OrderCreated& order) {
  if (absl::Status charged = charge_card(order.user_id, order.amount_cents);
      !charged.ok()) {
    return charged;  // -> error sink; counted in stats().failed
  }
  fmt::print("[request_payment] order {}: charged {}\n", order.order_id,
             dollars(order.amount_cents));
  return bus.publish(PaymentCompleted{.order_id = order.order_id,
                                      .user_id = order.user_id,
                                      .amount_cents = order.amount_cents});
}

absl::Status ship_order(fnbus::EventBus& bus, const PaymentCompleted& paid) {
  const std::int64_t tracking = 900'000 + paid.order_id;
  fmt::print("[ship_order] order {}: handed to the carrier, tracking {}\n",
             paid.order_id, tracking);
  return bus.publish(OrderShipped{.order_id = paid.order_id,
                                  .user_id = paid.user_id,
                                  .tracking_number = tracking});
}

void send_receipt_email(const PaymentCompleted& paid) {
  fmt::print("[send_receipt_email] user {}: receipt for order {}, {}\n",
             paid.user_id, paid.order_id, dollars(paid.amount_cents));
}

// A second parameter of type fnbus::Context& tells the handler which
// function it runs as and which event type it received.
void notify_customer(const OrderShipped& shipped, fnbus::Context& context) {
  fmt::print("[{}] {} for order {}: push notification to user {}\n",
             context.function_name(), context.event_type(), shipped.order_id,
             shipped.user_id);
}

void write_audit_log(const AuditEntry& entry) {
  fmt::print("[write_audit_log] {} order {}\n", entry.action, entry.order_id);
}

}  // namespace shop

// `storefront` prints everything; `storefront --metrics-out FILE` writes
// the Prometheus text to FILE instead (CI checks it with promtool).
int main(int argc, char** argv) {
  const std::string metrics_out =
      argc == 3 && std::string_view(argv[1]) == "--metrics-out" ? argv[2] : "";
  using namespace shop;
  const std::vector<UserRegistered> users = {
      {.user_id = 1, .email = "ada@example.com"},
      {.user_id = 2, .email = "grace@example.com"},
      {.user_id = 3, .email = "linus@example.com"},
  };
  const std::vector<OrderCreated> orders = {
      {.order_id = 1001, .user_id = 1, .amount_cents = 2'599, .items = 1},
      {.order_id = 1002, .user_id = 2, .amount_cents = 12'000, .items = 3},
      {.order_id = 1003, .user_id = 3, .amount_cents = 250'000, .items = 1},
      {.order_id = 1004, .user_id = 1, .amount_cents = 4'250, .items = 2},
  };
  const std::uint64_t kDeclined = 1;  // order 1003

  // Sinks run on the worker that dispatched the event: count atomically.
  std::atomic<std::uint64_t> errors_seen{0};
  std::atomic<std::uint64_t> unhandled_seen{0};
  auto bus_or = fnbus::EventBus::Create({
      .workers = 2,
      .error_sink =
          [&](const fnbus::HandlerError& error) {
            errors_seen.fetch_add(1, std::memory_order_relaxed);
            // The correlation id ties the failure to the request (here:
            // the order) whose events led to it.
            fmt::print(
                "[error_sink] {} failed on {} (correlation {:016x}): {}\n",
                error.function_name, error.event_type,
                error.trace.context.correlation_id, error.message);
          },
      .dead_letter_sink =
          [](const fnbus::DeadLetter& letter) {
            fmt::print("[dead_letter_sink] {} ({})\n", letter.event.type_name(),
                       to_string(letter.reason));
          },
      .unhandled_sink =
          [&](const fnbus::EventRef& event) {
            unhandled_seen.fetch_add(1, std::memory_order_relaxed);
            if (const auto* cart = event.get<CartAbandoned>()) {
              fmt::print("[unhandled_sink] {} of user {}: nobody listens yet\n",
                         event.type_name(), cart->user_id);
            }
          },
  });
  if (!bus_or.ok()) {
    fmt::print(stderr, "cannot start the bus: {}\n",
               bus_or.status().ToString());
    return 1;
  }
  fnbus::EventBus& bus = **bus_or;

  // Each subscription stays active while its Subscription object lives.
  // Handlers of one event run in subscription order.
  int audit_entries = 0;  // trigger() runs in this thread: a plain int works
  std::vector<fnbus::Subscription> subscriptions;
  subscriptions.push_back(bus.subscribe<UserRegistered>(
      send_welcome_email, {.name = "send_welcome_email"}));
  subscriptions.push_back(
      bus.subscribe<UserRegistered>(track_signup, {.name = "track_signup"}));
  subscriptions.push_back(bus.subscribe<OrderCreated>(
      reserve_inventory, {.name = "reserve_inventory"}));
  subscriptions.push_back(bus.subscribe<OrderCreated>(
      [&bus](const OrderCreated& order) { return request_payment(bus, order); },
      {.name = "request_payment"}));
  subscriptions.push_back(bus.subscribe<PaymentCompleted>(
      [&bus](const PaymentCompleted& paid) { return ship_order(bus, paid); },
      {.name = "ship_order"}));
  subscriptions.push_back(bus.subscribe<PaymentCompleted>(
      send_receipt_email, {.name = "send_receipt_email"}));
  subscriptions.push_back(bus.subscribe<OrderShipped>(
      notify_customer, {.name = "notify_customer"}));
  subscriptions.push_back(bus.subscribe<AuditEntry>(
      [&audit_entries](const AuditEntry& entry) {
        write_audit_log(entry);
        ++audit_entries;
      },
      {.name = "write_audit_log"}));

  // publish() is asynchronous: it queues the event and returns. A non-OK
  // Status means the event was refused (e.g. queue full) and not kept.
  auto publish = [&bus](auto event) {
    absl::Status status = bus.publish(std::move(event));
    if (!status.ok()) fmt::print(stderr, "publish: {}\n", status.ToString());
    return status.ok();
  };
  bool all_accepted = true;
  for (const UserRegistered& user : users) all_accepted &= publish(user);
  for (const OrderCreated& order : orders) {
    // trigger() is synchronous: the audit entry is written before the order
    // is queued, in this thread, and before trigger() returns.
    bus.trigger(AuditEntry{.action = "created", .order_id = order.order_id});
    all_accepted &= publish(order);
  }
  all_accepted &= publish(CartAbandoned{.user_id = 2});

  // Drain: handle everything accepted, including the follow-ups that
  // handlers publish while draining, then stop the workers.
  if (absl::Status status = bus.shutdown(fnbus::ShutdownMode::kDrain);
      !status.ok()) {
    fmt::print(stderr, "shutdown: {}\n", status.ToString());
    return 1;
  }

  const fnbus::BusStats stats = bus.stats();
  fmt::print(
      "\nstats: published={} dispatched={} delivered={} failed={} "
      "rejected={} unhandled={} dead_lettered={} queue_depth={}\n",
      stats.published, stats.dispatched, stats.delivered, stats.failed,
      stats.rejected, stats.unhandled, stats.dead_lettered, stats.queue_depth);

  // What the flow must add up to, whatever the interleaving.
  const std::uint64_t n_users = users.size();
  const std::uint64_t n_orders = orders.size();
  const std::uint64_t n_paid = n_orders - kDeclined;
  const std::uint64_t expected_published =
      n_users + n_orders + n_paid /*PaymentCompleted*/ +
      n_paid /*OrderShipped*/ + 1 /*CartAbandoned*/;
  const std::uint64_t expected_delivered =
      2 * n_users                 // send_welcome_email, track_signup
      + 2 * n_orders - kDeclined  // reserve_inventory, request_payment
      + 2 * n_paid                // ship_order, send_receipt_email
      + n_paid;                   // notify_customer
  bool ok = all_accepted;
  auto check = [&ok](bool condition, const std::string& what) {
    if (!condition) fmt::print(stderr, "CHECK FAILED: {}\n", what);
    ok &= condition;
  };
  check(stats.published == stats.dispatched + stats.dead_lettered,
        "published == dispatched + dead_lettered");
  check(stats.published == expected_published, "published");
  check(stats.delivered == expected_delivered, "delivered");
  check(stats.failed == kDeclined && errors_seen == kDeclined, "failed");
  check(stats.unhandled == 1 && unhandled_seen == 1, "unhandled");
  check(stats.rejected == 0 && stats.dead_lettered == 0, "nothing lost");
  check(stats.queue_depth == 0, "queue empty after drain");
  // trigger() counts nothing in stats(); the handler counted for itself.
  check(audit_entries == static_cast<int>(n_orders), "audit entries");
  // Per-type and per-function counters and latency histograms, as a
  // Prometheus scrape would see them (serve this text from your backend's
  // /metrics endpoint; see examples/metrics_endpoint).
  const fnbus::metrics::MetricsSnapshot metrics = bus.metrics();
  const fnbus::metrics::EventTypeMetrics* created =
      metrics.find_event(fnbus::event_type_name<OrderCreated>());
  check(created != nullptr && created->published == n_orders &&
            created->end_to_end.count() == n_orders,
        "OrderCreated metrics");
  const fnbus::metrics::FunctionMetrics* payment = metrics.find_function(
      fnbus::event_type_name<OrderCreated>(), "request_payment");
  check(payment != nullptr && payment->failed == kDeclined &&
            payment->run_time.count() == n_orders,
        "request_payment metrics");
  const std::string prometheus_text =
      fnbus::metrics::to_prometheus_text(metrics);
  if (metrics_out.empty()) {
    fmt::print("\n# metrics (Prometheus text format 0.0.4)\n{}",
               prometheus_text);
  } else if (std::FILE* file = std::fopen(metrics_out.c_str(), "w")) {
    fmt::print(file, "{}", prometheus_text);
    std::fclose(file);
  } else {
    check(false, "write " + metrics_out);
  }
  fmt::print("{}\n", ok ? "storefront: all checks passed"
                        : "storefront: CHECKS FAILED");
  return ok ? 0 : 1;
}
