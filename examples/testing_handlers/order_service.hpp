#pragma once

// The code under test: a handler class, as an application would write it.
// It knows nothing about tests; it gets the bus it publishes to (and reads
// the time from) in its constructor.

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "shop_events.hpp"

#include "fnbus/clock.hpp"
#include "fnbus/event_bus.hpp"
#include "fnbus/subscription.hpp"

namespace shop {

struct OrderServiceOptions {
  // Orders above this need a human; the service refuses them.
  std::int64_t max_amount_cents = 1'000'000;
  // How long the customer has to pay, on the bus clock.
  fnbus::Duration payment_window = std::chrono::minutes(15);
};

// The order flow:
//   OrderCreated     -> validate; publish PaymentRequested
//                       (function "order_service.request_payment")
//   PaymentCompleted -> publish OrderConfirmed
//                       (function "order_service.confirm_order")
// A bad order is refused with InvalidArgument, which the bus reports to its
// error sink; nothing is published for it. A refused publish is returned
// too, so a full queue shows up as a failure of this handler.
//
// Subscribes on construction and unsubscribes on destruction. Neither
// copyable nor movable (the subscriptions point to it). Thread safety: the
// handlers keep no state, so they may run on several workers at once.
class OrderService {
 public:
  explicit OrderService(fnbus::EventBus& bus, OrderServiceOptions options = {})
      : bus_(bus), options_(options) {
    request_payment_ = bus_.subscribe<OrderCreated>(
        [this](const OrderCreated& order) { return on_order_created(order); },
        {.name = "order_service.request_payment"});
    confirm_order_ = bus_.subscribe<PaymentCompleted>(
        [this](const PaymentCompleted& paid) {
          return on_payment_completed(paid);
        },
        {.name = "order_service.confirm_order"});
  }
  OrderService(const OrderService&) = delete;
  OrderService& operator=(const OrderService&) = delete;

  // The handlers. Public, so that a test may also call them directly.
  absl::Status on_order_created(const OrderCreated& order) {
    if (absl::Status valid = validate(order); !valid.ok()) return valid;
    return bus_.publish(PaymentRequested{
        .order_id = order.order_id,
        .amount_cents = order.amount_cents,
        .expires_at = bus_.clock().now() + options_.payment_window,
    });
  }
  absl::Status on_payment_completed(const PaymentCompleted& paid) {
    return bus_.publish(OrderConfirmed{.order_id = paid.order_id});
  }

 private:
  absl::Status validate(const OrderCreated& order) const {
    const std::string which = "order " + std::to_string(order.order_id);
    if (order.items <= 0) {
      return absl::InvalidArgumentError(which + " has no items");
    }
    if (order.amount_cents <= 0) {
      return absl::InvalidArgumentError(which + " has a non-positive amount");
    }
    if (order.amount_cents > options_.max_amount_cents) {
      return absl::InvalidArgumentError(
          which + " is over the limit of " +
          std::to_string(options_.max_amount_cents) + " cents");
    }
    return absl::OkStatus();
  }

  fnbus::EventBus& bus_;
  const OrderServiceOptions options_;
  // Last: destroyed first, so no handler runs on a half-destroyed service.
  fnbus::Subscription request_payment_;
  fnbus::Subscription confirm_order_;
};

}  // namespace shop
