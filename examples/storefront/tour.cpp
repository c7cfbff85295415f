// The tour: the flow of a small shop, end to end, on one fnbus::EventBus.
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
// tour checks them (main() exits with 1 if one is off).

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "checks.hpp"
#include "fmt/core.h"
#include "parts.hpp"

#include "fnbus/fnbus.hpp"

namespace shop {
namespace {

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

const std::vector<UserRegistered>& users() {
  static const std::vector<UserRegistered> kUsers = {
      {.user_id = 1, .email = "ada@example.com"},
      {.user_id = 2, .email = "grace@example.com"},
      {.user_id = 3, .email = "linus@example.com"},
  };
  return kUsers;
}
const std::vector<OrderCreated>& orders() {
  static const std::vector<OrderCreated> kOrders = {
      {.order_id = 1001, .user_id = 1, .amount_cents = 2'599, .items = 1},
      {.order_id = 1002, .user_id = 2, .amount_cents = 12'000, .items = 3},
      {.order_id = 1003, .user_id = 3, .amount_cents = 250'000, .items = 1},
      {.order_id = 1004, .user_id = 1, .amount_cents = 4'250, .items = 2},
  };
  return kOrders;
}
constexpr std::uint64_t kDeclined = 1;  // order 1003

// What the sinks saw. Sinks run on the worker that dispatched the event:
// count atomically.
struct SinkCounts {
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> unhandled{0};
};

// Two workers, kReject (the defaults), and the three sinks. Options are
// filled field by field (see named() in parts.hpp).
fnbus::BusConfig tour_config(SinkCounts& seen) {
  fnbus::BusConfig config;
  config.workers = 2;
  config.error_sink = [&seen](const fnbus::HandlerError& error) {
    seen.errors.fetch_add(1, std::memory_order_relaxed);
    // The correlation id ties the failure to the request (here: the
    // order) whose events led to it.
    fmt::print("[error_sink] {} failed on {} (correlation {:016x}): {}\n",
               error.function_name, error.event_type,
               error.trace.context.correlation_id, error.message);
  };
  config.dead_letter_sink = [](const fnbus::DeadLetter& letter) {
    fmt::print("[dead_letter_sink] {} ({})\n", letter.event.type_name(),
               to_string(letter.reason));
  };
  config.unhandled_sink = [&seen](const fnbus::EventRef& event) {
    seen.unhandled.fetch_add(1, std::memory_order_relaxed);
    if (const auto* cart = event.get<CartAbandoned>()) {
      fmt::print("[unhandled_sink] {} of user {}: nobody listens yet\n",
                 event.type_name(), cart->user_id);
    }
  };
  return config;
}

// Each subscription stays active while its Subscription object lives.
// Handlers of one event run in subscription order.
std::vector<fnbus::Subscription> subscribe_all(fnbus::EventBus& bus,
                                               int& audit_entries) {
  std::vector<fnbus::Subscription> subscriptions;
  subscriptions.push_back(bus.subscribe<UserRegistered>(
      send_welcome_email, named("send_welcome_email")));
  subscriptions.push_back(
      bus.subscribe<UserRegistered>(track_signup, named("track_signup")));
  subscriptions.push_back(bus.subscribe<OrderCreated>(
      reserve_inventory, named("reserve_inventory")));
  subscriptions.push_back(bus.subscribe<OrderCreated>(
      [&bus](const OrderCreated& order) { return request_payment(bus, order); },
      named("request_payment")));
  subscriptions.push_back(bus.subscribe<PaymentCompleted>(
      [&bus](const PaymentCompleted& paid) { return ship_order(bus, paid); },
      named("ship_order")));
  subscriptions.push_back(bus.subscribe<PaymentCompleted>(
      send_receipt_email, named("send_receipt_email")));
  subscriptions.push_back(
      bus.subscribe<OrderShipped>(notify_customer, named("notify_customer")));
  // trigger() runs in the caller's thread: a plain int works.
  subscriptions.push_back(bus.subscribe<AuditEntry>(
      [&audit_entries](const AuditEntry& entry) {
        write_audit_log(entry);
        ++audit_entries;
      },
      named("write_audit_log")));
  return subscriptions;
}

// Publishes the shop's traffic; false if the bus refused an event.
bool publish_traffic(fnbus::EventBus& bus) {
  // publish() is asynchronous: it queues the event and returns. A non-OK
  // Status means the event was refused (e.g. queue full) and not kept
  // (outbox.cpp keeps refused events with try_publish()).
  auto publish = [&bus](auto event) {
    absl::Status status = bus.publish(std::move(event));
    if (!status.ok()) fmt::print(stderr, "publish: {}\n", status.ToString());
    return status.ok();
  };
  bool all_accepted = true;
  for (const UserRegistered& user : users()) all_accepted &= publish(user);
  for (const OrderCreated& order : orders()) {
    // trigger() is synchronous: the audit entry is written before the order
    // is queued, in this thread, and before trigger() returns.
    bus.trigger(AuditEntry{.action = "created", .order_id = order.order_id});
    all_accepted &= publish(order);
  }
  all_accepted &= publish(CartAbandoned{.user_id = 2});
  return all_accepted;
}

// What the flow must add up to, whatever the interleaving.
void check_counts(Checks& check, const fnbus::BusStats& stats,
                  const SinkCounts& seen, int audit_entries) {
  const std::uint64_t n_users = users().size();
  const std::uint64_t n_orders = orders().size();
  const std::uint64_t n_paid = n_orders - kDeclined;
  const std::uint64_t expected_published =
      n_users + n_orders + n_paid /*PaymentCompleted*/ +
      n_paid /*OrderShipped*/ + 1 /*CartAbandoned*/;
  const std::uint64_t expected_delivered =
      2 * n_users                 // send_welcome_email, track_signup
      + 2 * n_orders - kDeclined  // reserve_inventory, request_payment
      + 2 * n_paid                // ship_order, send_receipt_email
      + n_paid;                   // notify_customer
  check(stats.published == stats.dispatched + stats.dead_lettered,
        "published == dispatched + dead_lettered");
  check(stats.published == expected_published, "published");
  check(stats.delivered == expected_delivered, "delivered");
  check(stats.failed == kDeclined && seen.errors == kDeclined, "failed");
  check(stats.unhandled == 1 && seen.unhandled == 1, "unhandled");
  check(stats.rejected == 0 && stats.dead_lettered == 0, "nothing lost");
  check(stats.queue_depth == 0, "queue empty after drain");
  // trigger() counts nothing in stats(); the handler counted for itself.
  check(audit_entries == static_cast<int>(n_orders), "audit entries");
}

// Per-type and per-function counters and latency histograms, as a
// Prometheus scrape would see them (serve this text from your backend's
// /metrics endpoint; see examples/metrics_endpoint).
void check_and_write_metrics(Checks& check, const fnbus::EventBus& bus,
                             const std::string& metrics_out) {
  const std::uint64_t n_orders = orders().size();
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
}

}  // namespace

bool run_tour(const std::string& metrics_out) {
  fmt::print("== tour: one shop, end to end ==\n");
  Checks check("tour");
  SinkCounts seen;
  auto bus_or = fnbus::EventBus::Create(tour_config(seen));
  if (!bus_or.ok()) {  // InvalidArgument names each bad setting
    check(false, "cannot start the bus: " + bus_or.status().ToString());
    return check.report();
  }
  fnbus::EventBus& bus = **bus_or;
  int audit_entries = 0;
  const std::vector<fnbus::Subscription> subscriptions =
      subscribe_all(bus, audit_entries);

  check(publish_traffic(bus), "every event accepted");
  // Drain: handle everything accepted, including the follow-ups that
  // handlers publish while draining, then stop the workers.
  const absl::Status status = bus.shutdown(fnbus::ShutdownMode::kDrain);
  check(status.ok(), "shutdown: " + status.ToString());

  const fnbus::BusStats stats = bus.stats();
  fmt::print("\n");
  print_stats("tour stats", stats);
  check_counts(check, stats, seen, audit_entries);
  check_and_write_metrics(check, bus, metrics_out);
  return check.report();
}

}  // namespace shop
