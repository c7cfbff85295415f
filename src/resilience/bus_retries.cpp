// EventBus's retries (FunctionOptions::retry): a failed call that its
// policy retries becomes a timer on the bus clock; when it comes due, a
// detail::RetryDelivery is queued and dispatched to that function alone
// (EventBus::run_queued_call()). Every retry ends exactly once: run, or
// dead-lettered for its function with the calls made and the last error.
// A keyed event's retry holds its key's strand until it ends
// (src/exec/bus_strands.cpp).

#include <chrono>
#include <memory>
#include <utility>

#include "fnbus/detail/saturating_time.hpp"
#include "fnbus/event_bus.hpp"
#include "fnbus/random.hpp"

namespace fnbus {

void EventBus::schedule_retry(const detail::HandlerEntry& entry,
                              const void* event, const Context& context,
                              const absl::Status& failure) noexcept {
  // Without a copy (or memory for the timer) the event is dead-lettered
  // at once, from the handler's own reference to it.
  auto refuse = [&] {
    function_dead_letter(entry, event, context, DeadLetterReason::kRetryRefused,
                         context.attempt(), failure);
  };
  std::shared_ptr<detail::RetryDelivery> delivery;
  TimePoint due;
  try {
    absl::StatusOr<OwnedEvent> copy = OwnedEvent::Copy(
        EventRef(entry.slot, context.event_type(), event, entry.ops));
    if (!copy.ok()) return refuse();
    const detail::RetryState* previous = detail::ContextAccess::retry(context);
    const TimePoint now = clock_->now();
    delivery = std::make_shared<detail::RetryDelivery>(detail::RetryDelivery{
        .event = *std::move(copy),
        .serial = entry.serial,
        .function_id = entry.function_id,
        .function = entry.name,
        .state = {.attempt = context.attempt() + 1,
                  .first_failure = previous != nullptr && previous->attempt > 1
                                       ? previous->first_failure
                                       : now,
                  .last_error = failure,
                  // The event stays unsettled until the retry ends.
                  .settle = detail::SettleRef(
                      detail::ContextAccess::settle(context))},
        // The retry is a child of the delivery that failed, in its
        // correlation.
        .trace = TraceContext{.correlation_id = context.correlation_id(),
                              .parent_id = context.event_id()}});
    due = detail::saturating_add(
        now, entry.retry->delay(context.attempt(), detail::thread_random()));
  } catch (...) {  // bad_alloc
    return refuse();
  }
  // Before the timer, which may fire at once on another thread: a keyed
  // event's retry keeps its key's next events waiting until it ends
  // (released by run_queued_call() or retry_lost()).
  delivery->state.held_strand = hold_strand_for(context);
  // A retry due after the event's age limit is given up now, not then.
  if (entry.retry->expired(delivery->state.first_failure, due)) {
    return retry_lost(*delivery, DeadLetterReason::kEventExpired);
  }
  try {
    absl::StatusOr<timers::TimerHandle> timer =
        timers_.schedule_at(due, [this, delivery](timers::TimerFate fate) {
          if (fate == timers::TimerFate::kShutdown) {
            timers_.count_dead_lettered();
            retry_lost(*delivery, DeadLetterReason::kRetryPendingAtShutdown);
            return;
          }
          fire_retry(*delivery);
        });
    // Refused: shutdown() has begun (the task is gone, not the delivery).
    if (!timer.ok()) retry_lost(*delivery, DeadLetterReason::kRetryRefused);
  } catch (...) {  // bad_alloc: no timer was set
    retry_lost(*delivery, DeadLetterReason::kRetryRefused);
  }
}

void EventBus::give_up(const detail::HandlerEntry& entry, const void* event,
                       const Context& context,
                       const absl::Status& failure) noexcept {
  const bool exhausted = entry.retry->exhausted(context.attempt());
  function_dead_letter(entry, event, context,
                       exhausted ? DeadLetterReason::kRetriesExhausted
                                 : DeadLetterReason::kNotRetryable,
                       context.attempt(), failure);
}

void EventBus::fire_retry(detail::RetryDelivery& delivery) noexcept {
  // Like a timer's publish: waits out a full queue for the block timeout
  // rather than giving the retry up at once.
  const PublishOptions options{.overflow = OverflowPolicy::kBlock,
                               .trace = delivery.trace};
  if (publish_event<true>(delivery, options).ok()) {
    timers_.count_fired();
    return;
  }
  timers_.count_dead_lettered();
  retry_lost(delivery, DeadLetterReason::kRetryRefused);
}

void EventBus::retry_lost(const detail::RetryDelivery& delivery,
                          DeadLetterReason reason) noexcept {
  metrics_.count_dead_letter(delivery.function_id, reason);
  if (detail::SettleState* settle = delivery.state.settle.get())
    settle->mark_dead_letter(reason);
  dead_letter_sink_.call(
      DeadLetter{.event = delivery.event.ref(),
                 .reason = reason,
                 .trace = EventTrace{.context = delivery.trace},
                 .function = delivery.function,
                 .attempts = delivery.state.attempt - 1,  // the calls made
                 .last_error = delivery.state.last_error});
  // After the dead letter: the key's next event follows it.
  release_strand(delivery.state.held_strand);
}

}  // namespace fnbus
