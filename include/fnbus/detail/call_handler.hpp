#pragma once

// Calls a handler (or a fallback) and maps its result, void or
// absl::Status, to an Outcome: kDelivered, or kFailed with the Status in
// `failure` (so that the success path builds no Status).

#include <type_traits>
#include <utility>

#include "absl/status/status.h"

#include "fnbus/resilience/outcome.hpp"

namespace fnbus::detail {

template <typename Fn, typename... Args>
Outcome call_handler(Fn& fn, absl::Status& failure, Args&... args) {
  if constexpr (std::is_void_v<std::invoke_result_t<Fn&, Args&...>>) {
    fn(args...);
    return Outcome::kDelivered;
  } else {
    absl::Status status = fn(args...);
    if (status.ok()) [[likely]]
      return Outcome::kDelivered;
    failure = std::move(status);
    return Outcome::kFailed;
  }
}

}  // namespace fnbus::detail
