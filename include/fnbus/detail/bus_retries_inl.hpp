#pragma once

// EventBus::run_queued_call(): a queued call of one function (a retry, or
// an event that waited for a concurrency slot: detail::RetryDelivery)
// runs that function, as its event's dispatch would, and then lets its
// key go on (a keyed event's call holds its strand: release_strand()).

#include "fnbus/detail/retry_delivery.hpp"
#include "fnbus/event_bus.hpp"

namespace fnbus {

template <typename Counts>
void EventBus::run_queued_call(detail::ThreadRecord& record,
                               const detail::RetryDelivery& call,
                               detail::SlotLimit* limit,
                               const EventTrace& trace,
                               Counts& counts) noexcept {
  const detail::Envelope& event = call.event.envelope_;  // (a friend)
  // Not run: dead-lettered, and a slot it holds passed on.
  auto lost = [&](DeadLetterReason reason) {
    retry_lost(call, reason);
    if (limit != nullptr) pass_slot(*limit);
  };
  // A level of its own: the outer one protects the (empty) list of the
  // call's type, this one the list of its event's type.
  detail::DispatchScope scope(record, this, trace);
  detail::HandlerEntry* entry = nullptr;
  if (const detail::HandlerList* list = registry_->find(event.slot(), scope)) {
    for (detail::HandlerEntry* candidate : list->entries) {
      if (candidate->serial == call.serial) entry = candidate;
    }
  }
  if (entry == nullptr) {  // unsubscribed while the call waited
    lost(DeadLetterReason::kFunctionGone);
    return;
  }
  if (call.state.attempt > 1 && entry->retry != nullptr &&
      entry->retry->expired(call.state.first_failure, clock_->now())) {
    lost(DeadLetterReason::kEventExpired);
    return;
  }
  Context context(event.type_name(), entry->name, trace);
  detail::ContextAccess::set_retry(context, &call.state);
  absl::Status failure;
  const bool runs = scope.begin_handler(entry, entry->cancelled);
  if (runs) {
    // The function's concurrency wrapper passes a held slot on.
    if (handler_hooks_) [[unlikely]] {
      run_handler<true>(*entry, event.event(), context, failure, counts);
    } else {
      run_handler<false>(*entry, event.event(), context, failure, counts);
    }
  }
  scope.end_handler();
  finish_call(*entry);
  if (!runs) {
    lost(DeadLetterReason::kFunctionGone);
  } else {
    // Over, whatever its outcome (a retry it kept holds the key itself).
    release_strand(call.state.held_strand);
  }
}

}  // namespace fnbus
