// EventBus's concurrency limits (FunctionOptions::max_concurrency): a
// function's calls run inside a wrapper that holds one slot of its
// detail::SlotLimit for the call. An event that finds every slot held is
// kThrottled: the bus keeps a copy of it waiting in the limit, holding no
// worker; a call that ends hands its slot to the oldest waiting one, which
// is queued as a detail::SlotDelivery and dispatched to that function
// alone (EventBus::run_queued_call()) -- or, when the queue has no room
// for it, run at once by the thread that ended the call (run_in_place()).
// Every waiting event ends exactly once: run, or dead-lettered for its
// function.
//
// Running in place, not recursing: the waiting call runs inside the
// ending call's wrapper, and its own end may hand the slot on to a third
// call with the queue still full, and so on down the wait list. The first
// thread to run one in place becomes this bus's runner on that thread
// (InPlaceRunner); the calls handed a slot while it runs are kept in its
// list and run by its loop, one after another, so the stack grows by one
// call however long the chain.

#include <cstddef>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

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

// A thread running waiting calls of `bus` in place (EventBus::
// run_in_place()): the calls of that bus handed a slot on this thread
// meanwhile, and found the queue full, wait in `pending` for its loop.
// Runners of different buses nest (a call on one bus triggers another);
// each runs only its own bus's calls, so none outlives its bus.
struct InPlaceRunner {
  const EventBus* bus = nullptr;
  InPlaceRunner* outer = nullptr;
  std::vector<detail::SlotDelivery> pending;
  std::size_t next = 0;  // pending[next...] are still to run
};
// The innermost runner on this thread, or none. Owner-only.
constinit thread_local InPlaceRunner* tls_runner = nullptr;

// push_back() keeps `call` as it was if it throws (no memory).
static_assert(std::is_nothrow_move_constructible_v<detail::SlotDelivery>);

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
    // (accepted while the bus drains, never blocking); with no room, the
    // next call runs here, in place (see queue_with_slot()).
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
  std::uint32_t held = detail::kNoStrand;  // released if nothing is kept
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
      // The event stays unsettled until the call ends (a retry's record
      // came with its state).
      if (queued == nullptr) {
        call.state.settle =
            detail::SettleRef(detail::ContextAccess::settle(context));
      }
      call.state.holds_slot = true;
      // Like a retry: a child of the delivery that found no slot.
      call.trace = TraceContext{.correlation_id = context.correlation_id(),
                                .parent_id = context.event_id()};
      call.limit = entry.concurrency;
      // A keyed event's waiting call keeps its key's next events waiting
      // (released when it has run or will not run).
      held = call.state.held_strand = hold_strand_for(context);
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
  release_strand(held);  // after the dead letter, as retry_lost() does
}

void EventBus::pass_slot(detail::SlotLimit& limit) noexcept {
  if (std::optional<detail::SlotDelivery> next = take_next(limit)) {
    queue_with_slot(*std::move(next));
  }
}

void EventBus::queue_with_slot(detail::SlotDelivery call) noexcept {
  // Each call refused because the bus no longer accepts events is
  // dead-lettered and passes its slot to the next waiting one, which is
  // likely refused too: a loop, so that a long wait list does not recurse.
  for (;;) {
    const PublishOptions options{.overflow = OverflowPolicy::kBlock,
                                 .trace = call.trace};
    const absl::Status status = publish_event<true>(call, options);
    if (status.ok()) return;
    // try_publish gave `call` back. FailedPrecondition is reject_closed()'s
    // alone: shutdown() has begun (or the drain timed out). Every other
    // refusal is for want of room -- the queue full (and, on a worker, its
    // follow-up room: from inside a dispatch, where this runs, a publish
    // never blocks), or no memory for the queue's copy -- and would lose a
    // call that only had to wait: the thread ending the call runs it.
    if (status.code() != absl::StatusCode::kFailedPrecondition &&
        run_in_place(call)) {
      return;
    }
    // Hold the limit past the dead letter: its sink may drop the last
    // other reference.
    const std::shared_ptr<detail::SlotLimit> limit = call.limit;
    retry_lost(call, DeadLetterReason::kWaitRefused);
    std::optional<detail::SlotDelivery> next = take_next(*limit);
    if (!next) return;
    call = *std::move(next);
  }
}

bool EventBus::run_in_place(detail::SlotDelivery& call) noexcept {
  for (InPlaceRunner* runner = tls_runner; runner != nullptr;
       runner = runner->outer) {
    if (runner->bus != this) continue;
    // This thread is running this bus's waiting calls: its loop runs this
    // one next, once the call that handed it the slot has returned.
    try {
      runner->pending.push_back(std::move(call));
      return true;
    } catch (...) {  // bad_alloc: `call` is as it was
      return false;
    }
  }
  InPlaceRunner runner{.bus = this, .outer = tls_runner};
  tls_runner = &runner;
  run_with_slot(call);
  while (runner.next < runner.pending.size()) {
    // Moved out first: running it may add to `pending`.
    const detail::SlotDelivery next = std::move(runner.pending[runner.next]);
    ++runner.next;
    if (runner.next == runner.pending.size()) {
      runner.pending.clear();  // keeps the capacity for the next one
      runner.next = 0;
    }
    run_with_slot(next);
  }
  tls_runner = runner.outer;
  return true;
}

void EventBus::run_with_slot(const detail::SlotDelivery& call) noexcept {
  // As handle() would dequeued, once shutdown() cancels or the drain
  // times out.
  if (const detail::Fate fate = lifecycle_.fate();
      fate != detail::Fate::kDispatch) [[unlikely]] {
    slot_lost(call, fate == detail::Fate::kDrainTimeout
                        ? DeadLetterReason::kDrainTimeout
                        : DeadLetterReason::kCancelledAtShutdown);
    return;
  }
  detail::ThreadRecord& record = detail::this_thread_record();
  // The trace handle() would give it dequeued: a new event id, a child of
  // the delivery that found no slot.
  const EventTrace trace = detail::event_trace(record, call.trace);
  detail::LockedCounts counts{trigger_failures_};
  run_queued_call(record, call, call.limit.get(), trace, counts);
}

void EventBus::slot_lost(const detail::SlotDelivery& call,
                         DeadLetterReason reason) noexcept {
  const std::shared_ptr<detail::SlotLimit> limit = call.limit;
  retry_lost(call, reason);
  pass_slot(*limit);
}

}  // namespace fnbus
