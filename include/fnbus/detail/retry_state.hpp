#pragma once

// A queued call of one function (detail::RetryDelivery): which call it is
// (Context::attempt()), since when the event has been failing
// (RetryOptions::max_event_age), how the last call failed, and whether it
// already holds a slot of the function's concurrency limit. Reached
// through the Context of the dispatch that runs it; a first call straight
// from its event's dispatch has none.

#include <cstdint>

#include "absl/status/status.h"

#include "fnbus/clock.hpp"

namespace fnbus::detail {

struct RetryState {
  std::uint32_t attempt = 1;  // 2 = the first retry
  // The bus clock when the first call failed (attempt > 1 only).
  TimePoint first_failure{};
  absl::Status last_error;  // the previous call's failure
  // A call that waited for a slot (FunctionOptions::max_concurrency) and
  // was handed one: it runs without taking another.
  bool holds_slot = false;
};

}  // namespace fnbus::detail
