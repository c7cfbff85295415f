#pragma once

// The stages of one function, composed once at subscribe() from its
// FunctionOptions and stored beside its handler. A function without any of
// them keeps the direct call; with some, each invocation runs
//
//   condition -> idempotency -> breaker -> deadline -> handler
//     -> retry -> fallback
//
// (resilience4j's order: Fallback(Breaker(f))): an event the condition
// turns down is kFiltered; a key seen before is kDuplicate; an open
// breaker gives the event to the fallback, or kRejected without one; a
// failed handler is reported to the breaker, its key forgotten (a replay
// or retry is handled again) and the fallback called. A handler that
// returns (or throws) after its deadline is kTimedOut, whatever it
// returned, and is then treated as a failure (breaker, key, fallback).
//
// The breaker's time: one clock read per invocation, given to
// try_acquire(); a success is reported at that instant, a failure at a
// second read. With the bus's default clock (SteadyClock::instance()) the
// read is CLOCK_MONOTONIC_COARSE (the same clock as steady_clock, as of
// the kernel's last tick: a few ns instead of ~25 ns) when its resolution
// is at most 1 % of the breaker's slice (window / window_buckets) and of
// open_for; outcomes are then placed in slices, and the cool-down
// measured, that much less precisely. Any other clock is read as is.
//
// Thread safety: run() may be called from many threads at once (each
// stage is thread-safe).

#include <memory>
#include <optional>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/detail/type_slot.hpp"
#include "fnbus/event.hpp"
#include "fnbus/options.hpp"
#include "fnbus/resilience/circuit_breaker.hpp"
#include "fnbus/resilience/deadline_watch.hpp"
#include "fnbus/resilience/event_callables.hpp"
#include "fnbus/resilience/outcome.hpp"
#include "fnbus/resilience/retry.hpp"
#include "fnbus/resilience/seen_store.hpp"

namespace fnbus::resilience {

class Pipeline {
 public:
  // Whether `options` asks for any stage.
  [[nodiscard]] static bool wanted(const FunctionOptions& options) noexcept;
  // OK, or InvalidArgument naming each option that is wrong for a function
  // of `event_type` and what to do instead (all of FunctionOptions',
  // max_concurrency included, which the bus applies outside the pipeline).
  // `event_copyable`: whether the event type can be copied
  // (kCopyableEvent<E>), which retry and max_concurrency need.
  [[nodiscard]] static absl::Status check(const FunctionOptions& options,
                                          detail::TypeSlot slot,
                                          std::string_view event_type,
                                          bool event_copyable = true);
  // The stages `options` asks for, or check()'s errors. `clock` (the bus's) must outlive the pipeline's use.
  // `watch`: where calls with a deadline are watched (the bus's, checked
  // by its DeadlineWatchdog); null gives the pipeline a watch of its own,
  // which nothing checks (tokens are then never requested).
  // `breaker_observer`: hears the breaker's transitions (the bus's
  // metrics); unused without options.breaker.
  static absl::StatusOr<std::unique_ptr<Pipeline>> Create(
      const FunctionOptions& options, detail::TypeSlot slot,
      std::string_view event_type, Clock& clock,
      std::shared_ptr<DeadlineWatch> watch = nullptr,
      BreakerObserver breaker_observer = nullptr, bool event_copyable = true);

  // The handler's call: kDelivered, or kFailed with the Status in its
  // argument; may throw.
  using Call = absl::FunctionRef<Outcome(absl::Status& failure)>;
  // Runs the stages around `handler` for `event` (of the pipeline's type).
  // May throw only what the handler threw when there is no fallback (the
  // bus reports it as usual).
  Outcome run(const void* event, Context& context, absl::Status& failure,
              Call handler);

  // The breaker, or null (for metrics).
  [[nodiscard]] CircuitBreaker* breaker() const noexcept {
    return breaker_.get();
  }
  // The retry policy, or null (asked by the bus for delays and expiry).
  [[nodiscard]] const RetryPolicy* retry() const noexcept {
    return retry_ ? &*retry_ : nullptr;
  }

 private:
  Pipeline(Clock& clock) : clock_(clock) {}

  // The instant for the breaker (see the file comment).
  [[nodiscard]] TimePoint breaker_now() const noexcept;

  Outcome call_guarded(const void* event, Context& context,
                       absl::Status& failure, Call handler,
                       CircuitBreaker::Permit& permit, std::string_view key);
  // After the handler failed (`failure` set; `thrown` if it threw):
  // kRetrying if the retry policy gives it another call, else the
  // fallback's outcome, or `failed` (kFailed, or kTimedOut).
  Outcome after_failure(const void* event, Context& context,
                        absl::Status& failure, Outcome failed,
                        const std::exception_ptr& thrown = nullptr);
  Outcome while_open(const void* event, Context& context,
                     absl::Status& failure);
  // Calls the fallback; its failure (or throw) becomes kFailed with a
  // message that also carries the handler's failure, if any.
  Outcome call_fallback(const void* event, Context& context,
                        absl::Status& failure);
  void forget(std::string_view key);
  // The deadline stage (pipeline_deadline.cpp): runs `handler` watched
  // until now + deadline_; kTimedOut (with `failure` saying why) if it
  // returned or threw after that.
  Outcome call_within_deadline(Context& context, absl::Status& failure,
                               Call handler);

  Clock& clock_;
  Condition when_;
  KeyOf key_of_;
  std::shared_ptr<SeenStore> seen_;
  std::unique_ptr<CircuitBreaker> breaker_;
  // Whether breaker_now() reads CLOCK_MONOTONIC_COARSE instead of clock_.
  bool coarse_breaker_time_ = false;
  Fallback fallback_;
  std::optional<Duration> deadline_;      // FunctionOptions::deadline
  std::shared_ptr<DeadlineWatch> watch_;  // set with deadline_
  std::optional<RetryPolicy> retry_;      // FunctionOptions::retry
};

// Pipeline::check for a function of events E: the configuration-time
// check of options (subscribe() fails a precondition check with the same
// message on options that do not pass it).
template <Event E>
[[nodiscard]] absl::Status check_options(const FunctionOptions& options) {
  return Pipeline::check(options, detail::type_slot<E>(), event_type_name<E>(),
                         kCopyableEvent<E>);
}

}  // namespace fnbus::resilience
