#pragma once

// Which call of a function a retry is (Context::attempt()), since when the
// event has been failing (RetryOptions::max_event_age) and how the last
// call failed. Lives on the
// stack of the dispatch that runs the retry; a first call has none.

#include <cstdint>

#include "absl/status/status.h"

#include "fnbus/clock.hpp"

namespace fnbus::detail {

struct RetryState {
  std::uint32_t attempt = 1;  // 2 = the first retry
  TimePoint first_failure{};  // the bus clock when the first call failed
  absl::Status last_error;    // the previous call's failure
};

}  // namespace fnbus::detail
