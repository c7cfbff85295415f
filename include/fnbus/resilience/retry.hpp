#pragma once

// A function's retry policy (FunctionOptions::retry), as a value tested on
// its own: how many calls an event gets, which failures are worth another
// call, how long to wait before it (Backoff), and how old an event may
// get before it is given up. The bus asks it after each failed call; a
// waiting retry is a timer on the bus clock, never a sleeping worker.
//
//   .retry = fnbus::resilience::RetryOptions{
//       .max_attempts = 4,
//       .backoff = {.initial = 100ms, .max = 5s},
//       .retry_if = fnbus::resilience::retry_on_codes(
//           {absl::StatusCode::kUnavailable,
//            absl::StatusCode::kDeadlineExceeded}),
//       .max_event_age = 1min}
//
// Thread safety: a RetryPolicy is immutable; delay()'s Random is the
// caller's.

#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/random.hpp"
#include "fnbus/resilience/backoff.hpp"

namespace fnbus::resilience {

// Whether a failed call is worth another: `failure` is the Status it
// returned (kUnknown with what() for an exception, kDeadlineExceeded for
// a deadline overrun); `thrown` the exception it threw, or null (rethrow
// it to tell exception types apart).
using RetryPredicate = std::function<bool(const absl::Status& failure,
                                          const std::exception_ptr& thrown)>;

struct RetryOptions {
  // Calls per event, the first included: >= 1. With 1 nothing is retried,
  // but the failure is still dead-lettered (kRetriesExhausted).
  std::uint32_t max_attempts = 3;
  // The wait before each retry (BackoffOptions; validated).
  BackoffOptions backoff = {};
  // Which failures are retried; unset: every failure.
  RetryPredicate retry_if = {};
  // How long after its first call an event may still be retried (> 0);
  // a retry that comes due later is dead-lettered (kEventExpired)
  // instead of run. Unset: no limit.
  std::optional<Duration> max_event_age = {};
};

// A predicate retrying the failures whose Status has one of `codes`
// (exceptions count as kUnknown).
[[nodiscard]] RetryPredicate retry_on_codes(
    std::initializer_list<absl::StatusCode> codes);

class RetryPolicy {
 public:
  // InvalidArgument naming every bad option and what to use instead.
  static absl::StatusOr<RetryPolicy> Create(RetryOptions options);

  // Whether call `attempt` (1 = the first), which failed with `failure`,
  // may be followed by another: attempts remain and retry_if agrees.
  // retry_if's exceptions count as "no".
  [[nodiscard]] bool should_retry(std::uint32_t attempt,
                                  const absl::Status& failure,
                                  const std::exception_ptr& thrown) const;
  // Whether call `attempt` was the last one allowed.
  [[nodiscard]] bool exhausted(std::uint32_t attempt) const noexcept {
    return attempt >= options_.max_attempts;
  }
  // The wait after failed call `attempt` (1 = before the first retry).
  [[nodiscard]] Duration delay(std::uint32_t attempt,
                               Random& random) const noexcept {
    return backoff_.delay(attempt, random);
  }
  // Whether an event first called at `first_call` is too old at `now`.
  [[nodiscard]] bool expired(TimePoint first_call,
                             TimePoint now) const noexcept {
    return options_.max_event_age && now - first_call > *options_.max_event_age;
  }

  [[nodiscard]] const RetryOptions& options() const noexcept {
    return options_;
  }

 private:
  RetryPolicy(RetryOptions options, Backoff backoff)
      : options_(std::move(options)), backoff_(backoff) {}

  RetryOptions options_;
  Backoff backoff_;
};

}  // namespace fnbus::resilience
