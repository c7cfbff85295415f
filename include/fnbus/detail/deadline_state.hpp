#pragma once

// One invocation's deadline as its Context shows it (Context::deadline(),
// Context::stop_token()) and as the bus accounts for it. Kept in a
// resilience::DeadlineWatch slot -- one per thread and dispatch nesting
// level, reused by every invocation there -- so that a call with a
// deadline allocates nothing. Written and read only by the thread that
// owns the slot (the one running the invocation).

#include <stop_token>

#include "fnbus/clock.hpp"

namespace fnbus::detail {

struct DeadlineState {
  // The instant the call must end by: its start plus `budget`.
  TimePoint deadline = TimePoint::max();
  Duration budget{0};  // FunctionOptions::deadline
  // A token of the slot's stop_source, requested by DeadlineWatch::check()
  // once `deadline` has passed. Replaced only with the source (after a
  // request), so that an invocation copies no token.
  std::stop_token token;
  bool running = false;    // the handler is running: deadline() applies
  bool timed_out = false;  // it returned or threw after `deadline`
  bool late = false;       // ... and had succeeded: its result is late
};

}  // namespace fnbus::detail
