#pragma once

// A queued call of one function (detail::RetryDelivery): which call it is
// (Context::attempt()), since when the event has been failing
// (RetryOptions::max_event_age), how the last call failed, and whether it
// already holds a slot of the function's concurrency limit, and which
// key's strand waits for it (PublishOptions::key). Reached
// through the Context of the dispatch that runs it; a first call straight
// from its event's dispatch has none.

#include <cstdint>
#include <limits>

#include "absl/status/status.h"

#include "fnbus/clock.hpp"
#include "fnbus/detail/settle_state.hpp"

namespace fnbus::detail {

// RetryState::held_strand of a call that holds no strand.
inline constexpr std::uint32_t kNoStrand =
    std::numeric_limits<std::uint32_t>::max();

struct RetryState {
  std::uint32_t attempt = 1;  // 2 = the first retry
  // The bus clock when the first call failed (attempt > 1 only).
  TimePoint first_failure{};
  absl::Status last_error;  // the previous call's failure
  // A call that waited for a slot (FunctionOptions::max_concurrency) and
  // was handed one: it runs without taking another.
  bool holds_slot = false;
  // The strand this call holds (Strands::hold()), or kNoStrand: a keyed
  // event's call keeps its key's next events waiting until it ends. Each
  // queued call holds the strand once and releases it once, when it has
  // run or will not run (EventBus::release_strand()); a call that queues
  // the next one (a retry, a wait for a slot) holds it again first.
  std::uint32_t held_strand = kNoStrand;
  // The event's PublishOptions::on_settled record, if it has one: a
  // queued call keeps the event unsettled until it has run or will not.
  SettleRef settle;
};

}  // namespace fnbus::detail
