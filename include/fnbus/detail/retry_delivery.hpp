#pragma once

// A retry on its way to one function: queued like any event (so it waits
// for a worker like any event, and counts as published and dispatched
// under the type "fnbus.retry"), but dispatched to the one subscription it
// names instead of to the subscribers of its type (see
// EventBus::run_retry()). Nobody subscribes to it: its dispatch finds no
// handler list, which is where the bus looks for it -- so it costs the
// hot path nothing.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

#include "fnbus/detail/retry_state.hpp"
#include "fnbus/event.hpp"
#include "fnbus/owned_event.hpp"

namespace fnbus::detail {

struct RetryDelivery {
  static constexpr std::string_view kEventName = "fnbus.retry";

  OwnedEvent event;               // a copy of the failed event
  std::uint64_t serial = 0;       // the subscription it is for
  std::uint32_t function_id = 0;  // its metrics series
  std::string function;           // its name, for dead letters
  RetryState state;               // the call it will be, and the last's error
  TraceContext trace;             // same correlation; parent: failed event
};

}  // namespace fnbus::detail
