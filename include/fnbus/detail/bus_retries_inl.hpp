#pragma once

// EventBus::run_retry(): a queued retry (detail::RetryDelivery) runs the
// one function it is for, as that function's dispatch would.

#include "fnbus/detail/retry_delivery.hpp"
#include "fnbus/event_bus.hpp"

namespace fnbus {

template <typename Counts>
void EventBus::run_retry(detail::ThreadRecord& record, const void* delivery,
                         const EventTrace& trace, Counts& counts) noexcept {
  const auto& retry = *static_cast<const detail::RetryDelivery*>(delivery);
  const detail::Envelope& event = retry.event.envelope_;  // (a friend)
  // A level of its own: the outer one protects the (empty) list of the
  // retry's type, this one the list of its event's type.
  detail::DispatchScope scope(record, this, trace);
  detail::HandlerEntry* entry = nullptr;
  if (const detail::HandlerList* list = registry_->find(event.slot(), scope)) {
    for (detail::HandlerEntry* candidate : list->entries) {
      if (candidate->serial == retry.serial) entry = candidate;
    }
  }
  if (entry == nullptr) {  // unsubscribed while the retry waited
    retry_lost(retry, DeadLetterReason::kFunctionGone);
    return;
  }
  if (entry->retry != nullptr &&
      entry->retry->expired(retry.state.first_failure, clock_->now())) {
    retry_lost(retry, DeadLetterReason::kEventExpired);
    return;
  }
  Context context(event.type_name(), entry->name, trace);
  detail::ContextAccess::set_retry(context, &retry.state);
  absl::Status failure;
  const bool runs = scope.begin_handler(entry, entry->cancelled);
  if (runs) {
    if (handler_hooks_) [[unlikely]] {
      run_handler<true>(*entry, event.event(), context, failure, counts);
    } else {
      run_handler<false>(*entry, event.event(), context, failure, counts);
    }
  }
  scope.end_handler();
  finish_call(*entry);
  if (!runs) retry_lost(retry, DeadLetterReason::kFunctionGone);
}

}  // namespace fnbus
