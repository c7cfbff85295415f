#pragma once

// The events the order service and the fulfilment service share, and their
// JSON form on the wire (json_codec.hpp). Both programs include this file:
// it is the contract between them.

#include <cstdint>
#include <string_view>

#include "json_codec.hpp"

namespace two_services {

struct OrderPlaced {
  static constexpr std::string_view kEventName = "shop.OrderPlaced";
  std::int64_t order_id = 0;
  std::int64_t user_id = 0;
  std::int64_t amount_cents = 0;
  std::int64_t items = 0;
};

struct PaymentCompleted {
  static constexpr std::string_view kEventName = "shop.PaymentCompleted";
  std::int64_t order_id = 0;
  std::int64_t amount_cents = 0;
};

// The subjects, all captured by one stream.
inline constexpr std::string_view kStream = "ORDERS";
inline constexpr std::string_view kStreamSubjects = "orders.>";
inline constexpr std::string_view kOrderPlacedSubject = "orders.placed";
inline constexpr std::string_view kPaymentCompletedSubject = "orders.paid";

inline const JsonCodec<OrderPlaced>& order_placed_json() {
  static const JsonCodec<OrderPlaced> codec(
      {{"order_id", &OrderPlaced::order_id},
       {"user_id", &OrderPlaced::user_id},
       {"amount_cents", &OrderPlaced::amount_cents},
       {"items", &OrderPlaced::items}});
  return codec;
}

inline const JsonCodec<PaymentCompleted>& payment_completed_json() {
  static const JsonCodec<PaymentCompleted> codec(
      {{"order_id", &PaymentCompleted::order_id},
       {"amount_cents", &PaymentCompleted::amount_cents}});
  return codec;
}

}  // namespace two_services
