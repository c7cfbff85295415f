#pragma once

// What one invocation of a function came to. The dispatch loop accounts
// for every outcome in one place (the success path inline, the rest in
// cold code), so a new stage of a function's pipeline adds an outcome, not
// a branch in the hot loop.

#include <cstdint>
#include <string_view>

namespace fnbus {

enum class Outcome : std::uint8_t {
  // The handler returned normally (or OK).
  kDelivered,
  // The handler threw or returned a non-OK Status (in the call's failure
  // out-parameter); no fallback handled it.
  kFailed,
  // FunctionOptions::when said no: not run, not a failure.
  kFiltered,
  // The idempotency key was seen before (FunctionOptions::idempotency_key):
  // not run again, not a failure.
  kDuplicate,
  // The circuit breaker is open and there is no fallback, or the fallback
  // failed (its failure in the out-parameter, reported like a handler's):
  // not run, handed to the dead-letter sink (DeadLetterReason::
  // kCircuitOpen).
  kRejected,
  // The fallback handled it: the breaker was open (the failure
  // out-parameter is OK), or the handler failed (it holds that failure,
  // which is reported like any other).
  kFellBack,
  // The handler returned or threw after its deadline
  // (FunctionOptions::deadline), whatever it returned, and no fallback
  // handled it: a failure, with kDeadlineExceeded in the failure
  // out-parameter. A retry may run it again.
  kTimedOut,
  // The handler failed (or timed out) and the function's retry policy
  // gives it another call: the failure is in the out-parameter, and the
  // bus schedules the retry (FunctionOptions::retry).
  kRetrying,
  // Every call the function's concurrency limit allows is running
  // (FunctionOptions::max_concurrency): not run now; the bus keeps a copy
  // of the event to run when a call ends.
  kThrottled,
};

[[nodiscard]] std::string_view to_string(Outcome outcome) noexcept;

}  // namespace fnbus
