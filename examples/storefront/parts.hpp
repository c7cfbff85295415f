#pragma once

// The shop's events, the helpers its handlers share, and the five parts
// of the storefront example:
//
//   tour.cpp        one order flow end to end: handlers, follow-ups, a
//                   declined payment, trigger(), sinks, counters, metrics
//   flash_sale.cpp  order chains that survive a saturated kBlock queue
//                   (BusConfig::follow_up_headroom)
//   outbox.cpp      events the bus refuses stay with the caller
//                   (EventBus::try_publish) and are published again later
//   payments.cpp    a flaky gateway's charges retried; an outage behind
//                   a circuit breaker, the payments it turned away kept
//                   in a dead-letter store and replayed; a fallback for
//                   refunds; unpaid orders cancelled by a timer
//   mesh.cpp        request/reply (pricing quotes from two replicas),
//                   per-key order (order steps by order id), a canary of
//                   the charge function rolled back automatically
//
// Events are plain structs. Up to 48 bytes (ids as integers, money in
// cents) with a noexcept move constructor, they are stored inside the
// queue slot: publishing them does not allocate.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "fmt/core.h"

#include "fnbus/fnbus.hpp"

namespace shop {

// --- The tour (tour.cpp) ---

struct UserRegistered {
  std::int64_t user_id = 0;
  std::string email;  // allocates only for long emails
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

// --- The flash sale (flash_sale.cpp): one order's chain ---
//
//   OrderPlaced      -> request_payment -> PaymentRequested
//                    -> reserve_stock   -> StockReserved
//   PaymentRequested -> capture_payment -> PaymentCaptured
//   PaymentCaptured, StockReserved -> (both seen) -> OrderConfirmed
//
// and, from other threads, the traffic that keeps the queue full:
//   PageViewed       -> recommend_products

struct OrderPlaced {
  std::int64_t order_id = 0;
  std::int64_t amount_cents = 0;
};
struct PaymentRequested {
  std::int64_t order_id = 0;
  std::int64_t amount_cents = 0;
};
struct PaymentCaptured {
  std::int64_t order_id = 0;
};
struct StockReserved {
  std::int64_t order_id = 0;
};
struct OrderConfirmed {
  std::int64_t order_id = 0;
};
struct PageViewed {
  std::int64_t visitor_id = 0;
  std::int64_t product_id = 0;
};

// --- Payments (payments.cpp) ---
//
// OrderPlaced, PaymentRequested and PaymentCompleted as above, and:

// Published by a timer 30 minutes after an order: cancel it if unpaid.
struct CancelIfUnpaid {
  std::int64_t order_id = 0;
};
// A paid order returned by its customer.
struct RefundRequested {
  std::int64_t order_id = 0;
  std::int64_t amount_cents = 0;
};

// --- The outbox (outbox.cpp) ---

struct Invoice {
  std::int64_t order_id = 0;
  std::string email;
  std::int64_t amount_cents = 0;
};
// Move-only: the event owns its invoice. 16 bytes with a noexcept move, so
// it is stored in the queue slot (the Invoice itself is allocated by the
// caller once).
struct InvoiceIssued {
  std::int64_t order_id = 0;
  std::unique_ptr<Invoice> invoice;
};

// --- Shared helpers ---

inline std::string dollars(std::int64_t cents) {
  return fmt::format("${}.{:02}", cents / 100, cents % 100);
}

// FunctionOptions with only a name. Written field by field: GCC's -Wextra
// warns about designated initialisers that leave fields out
// (`{.name = "..."}` leaves out on_error).
inline fnbus::FunctionOptions named(std::string name) {
  fnbus::FunctionOptions options;
  options.name = std::move(name);
  return options;
}

// Prints the counters of a bus (after shutdown() they are final).
inline void print_stats(std::string_view label, const fnbus::BusStats& stats) {
  fmt::print(
      "{}: published={} dispatched={} delivered={} failed={} rejected={} "
      "unhandled={} dead_lettered={} queue_depth={}\n",
      label, stats.published, stats.dispatched, stats.delivered, stats.failed,
      stats.rejected, stats.unhandled, stats.dead_lettered, stats.queue_depth);
}

// The five parts; each prints what it does, checks its counters and
// returns true if every check passed.
// `metrics_out`: empty prints the tour's Prometheus text; otherwise the
// text is written to that file.
bool run_tour(const std::string& metrics_out);
bool run_flash_sale();
bool run_outbox();
bool run_payments();
bool run_mesh();

}  // namespace shop
