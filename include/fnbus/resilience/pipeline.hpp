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
// Time: one clock read per invocation, shared by the breaker and the
// deadline. The breaker is given it by try_acquire() and a success is
// reported at that instant, a failure at a second read. The deadline
// stage takes it as the call's start (Context::deadline() is it plus
// FunctionOptions::deadline).
//
// With the bus's default clock (SteadyClock::instance()) that read is
// CLOCK_MONOTONIC_COARSE (the same clock as steady_clock, as of the
// kernel's last tick: a few ns instead of ~25 ns) when its resolution (a
// tick) is at most 1 % of each timed stage's scale: of the breaker's
// slice (window / window_buckets) and open_for, and of the deadline.
// Outcomes are then placed in slices, the cool-down measured, and the
// start dated, up to one tick early: Context::deadline() may be that much
// before the exact start plus the deadline, so the stop token may be
// requested, and an overrun counted, for a call that ended less than one
// tick (<= 1 % of its deadline) before its exact deadline. Never later: a
// call that ends after its exact deadline is always an overrun. Any other
// clock, or a deadline or slice too short for the tick, is read as is
// (exactly, for all stages of the function).
//
// The end of a call with a deadline, on the default clock with a tick at
// most 1 % of the deadline: one coarse read; if that reads at least half
// the deadline before Context::deadline(), the call was on time (the
// coarse clock is never ahead of steady_clock and lags it by about a
// tick, far less than that margin), else steady_clock is read and
// compared exactly. On any other clock, or
// a shorter deadline, the end is one exact read of the clock.
//
// Thread safety: run() may be called from many threads at once (each
// stage is thread-safe).

#include <memory>
#include <optional>
#include <string_view>

#include "absl/functional/any_invocable.h"
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
  // The stages `options` asks for, or check()'s errors. `clock` (the bus's)
  // must outlive the pipeline's use. `watch`: where calls with a deadline are
  // watched (the bus's, checked by its DeadlineWatchdog); null gives the
  // pipeline a watch of its own, which nothing checks (tokens are then never
  // requested). `breaker_observer`: hears the breaker's transitions (the bus's
  // metrics); unused without options.breaker.
  static absl::StatusOr<std::unique_ptr<Pipeline>> Create(
      const FunctionOptions& options, detail::TypeSlot slot,
      std::string_view event_type, Clock& clock,
      std::shared_ptr<DeadlineWatch> watch = nullptr,
      BreakerObserver breaker_observer = nullptr, bool event_copyable = true);

  // The handler, called with run()'s event and context: kDelivered, or
  // kFailed with the Status in `failure`; may throw. (The bus's erased
  // handler type, called directly: no FunctionRef between the stages and
  // the handler on the success path.)
  using Call = absl::AnyInvocable<Outcome(const void* event, Context& context,
                                          absl::Status& failure)>;
  // Runs the stages around `handler` for `event` (of the pipeline's type).
  // May throw only what the handler threw when there is no fallback (the
  // bus reports it as usual).
  Outcome run(const void* event, Context& context, absl::Status& failure,
              Call& handler);

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

  // The instant for the breaker and the deadline's start (see the file
  // comment): coarse or exact.
  [[nodiscard]] TimePoint stage_now() const noexcept;
  // Whether a call with the deadline `deadline` certainly ended on time,
  // by a coarse read (see the file comment); false when it may not have
  // (then an exact read decides) or when the coarse clock is not used.
  [[nodiscard]] bool surely_on_time(TimePoint deadline) const noexcept;

  // Calls the handler (within the deadline, if any, from `start`) and
  // reports its outcome to the breaker's `permit` (null: no breaker).
  Outcome call_guarded(const void* event, Context& context,
                       absl::Status& failure, Call& handler,
                       CircuitBreaker::Permit* permit, std::string_view key,
                       TimePoint start);
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
  // until start + deadline_; kTimedOut (with `failure` saying why) if it
  // returned or threw after that.
  Outcome call_within_deadline(const void* event, Context& context,
                               absl::Status& failure, Call& handler,
                               TimePoint start);

  Clock& clock_;
  Condition when_;
  KeyOf key_of_;
  std::shared_ptr<SeenStore> seen_;
  std::unique_ptr<CircuitBreaker> breaker_;
  // Whether stage_now() reads CLOCK_MONOTONIC_COARSE instead of clock_.
  bool coarse_time_ = false;
  // How far before the deadline a coarse read at a call's end must be for
  // surely_on_time() (half the deadline); zero: no coarse read at the end.
  Duration coarse_end_margin_{0};
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
