#pragma once

// How a bridged event type becomes bytes on a JetStream subject and back
// (library target fnbus::nats). The bridge never guesses an encoding: each
// exported or imported type names its Codec.
//
//   fnbus::nats::Codec<OrderPlaced> codec{
//       .encode = [](const OrderPlaced& e) -> absl::StatusOr<std::string> {
//         return to_json(e);
//       },
//       .decode = [](std::string_view bytes) -> absl::StatusOr<OrderPlaced> {
//         return order_placed_from_json(bytes);  // bytes are untrusted
//       }};
//
// decode() reads bytes from the network: it must reject malformed input
// with a non-OK status (the importer dead-letters the message with its raw
// bytes), never crash on it. Both may run on several threads at once.

#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace fnbus::nats {

template <typename E>
struct Codec {
  std::function<absl::StatusOr<std::string>(const E&)> encode;
  std::function<absl::StatusOr<E>(std::string_view bytes)> decode;
};

// The headers the bridge writes on each message, and reads back on import.
inline constexpr std::string_view kMessageIdHeader = "Nats-Msg-Id";
inline constexpr std::string_view kCorrelationHeader = "Fnbus-Correlation-Id";
inline constexpr std::string_view kEventIdHeader = "Fnbus-Event-Id";
inline constexpr std::string_view kEventTypeHeader = "Fnbus-Event-Type";

}  // namespace fnbus::nats
