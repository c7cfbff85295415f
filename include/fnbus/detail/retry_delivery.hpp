#pragma once

// A call on its way to one function: queued like any event (so it waits
// for a worker like any event, and counts as published and dispatched
// under its own type name), but dispatched to the one subscription it
// names instead of to the subscribers of its type (see
// EventBus::run_queued_call()). Nobody subscribes to these types: their
// dispatch finds no handler list, which is where the bus looks for them
// -- so they cost the hot path nothing.
//
//   RetryDelivery  a retry (FunctionOptions::retry) whose backoff is over;
//   SlotDelivery   an event that waited for a slot of its function's
//                  concurrency limit (FunctionOptions::max_concurrency)
//                  and now holds one.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"

#include "fnbus/detail/retry_state.hpp"
#include "fnbus/event.hpp"
#include "fnbus/owned_event.hpp"
#include "fnbus/resilience/concurrency_limit.hpp"

namespace fnbus::detail {

struct RetryDelivery {
  static constexpr std::string_view kEventName = "fnbus.retry";

  OwnedEvent event;               // a copy of the event
  std::uint64_t serial = 0;       // the subscription it is for
  std::uint32_t function_id = 0;  // its metrics series
  std::string function;           // its name, for dead letters
  RetryState state;               // the call it will be, and the last's error
  TraceContext trace;             // same correlation; parent: the event
};

struct SlotDelivery;
// A function's concurrency limit, whose waiting calls are SlotDeliveries.
using SlotLimit = resilience::ConcurrencyLimit<SlotDelivery>;

struct SlotDelivery : RetryDelivery {
  static constexpr std::string_view kEventName = "fnbus.slot";

  // The limit whose slot it holds (state.holds_slot): given back, or on to
  // the next waiting call, once it has run or will not run.
  std::shared_ptr<SlotLimit> limit;
};

// `event`'s limit, read out of line: inlined into the dispatch of a small
// event, GCC 12 took this read (for a type it never has there) for one
// past that event's end (-Warray-bounds).
[[gnu::noinline]] inline SlotLimit* limit_of(const void* event) noexcept {
  return static_cast<const SlotDelivery*>(event)->limit.get();
}

}  // namespace fnbus::detail
