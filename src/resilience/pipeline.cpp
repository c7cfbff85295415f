#include "fnbus/resilience/pipeline.hpp"

#include <ctime>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"

#include "fnbus/detail/coarse_clock.hpp"
#include "fnbus/detail/exception_message.hpp"

namespace fnbus::resilience {
namespace {

// The problem of a typed option (when, idempotency_key, fallback) made for
// another event type, or none.
void check_type(const detail::ErasedFor& callable, bool set,
                std::string_view option, detail::TypeSlot slot,
                std::string_view event_type,
                std::vector<std::string>& problems) {
  if (!set || callable.event_slot() == slot) return;
  problems.push_back(fmt::format(
      "{} takes {} but the function handles {}; give it a callable taking "
      "const {}& (a function subscribed to several types cannot have one: "
      "subscribe to each type on its own)",
      option, callable.event_type(), event_type, event_type));
}

// A Status for the exception in flight (call inside a catch block), as
// the bus reports a throwing handler.
absl::Status status_of_current_exception() {
  return absl::UnknownError(detail::current_exception_message());
}

// The coarse clock's resolution (a kernel tick), or zero if `clock` is
// not the steady clock (CLOCK_MONOTONIC, which CLOCK_MONOTONIC_COARSE
// reads as of the last tick) or the coarse clock cannot be read.
Duration coarse_tick(const Clock& clock) {
  if (&clock != &SteadyClock::instance()) return Duration::zero();
  timespec resolution{};
  if (::clock_getres(CLOCK_MONOTONIC_COARSE, &resolution) != 0) {
    return Duration::zero();
  }
  return std::chrono::seconds(resolution.tv_sec) + Duration(resolution.tv_nsec);
}

// Whether a tick of the coarse clock is at most 1 % of `scale`.
bool tick_fits(Duration tick, Duration scale) {
  return tick > Duration::zero() && tick * 100 <= scale;
}

// Whether CLOCK_MONOTONIC_COARSE (with resolution `tick`, or zero when it
// may not stand in for the clock) may give the pipeline's one read per
// call: its tick is at most 1 % of the breaker's slice and cool-down and
// of the deadline, for those of them that are set.
bool coarse_time_fits(Duration tick, const FunctionOptions& options) {
  if (tick == Duration::zero()) return false;
  if (const auto& breaker = options.breaker) {
    const Duration slice = breaker->window / breaker->window_buckets;
    if (!tick_fits(tick, slice) || !tick_fits(tick, breaker->open_for)) {
      return false;
    }
  }
  return !options.deadline || tick_fits(tick, *options.deadline);
}

}  // namespace

bool Pipeline::wanted(const FunctionOptions& options) noexcept {
  return static_cast<bool>(options.when) ||
         static_cast<bool>(options.idempotency_key) ||
         options.seen_store != nullptr || options.breaker.has_value() ||
         static_cast<bool>(options.fallback) || options.deadline.has_value() ||
         options.retry.has_value();
}

absl::Status Pipeline::check(const FunctionOptions& options,
                             detail::TypeSlot slot, std::string_view event_type,
                             bool event_copyable) {
  std::vector<std::string> problems;
  check_type(options.when, static_cast<bool>(options.when), "when", slot,
             event_type, problems);
  check_type(options.idempotency_key,
             static_cast<bool>(options.idempotency_key), "idempotency_key",
             slot, event_type, problems);
  check_type(options.fallback, static_cast<bool>(options.fallback), "fallback",
             slot, event_type, problems);
  if (options.seen_store != nullptr && !options.idempotency_key) {
    problems.push_back(
        "seen_store is set without an idempotency_key; give the key that "
        "identifies an event (an order id), or drop the store");
  }
  if (options.breaker) {
    if (auto breaker = CircuitBreaker::Create(*options.breaker);
        !breaker.ok()) {
      problems.emplace_back(breaker.status().message());
    }
  }
  if (options.deadline && *options.deadline <= Duration::zero()) {
    problems.push_back(fmt::format(
        "deadline is {} ns; give how long one call may run (more than 0), "
        "or leave it unset for none",
        options.deadline->count()));
  }
  if (options.retry) {
    if (auto policy = RetryPolicy::Create(*options.retry); !policy.ok()) {
      problems.emplace_back(policy.status().message());
    }
    if (!event_copyable) {
      problems.push_back(fmt::format(
          "retry needs a copy of the event for each retry, and {} cannot be "
          "copied; give it a copy constructor, or drop retry",
          event_type));
    }
  }
  if (options.max_concurrency) {
    if (*options.max_concurrency <= 0) {
      problems.push_back(fmt::format(
          "max_concurrency is {}; give the most calls of the function that "
          "may run at once (at least 1), or leave it unset for no limit",
          *options.max_concurrency));
    }
    if (!event_copyable) {
      problems.push_back(fmt::format(
          "max_concurrency keeps a copy of each event that waits for a "
          "slot, and {} cannot be copied; give it a copy constructor, or "
          "drop max_concurrency",
          event_type));
    }
  }
  if (problems.empty()) return absl::OkStatus();
  const std::string_view name =
      options.name.empty() ? std::string_view("<unnamed>") : options.name;
  return absl::InvalidArgumentError(
      fmt::format("FunctionOptions of function '{}' ({}): {}", name, event_type,
                  absl::StrJoin(problems, "; ")));
}

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Create(
    const FunctionOptions& options, detail::TypeSlot slot,
    std::string_view event_type, Clock& clock,
    std::shared_ptr<DeadlineWatch> watch, BreakerObserver breaker_observer,
    bool event_copyable) {
  if (absl::Status status = check(options, slot, event_type, event_copyable);
      !status.ok()) {
    return status;
  }
  std::unique_ptr<Pipeline> pipeline(new Pipeline(clock));
  pipeline->when_ = options.when;
  pipeline->key_of_ = options.idempotency_key;
  pipeline->seen_ = options.seen_store;
  if (pipeline->key_of_ && pipeline->seen_ == nullptr) {
    auto store = InMemorySeenStore::Create(SeenStoreOptions{});
    if (!store.ok()) return store.status();
    pipeline->seen_ = std::move(*store);
  }
  if (options.breaker) {
    auto breaker =
        CircuitBreaker::Create(*options.breaker, std::move(breaker_observer));
    if (!breaker.ok()) return breaker.status();
    pipeline->breaker_ = std::move(*breaker);
  }
  const Duration tick = coarse_tick(clock);
  pipeline->coarse_time_ =
      (options.breaker || options.deadline) && coarse_time_fits(tick, options);
  pipeline->fallback_ = options.fallback;
  if (options.deadline) {
    pipeline->deadline_ = options.deadline;
    pipeline->watch_ =
        watch != nullptr ? std::move(watch) : std::make_shared<DeadlineWatch>();
    if (tick_fits(tick, *options.deadline)) {
      pipeline->coarse_end_margin_ = *options.deadline / 2;
    }
  }
  if (options.retry) {
    auto policy = RetryPolicy::Create(*options.retry);
    if (!policy.ok()) return policy.status();
    pipeline->retry_.emplace(*std::move(policy));
  }
  return pipeline;
}

TimePoint Pipeline::stage_now() const noexcept {
  if (coarse_time_) return detail::coarse_steady_now();
  return clock_.now();
}

Outcome Pipeline::run(const void* event, Context& context,
                      absl::Status& failure, Call& handler) {
  if (when_ && !when_(event)) return Outcome::kFiltered;
  std::string key;
  if (key_of_) {
    key = key_of_(event);
    if (!seen_->first_sight(key, clock_.now())) return Outcome::kDuplicate;
  }
  // One read for the breaker and the deadline (see the file comment).
  const TimePoint start = breaker_ || deadline_ ? stage_now() : TimePoint();
  if (!breaker_) {
    // No permit to make and destroy (its destructor is out of line).
    return call_guarded(event, context, failure, handler, nullptr, key, start);
  }
  CircuitBreaker::Permit permit = breaker_->try_acquire(start);
  if (!permit) {
    forget(key);  // not handled: a replay must be
    return while_open(event, context, failure);
  }
  return call_guarded(event, context, failure, handler, &permit, key, start);
}

Outcome Pipeline::call_guarded(const void* event, Context& context,
                               absl::Status& failure, Call& handler,
                               CircuitBreaker::Permit* permit,
                               std::string_view key, TimePoint start) {
  Outcome outcome;
  try {
    outcome = deadline_ ? call_within_deadline(event, context, failure, handler,
                                               start)
                        : handler(event, context, failure);
  } catch (...) {
    if (permit != nullptr) permit->on_failure(stage_now());
    forget(key);
    // Without a fallback or retries the bus reports it as it does without
    // stages; with retries it must come back as an outcome to be retried
    // or dead-lettered.
    if (!fallback_ && !retry_) throw;
    failure = status_of_current_exception();
    return after_failure(event, context, failure, Outcome::kFailed,
                         std::current_exception());
  }
  if (outcome == Outcome::kDelivered) [[likely]] {
    if (permit != nullptr) permit->on_success();  // at try_acquire's instant
    return outcome;
  }
  if (permit != nullptr) permit->on_failure(stage_now());
  forget(key);
  return after_failure(event, context, failure, outcome);
}

Outcome Pipeline::after_failure(const void* event, Context& context,
                                absl::Status& failure, Outcome failed,
                                const std::exception_ptr& thrown) {
  if (retry_ && retry_->should_retry(context.attempt(), failure, thrown)) {
    return Outcome::kRetrying;
  }
  if (!fallback_) return failed;
  return call_fallback(event, context, failure);
}

Outcome Pipeline::while_open(const void* event, Context& context,
                             absl::Status& failure) {
  if (!fallback_) return Outcome::kRejected;
  const Outcome outcome = call_fallback(event, context, failure);
  // Not handled, and not because the function failed: the event is the
  // breaker's to turn away (dead-lettered as kCircuitOpen, not given up
  // as a failed or retried call), with the fallback's failure reported.
  return outcome == Outcome::kFellBack ? outcome : Outcome::kRejected;
}

Outcome Pipeline::call_fallback(const void* event, Context& context,
                                absl::Status& failure) {
  // The handler's failure, if it ran and failed: reported by the bus
  // whatever the fallback does.
  const absl::Status handler_failure = failure;
  absl::Status fallback_failure;
  try {
    if (fallback_(event, context, fallback_failure) == Outcome::kDelivered) {
      return Outcome::kFellBack;
    }
  } catch (...) {
    fallback_failure = status_of_current_exception();
  }
  const std::string before =
      handler_failure.ok()
          ? std::string(" (called because the circuit breaker is open)")
          : fmt::format(" (called because the function failed: {})",
                        std::string(handler_failure.message()));
  failure = absl::Status(
      fallback_failure.code(),
      fmt::format("fallback failed: {}{}",
                  std::string(fallback_failure.message()), before));
  return Outcome::kFailed;
}

void Pipeline::forget(std::string_view key) {
  if (key_of_) seen_->forget(key);
}

}  // namespace fnbus::resilience
