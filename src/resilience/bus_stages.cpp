// EventBus's hook points for a function's stages (resilience::Pipeline):
// kept out of event_bus.cpp, which only calls them.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "fnbus/event_bus.hpp"
#include "fnbus/resilience/pipeline.hpp"

namespace fnbus {
namespace {
// The error of the call before this one, if this is a retry.
absl::Status retry_error(const Context& context) {
  const detail::RetryState* retry = detail::ContextAccess::retry(context);
  return retry != nullptr ? retry->last_error : absl::OkStatus();
}
}  // namespace

detail::ErasedHandler EventBus::with_pipeline(
    detail::ErasedHandler handler, const FunctionOptions& options,
    detail::TypeSlot slot, std::string_view event_type,
    std::uint32_t function_id, bool event_copyable,
    const resilience::RetryPolicy*& retry,
    std::shared_ptr<detail::SlotLimit>& concurrency) {
  if (absl::Status status = resilience::Pipeline::check(
          options, slot, event_type, event_copyable);
      !status.ok()) {
    const std::string message(status.message());
    detail::assertion_failed("resilience::check_options<E>(options).ok()",
                             message.c_str(), __FILE__, __LINE__);
  }
  if (resilience::Pipeline::wanted(options)) {
    handler = with_stages(std::move(handler), options, slot, event_type,
                          function_id, event_copyable, retry);
  }
  if (options.max_concurrency) {
    concurrency = std::make_shared<detail::SlotLimit>(*options.max_concurrency);
    handler = with_concurrency_limit(std::move(handler), concurrency);
  }
  return handler;
}

detail::ErasedHandler EventBus::with_stages(
    detail::ErasedHandler handler, const FunctionOptions& options,
    detail::TypeSlot slot, std::string_view event_type,
    std::uint32_t function_id, bool event_copyable,
    const resilience::RetryPolicy*& retry) {
  std::shared_ptr<resilience::DeadlineWatch> watch;
  if (options.deadline && *options.deadline > Duration::zero()) {
    watch = deadline_watch(*options.deadline);
  }
  resilience::BreakerObserver breaker_observer;
  if (options.breaker) {
    // Destroyed with the breaker (its observer's last copy), which takes
    // the breaker out of the function's live counts.
    auto tally = std::make_shared<detail::BreakerTally>(
        metrics_.breaker_series(function_id));
    breaker_observer = [tally = std::move(tally)](
                           const resilience::BreakerTransition& transition) {
      tally->on_transition(transition);
    };
  }
  auto pipeline = resilience::Pipeline::Create(
      options, slot, event_type, *clock_, std::move(watch),
      std::move(breaker_observer), event_copyable);
  FNBUS_ASSERT(pipeline.ok(), "with_pipeline() checked the options");
  retry = (*pipeline)->retry();
  return
      [handler = std::move(handler), pipeline = std::move(*pipeline)](
          const void* event, Context& context, absl::Status& failure) mutable {
        return pipeline->run(event, context, failure, handler);
      };
}

std::shared_ptr<resilience::DeadlineWatch> EventBus::deadline_watch(
    Duration deadline) {
  std::lock_guard lock(deadlines_mutex_);
  if (deadlines_ == nullptr) {
    // The bus's clock, not owned when it is SteadyClock::instance().
    std::shared_ptr<Clock> clock =
        config_.clock != nullptr
            ? config_.clock
            : std::shared_ptr<Clock>(std::shared_ptr<Clock>(), clock_);
    auto watchdog = resilience::DeadlineWatchdog::Create(
        std::move(clock), config_.execution == Execution::kThreadPool);
    FNBUS_ASSERT(watchdog.ok(), "the bus clock is set");
    deadlines_ = *std::move(watchdog);
  }
  // Fails only after the bus's destructor began (not while subscribing).
  (void)deadlines_->cover(deadline);
  return deadlines_->watch();
}

void EventBus::report_circuit_open(const detail::HandlerEntry& entry,
                                   const void* event,
                                   const Context& context) noexcept {
  function_dead_letter(entry, event, context, DeadLetterReason::kCircuitOpen,
                       context.attempt() - 1,  // a retry's earlier calls
                       retry_error(context));
}

void EventBus::function_dead_letter(const detail::HandlerEntry& entry,
                                    const void* event, const Context& context,
                                    DeadLetterReason reason,
                                    std::uint32_t attempts,
                                    const absl::Status& last_error) noexcept {
  metrics_.count_dead_letter(entry.function_id, reason);
  if (detail::SettleState* settle = detail::ContextAccess::settle(context))
    settle->mark_dead_letter(reason);
  dead_letter_sink_.call(DeadLetter{
      .event = EventRef(entry.slot, context.event_type(), event, entry.ops),
      .reason = reason,
      .trace = context.event_trace(),
      .function = entry.name,
      .attempts = attempts,
      .last_error = last_error});
}

}  // namespace fnbus
