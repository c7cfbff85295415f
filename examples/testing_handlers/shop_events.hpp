#pragma once

// The events of a small shop. Plain structs; an operator<< is optional,
// but with one, a failed EventRecorder::wait_for() lists the events it saw.

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string_view>

#include "fnbus/clock.hpp"

namespace shop {

struct OrderCreated {
  // The name fnbus uses in errors and metrics (default: "shop::OrderCreated").
  static constexpr std::string_view kEventName = "shop.OrderCreated";
  std::int64_t order_id = 0;
  std::int64_t customer_id = 0;
  std::int64_t amount_cents = 0;
  std::int32_t items = 0;

  friend std::ostream& operator<<(std::ostream& out, const OrderCreated& e) {
    return out << "OrderCreated{order " << e.order_id << ", customer "
               << e.customer_id << ", " << e.amount_cents << " cents, "
               << e.items << " items}";
  }
};

struct PaymentRequested {
  static constexpr std::string_view kEventName = "shop.PaymentRequested";
  std::int64_t order_id = 0;
  std::int64_t amount_cents = 0;
  fnbus::TimePoint expires_at{};  // on the bus clock

  friend std::ostream& operator<<(std::ostream& out,
                                  const PaymentRequested& e) {
    const auto expires = std::chrono::duration_cast<std::chrono::seconds>(
        e.expires_at.time_since_epoch());
    return out << "PaymentRequested{order " << e.order_id << ", "
               << e.amount_cents << " cents, expires at " << expires.count()
               << "s}";
  }
};

struct PaymentCompleted {
  static constexpr std::string_view kEventName = "shop.PaymentCompleted";
  std::int64_t order_id = 0;
  std::int64_t amount_cents = 0;

  friend std::ostream& operator<<(std::ostream& out,
                                  const PaymentCompleted& e) {
    return out << "PaymentCompleted{order " << e.order_id << ", "
               << e.amount_cents << " cents}";
  }
};

struct OrderConfirmed {
  static constexpr std::string_view kEventName = "shop.OrderConfirmed";
  std::int64_t order_id = 0;

  friend std::ostream& operator<<(std::ostream& out, const OrderConfirmed& e) {
    return out << "OrderConfirmed{order " << e.order_id << "}";
  }
};

}  // namespace shop
