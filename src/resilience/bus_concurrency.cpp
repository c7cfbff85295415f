// EventBus's concurrency limits (FunctionOptions::max_concurrency): a
// function's calls run inside a wrapper that holds one slot of its
// detail::SlotLimit for the call. An event that finds every slot held is
// kThrottled: the bus keeps a copy of it waiting in the limit, holding no
// worker; a call that ends hands its slot to the oldest waiting one, which
// is queued as a detail::SlotDelivery and dispatched to that function
// alone (EventBus::run_queued_call()). Every waiting event ends exactly
// once: run, or dead-lettered for its function.

#include <memory>
#include <optional>
#include <utility>

#include "absl/cleanup/cleanup.h"

#include "fnbus/event_bus.hpp"

namespace fnbus {
namespace {

// SlotLimit::leave(): it moves a SlotDelivery (which does not allocate)
// under a mutex, so it throws only if locking does.
std::optional<detail::SlotDelivery> take_next(
    detail::SlotLimit& limit) noexcept {
  return limit.leave();
}

}  // namespace

detail::ErasedHandler EventBus::with_concurrency_limit(
    detail::ErasedHandler handler, std::shared_ptr<detail::SlotLimit> limit) {
  return [this, handler = std::move(handler), limit = std::move(limit)](
             const void* event, Context& context,
             absl::Status& failure) mutable -> Outcome {
    // A call that waited was handed its slot (detail::SlotDelivery).
    const detail::RetryState* queued = detail::ContextAccess::retry(context);
    const bool holds_slot = queued != nullptr && queued->holds_slot;
    if (!holds_slot && !limit->try_enter()) return Outcome::kThrottled;
    // Passed on when the call returns or throws. Inside the call's
    // dispatch: the next call's queueing is a publish from a handler
    // (accepted while the bus drains, never blocking).
    const absl::Cleanup release = [&]() noexcept { pass_slot(*limit); };
    return handler(event, context, failure);
  };
}

void EventBus::wait_for_slot(const detail::HandlerEntry& entry,
                             const void* event,
                             const Context& context) noexcept {
  // Counted here, not by the dispatch's counts: trigger() counts only
  // failures, and a throttled event matters wherever it came from.
  trigger_failures_.count(entry.function_id,
                          &detail::FunctionSeries::throttled);
  const detail::RetryState* queued = detail::ContextAccess::retry(context);
  std::optional<detail::SlotDelivery> now;
  try {
    absl::StatusOr<OwnedEvent> copy = OwnedEvent::Copy(
        EventRef(entry.slot, context.event_type(), event, entry.ops));
    if (copy.ok()) {
      detail::SlotDelivery call;
      call.event = *std::move(copy);
      call.serial = entry.serial;
      call.function_id = entry.function_id;
      call.function = entry.name;
      // A retry that waits stays that retry.
      if (queued != nullptr) call.state = *queued;
      call.state.holds_slot = true;
      // Like a retry: a child of the delivery that found no slot.
      call.trace = TraceContext{.correlation_id = context.correlation_id(),
                                .parent_id = context.event_id()};
      call.limit = entry.concurrency;
      now = entry.concurrency->wait(std::move(call));
      if (now) queue_with_slot(*std::move(now));  // a slot came free
      return;
    }
  } catch (...) {  // bad_alloc: nothing was kept
  }
  function_dead_letter(
      entry, event, context, DeadLetterReason::kWaitRefused,
      context.attempt() - 1,  // a retry's earlier calls
      queued != nullptr ? queued->last_error : absl::OkStatus());
}

void EventBus::pass_slot(detail::SlotLimit& limit) noexcept {
  if (std::optional<detail::SlotDelivery> next = take_next(limit)) {
    queue_with_slot(*std::move(next));
  }
}

void EventBus::queue_with_slot(detail::SlotDelivery call) noexcept {
  // Each refused call is dead-lettered and passes its slot to the next
  // waiting one, which is likely refused too (the bus is shutting down):
  // a loop, so that a long wait list does not recurse.
  for (;;) {
    const PublishOptions options{.overflow = OverflowPolicy::kBlock,
                                 .trace = call.trace};
    if (publish_event<true>(call, options).ok()) return;
    // try_publish gave `call` back. Hold the limit past the dead letter:
    // its sink may drop the last other reference.
    const std::shared_ptr<detail::SlotLimit> limit = call.limit;
    retry_lost(call, DeadLetterReason::kWaitRefused);
    std::optional<detail::SlotDelivery> next = take_next(*limit);
    if (!next) return;
    call = *std::move(next);
  }
}

void EventBus::slot_lost(const detail::SlotDelivery& call,
                         DeadLetterReason reason) noexcept {
  const std::shared_ptr<detail::SlotLimit> limit = call.limit;
  retry_lost(call, reason);
  pass_slot(*limit);
}

}  // namespace fnbus
