// libFuzzer target: the bytes a fulfilment service decodes come from the
// network. Built with clang only (scripts/fuzz.sh):
//
//   scripts/fuzz.sh 60   # seconds of fuzzing under ASan + UBSan
//
// Every input must either decode to an event that encodes back to a
// canonical form that decodes to the same event, or be refused with a
// Status -- never crash, leak, or read out of bounds.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "../../examples/two_services/events.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  using two_services::order_placed_json;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<two_services::OrderPlaced> order =
      order_placed_json().decode(bytes);
  if (!order.ok()) return 0;
  // A decoded event survives a round trip unchanged.
  absl::StatusOr<two_services::OrderPlaced> again =
      order_placed_json().decode(order_placed_json().encode(*order));
  if (!again.ok() || again->order_id != order->order_id ||
      again->user_id != order->user_id ||
      again->amount_cents != order->amount_cents ||
      again->items != order->items) {
    std::abort();
  }
  return 0;
}
