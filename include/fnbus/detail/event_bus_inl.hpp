#pragma once

// The template definitions of EventBus (include "fnbus/event_bus.hpp", not
// this): subscribe's type erasure, the dispatch loop that trigger() and the
// workers share, and publish's fast path. Kept in a header so that they
// inline into the caller; kept out of event_bus.hpp so that a reader sees
// the API and its guarantees there without the machinery.

#include <new>
#include <type_traits>
#include <utility>

#include "fnbus/detail/call_handler.hpp"
#include "fnbus/event_bus.hpp"
#include "fnbus/resilience/pipeline.hpp"

namespace fnbus {

template <Event E, typename F>
detail::ErasedHandler EventBus::erase_handler(F&& handler) {
  using Fn = std::decay_t<F>;
  if constexpr (std::invocable<Fn&, const E&, Context&>) {
    return
        [fn = Fn(std::forward<F>(handler))](const void* event, Context& context,
                                            absl::Status& failure) mutable {
          const E& typed = *static_cast<const E*>(event);
          return detail::call_handler(fn, failure, typed, context);
        };
  } else {
    return [fn = Fn(std::forward<F>(handler))](const void* event, Context&,
                                               absl::Status& failure) mutable {
      const E& typed = *static_cast<const E*>(event);
      return detail::call_handler(fn, failure, typed);
    };
  }
}

template <Event E, HandlerFor<E> F>
Subscription EventBus::subscribe(F&& handler, FunctionOptions options) {
  const detail::TypeSlot slot = detail::type_slot<E>();
  detail::ErasedHandler erased = erase_handler<E>(std::forward<F>(handler));
  // A copy: the pipeline's messages name options.name as given.
  std::string name =
      options.name.empty() ? std::string("<unnamed>") : options.name;
  // Before the pipeline, whose breaker counts into the function's series.
  const std::uint32_t function_id =
      metrics_.function_id(slot, event_type_name<E>(), name);
  const resilience::RetryPolicy* retry = nullptr;
  std::shared_ptr<detail::SlotLimit> concurrency;
  if (resilience::Pipeline::wanted(options) || options.max_concurrency)
      [[unlikely]] {
    erased =
        with_pipeline(std::move(erased), options, slot, event_type_name<E>(),
                      function_id, kCopyableEvent<E>, retry, concurrency);
  }
  detail::HandlerEntry* entry =
      registry_->add(slot, std::move(name), function_id, std::move(erased),
                     std::move(options.on_error), detail::event_ops<E>(), retry,
                     std::move(concurrency));
  return Subscription(registry_, entry, entry->serial);
}

template <typename F>
Subscription EventBus::subscribe(F&& handler, FunctionOptions options) {
  static_assert(detail::HasOneSignature<F>,
                "subscribe(handler) reads the event type off the handler's "
                "first parameter, and this handler has no single one (a "
                "generic lambda, or overloads): write subscribe<E>(handler), "
                "or subscribe<E1, E2>(handler) for one handler of several "
                "event types");
  if constexpr (detail::HasOneSignature<F>) {
    using Traits = detail::HandlerTraits<F>;
    static_assert(Traits::kHasParam,
                  "a handler takes the event as its first parameter (const "
                  "E&), and this one takes no parameter");
    static_assert(!Traits::kNonConstRef,
                  "a handler takes the event by const reference (const E&) "
                  "or by value: the handlers of one event share it, so none "
                  "may change it");
    using E = typename Traits::EventType;
    constexpr bool kUsable =
        Traits::kHasParam && !Traits::kNonConstRef && Event<E>;
    if constexpr (kUsable) {
      static_assert(HandlerFor<std::decay_t<F>, E>,
                    "a handler is called as handler(const E&) or "
                    "handler(const E&, Context&) and returns void or "
                    "absl::Status");
      if constexpr (HandlerFor<std::decay_t<F>, E>) {
        return subscribe<E>(std::forward<F>(handler), std::move(options));
      }
    }
  }
  return {};  // unreachable: a static_assert above failed
}

namespace detail {
// One function object shared by the subscriptions of several event types.
template <typename Fn>
struct SharedHandler {
  std::shared_ptr<Fn> fn;
  template <typename... Args>
  auto operator()(Args&&... args)
      -> decltype((*fn)(std::forward<Args>(args)...)) {
    return (*fn)(std::forward<Args>(args)...);
  }
};
}  // namespace detail

template <Event E1, Event E2, Event... Es, typename F>
Subscription EventBus::subscribe(F&& handler, FunctionOptions options) {
  using Fn = std::decay_t<F>;
  static_assert(
      HandlerFor<Fn, E1> && HandlerFor<Fn, E2> && (HandlerFor<Fn, Es> && ...),
      "subscribe<E1, E2, ...>(handler): the handler needs an "
      "overload for each listed event type, taking const E& "
      "(optionally with Context&) and returning void or "
      "absl::Status");
  if constexpr (HandlerFor<Fn, E1> && HandlerFor<Fn, E2> &&
                (HandlerFor<Fn, Es> && ...)) {
    auto shared = std::make_shared<Fn>(std::forward<F>(handler));
    Subscription all =
        subscribe<E1>(detail::SharedHandler<Fn>{shared}, options);
    all.absorb(subscribe<E2>(detail::SharedHandler<Fn>{shared}, options));
    (all.absorb(subscribe<Es>(detail::SharedHandler<Fn>{shared}, options)),
     ...);
    return all;
  }
  return {};  // unreachable: the static_assert above failed
}

template <bool kHooks, typename Counts>
void EventBus::run_handler(detail::HandlerEntry& entry, const void* event,
                           Context& context, absl::Status& failure,
                           Counts& counts) noexcept {
  if constexpr (kHooks) {
    call_handler_hook(config_.trace.on_handler_start, context);
    counts.restart();
  }
  // Only the call and the success count inline: the failure paths are
  // cold functions, so that this stays small enough to be inlined into
  // the dispatch loop.
  try {
    const Outcome outcome = entry.fn(event, context, failure);
    if (outcome == Outcome::kDelivered) [[likely]] {
      counts.on_delivered(entry);
    } else {
      account(outcome, entry, event, context, failure, counts);
    }
  } catch (...) {
    handler_threw(entry, event, context, counts);
  }
  if constexpr (kHooks)
    call_handler_hook(config_.trace.on_handler_end, context);
}

template <typename Counts>
void EventBus::handler_failed(detail::HandlerEntry& entry, const void* event,
                              const Context& context, absl::Status& failure,
                              Counts& counts) noexcept {
  counts.on_failed(entry);
  report_failure(
      entry, event, context, failure.code(),
      std::string_view(failure.message().data(), failure.message().size()));
  failure = absl::OkStatus();
  counts.restart();
}

template <typename Counts>
void EventBus::account(Outcome outcome, detail::HandlerEntry& entry,
                       const void* event, const Context& context,
                       absl::Status& failure, Counts& counts) noexcept {
  switch (outcome) {
    case Outcome::kDelivered:
      counts.on_delivered(entry);
      return;
    case Outcome::kFailed:
      // With retries, a final failure is also this function's dead letter.
      if (entry.retry != nullptr) {
        give_up(entry, event, context, failure);
      } else {
        settle_failed(context);
      }
      handler_failed(entry, event, context, failure, counts);
      count_overrun(entry, context, counts);  // the fallback failed too
      return;
    case Outcome::kFiltered:
      counts.on_counted(entry, &detail::FunctionSeries::filtered);
      return;
    case Outcome::kDuplicate:
      counts.on_counted(entry, &detail::FunctionSeries::duplicates);
      return;
    case Outcome::kRejected:
      // The fallback's failure, if one ran while the breaker was open.
      if (!failure.ok()) handler_failed(entry, event, context, failure, counts);
      counts.on_counted(entry, &detail::FunctionSeries::rejected);
      report_circuit_open(entry, event, context);
      counts.restart();
      return;
    case Outcome::kFellBack:
      // The handler's failure (none if the breaker was open) is a
      // failure like any other; the fallback's work is its delivery.
      if (!failure.ok()) handler_failed(entry, event, context, failure, counts);
      count_overrun(entry, context, counts);
      counts.on_counted(entry, &detail::FunctionSeries::fell_back);
      return;
    case Outcome::kTimedOut:
      if (entry.retry != nullptr) {
        give_up(entry, event, context, failure);
      } else {
        settle_failed(context);
      }
      handler_failed(entry, event, context, failure, counts);
      count_overrun(entry, context, counts);
      return;
    case Outcome::kRetrying:
      // A failed call like any other, but only the final failure is
      // reported (on_error is the function's compensation: not per call).
      counts.on_failed(entry);
      count_overrun(entry, context, counts);
      counts.on_counted(entry, &detail::FunctionSeries::retried);
      schedule_retry(entry, event, context, failure);
      failure = absl::OkStatus();
      counts.restart();
      return;
    case Outcome::kThrottled:  // counted by wait_for_slot(), trigger too
      wait_for_slot(entry, event, context);
      counts.restart();
      return;
  }
}

template <typename Counts>
void EventBus::count_overrun(detail::HandlerEntry& entry,
                             const Context& context, Counts& counts) noexcept {
  // The deadline stage's verdict on the call that just ended (see
  // resilience::Pipeline::call_within_deadline).
  const detail::DeadlineState* deadline =
      detail::ContextAccess::deadline(context);
  if (deadline == nullptr || !deadline->timed_out) return;
  counts.on_counted(entry, &detail::FunctionSeries::timed_out);
  if (deadline->late) counts.on_counted(entry, &detail::FunctionSeries::late);
}

template <typename Counts>
void EventBus::handler_threw(detail::HandlerEntry& entry, const void* event,
                             const Context& context, Counts& counts) noexcept {
  counts.on_failed(entry);
  settle_failed(context);
  // Called from a catch handler: rethrowing classifies what is in flight.
  try {
    throw;
  } catch (const std::exception& error) {
    report_failure(entry, event, context, absl::StatusCode::kUnknown,
                   error.what());
  } catch (...) {
    report_failure(entry, event, context, absl::StatusCode::kUnknown,
                   "unknown exception (not derived from std::exception)");
  }
  counts.restart();
}

template <typename Counts>
bool EventBus::dispatch(detail::ThreadRecord& record, detail::TypeSlot slot,
                        std::string_view type_name, const void* event,
                        const EventTrace& trace, Counts& counts,
                        detail::SettleState* settle) noexcept {
  detail::DispatchScope scope(record, this, trace);
  const detail::HandlerList* list = registry_->find(slot, scope);
  if (list == nullptr || list->entries.empty()) [[unlikely]] {
    // A queued call's type has no handlers: looking for it here costs the
    // dispatch of every other event nothing.
    if (slot == detail::type_slot<detail::RetryDelivery>()) {
      run_queued_call(record, *static_cast<const detail::RetryDelivery*>(event),
                      nullptr, trace, counts);
      return true;
    }
    if (slot == detail::type_slot<detail::SlotDelivery>()) {
      run_queued_call(record, *static_cast<const detail::RetryDelivery*>(event),
                      detail::limit_of(event), trace, counts);
      return true;
    }
    // Inside the scope: the sink runs under the rules of a handler (its
    // publishes inherit the trace, never block on this bus's queue, and
    // are accepted while the bus drains).
    if (settle != nullptr) settle->mark_unhandled();
    report_unhandled(EventRef(slot, type_name, event));
    return false;
  }
  Context context(type_name, {}, trace);
  detail::ContextAccess::set_settle(context, settle);
  // Two loops, so that buses without trace hooks do not test for them.
  if (handler_hooks_) [[unlikely]] {
    run_handlers<true>(scope, *list, event, context, counts);
  } else {
    run_handlers<false>(scope, *list, event, context, counts);
  }
  return true;
}

template <bool kHooks, typename Counts>
void EventBus::run_handlers(detail::DispatchScope& scope,
                            const detail::HandlerList& list, const void* event,
                            Context& context, Counts& counts) noexcept {
  absl::Status failure;  // one per dispatch: set only when a handler fails
  // The handler called (or skipped) last on this level: once the next
  // begin_handler() or end_handler() has said it is over, one that
  // cancelled itself may need its callable destroyed.
  detail::HandlerEntry* previous = nullptr;
  for (detail::HandlerEntry* entry : list.entries) {
    const bool runs = scope.begin_handler(entry, entry->cancelled);
    if (previous != nullptr) finish_call(*previous);
    previous = entry;
    if (!runs) [[unlikely]]
      continue;
    detail::ContextAccess::set_function(context, entry->name);
    run_handler<kHooks>(*entry, event, context, failure, counts);
  }
  scope.end_handler();
  finish_call(*previous);  // the list is not empty (see dispatch())
}

template <bool kGiveBack, Event E>
absl::Status EventBus::publish_settled(E& event, const PublishOptions& options,
                                       detail::TypeInfo& type) {
  detail::SettleState* settle = detail::SettleState::Create(options.on_settled);
  if (settle == nullptr) return settle_alloc_failed(type);
  absl::Status status = publish_event<kGiveBack>(event, options, settle);
  // Accepted: the event's envelope owns the record now (and may have
  // settled and freed it already). Refused: nothing took it.
  if (!status.ok()) settle->discard();
  return status;
}

template <Event E>
void EventBus::trigger(const E& event) noexcept {
  detail::TriggerCounts counts{trigger_failures_};
  detail::ThreadRecord& record = detail::this_thread_record();
  const detail::TypeSlot slot = detail::type_slot<E>();
  const EventTrace trace =
      detail::event_trace(record, trace_origin(record, nullptr).context);
  // An event nobody handles goes to the unhandled sink (in dispatch()).
  (void)dispatch(record, slot, event_type_name<E>(), &event, trace, counts);
}

template <Event E>
absl::Status EventBus::publish(E event, PublishOptions options) {
  static_assert(std::is_move_constructible_v<E>,
                "published events are moved into the queue");
  return publish_event<false>(event, options);
}

template <Event E>
absl::Status EventBus::try_publish(E& event, PublishOptions options) {
  static_assert(std::is_move_constructible_v<E>,
                "published events are moved into the queue");
  static_assert(detail::kStoredInline<E> || std::is_move_assignable_v<E> ||
                    std::is_nothrow_move_constructible_v<E>,
                "try_publish hands a refused event back by moving it into "
                "`event` again: give the event a move assignment or a "
                "noexcept move constructor");
  return publish_event<true>(event, options);
}

namespace detail {
// Moves `from` back into `to`, a moved-from object (try_publish's refusal).
template <typename E>
void give_back(E& to,
               E& from) noexcept(std::is_nothrow_move_assignable_v<E> ||
                                 (!std::is_move_assignable_v<E> &&
                                  std::is_nothrow_move_constructible_v<E>)) {
  if constexpr (std::is_move_assignable_v<E>) {
    to = std::move(from);
  } else {
    std::destroy_at(&to);
    std::construct_at(&to, std::move(from));
  }
}
}  // namespace detail

template <bool kGiveBack, Event E>
absl::Status EventBus::publish_event(E& event, const PublishOptions& options,
                                     detail::SettleState* settle) {
  const detail::TypeSlot slot = detail::published_slot(event);
  detail::TypeInfo& type =
      metrics_.type_info(slot, detail::published_name(event));
  if (options.overflow || options.block_timeout ||
      options.priority != Priority::kNormal || options.on_settled)
      [[unlikely]] {
    if (absl::Status status = validate(options); !status.ok()) {
      return reject(type, std::move(status));
    }
    if (!queue_.open(options.priority)) return lane_alloc_failed(type);
    if (options.on_settled && settle == nullptr) {
      return publish_settled<kGiveBack>(event, options, type);
    }
  }
  detail::ThreadRecord& record = detail::this_thread_record();
  // Before the PublishScope: TraceHooks::ambient may publish or shut down.
  const detail::EnvelopeMeta meta = make_meta(record, options, settle);
  detail::PublishScope publishing(record, this);
  if (!accepting(record)) [[unlikely]] {
    return reject_closed(type);
  }
  std::unique_lock<std::mutex> inline_lock;  // Execution::kInline only
  if (inline_) [[unlikely]]
    inline_lock = lock_for_inline();
  if constexpr (detail::kQueuedInPlace<E>) {
    // Each moves `event` only if it keeps it: a refusal leaves it as it was.
    // A keyed event waits in its strand (exec/strands.hpp) with a turn
    // queued instead; make() runs only once it is accepted.
    auto make = [&]() noexcept {
      return detail::Envelope(detail::InPlace<E>{}, std::move(event), slot,
                              meta);
    };
    auto try_push = [&]() noexcept {
      if (options.key) [[unlikely]]
        return push_keyed(*options.key, options.priority, make);
      return queue_.try_emplace(options.priority, detail::InPlace<E>{},
                                std::move(event), slot, meta);
    };
    auto try_keep = [&](detail::FollowUpBuffer& buffer) noexcept {
      if (options.key) [[unlikely]]
        return keep_keyed(*options.key, options.priority, buffer, make);
      return buffer.try_emplace(detail::InPlace<E>{}, std::move(event), slot,
                                meta);
    };
    if (try_push()) [[likely]] {
      on_accepted(type, &inline_lock);
      return absl::OkStatus();
    }
    return publish_slow(record, options, type, try_push, try_keep);
  } else {
    std::unique_ptr<E> owned;
    if constexpr (std::is_nothrow_move_constructible_v<E>) {
      owned.reset(new (std::nothrow) E(std::move(event)));
    } else {
      // A throwing move constructor: refuse and count, never let the
      // exception escape half-way through a publish.
      try {
        owned.reset(new (std::nothrow) E(std::move(event)));
      } catch (...) {
        return move_threw(type);
      }
    }
    if (owned == nullptr) return heap_alloc_failed(type);
    auto make = [&]() noexcept {  // a keyed event's, as above
      return detail::Envelope(detail::Adopt<E>{owned.release()}, slot, meta);
    };
    auto try_push = [&]() noexcept {
      if (options.key) [[unlikely]]
        return push_keyed(*options.key, options.priority, make);
      if (!queue_.try_emplace(options.priority, detail::Adopt<E>{owned.get()},
                              slot, meta)) {
        return false;
      }
      (void)owned.release();  // the queue owns it now
      return true;
    };
    auto try_keep = [&](detail::FollowUpBuffer& buffer) noexcept {
      if (options.key) [[unlikely]]
        return keep_keyed(*options.key, options.priority, buffer, make);
      if (!buffer.try_emplace(detail::Adopt<E>{owned.get()}, slot, meta)) {
        return false;
      }
      (void)owned.release();  // the buffer owns it now
      return true;
    };
    if (try_push()) [[likely]] {
      on_accepted(type, &inline_lock);
      return absl::OkStatus();
    }
    absl::Status status =
        publish_slow(record, options, type, try_push, try_keep);
    if constexpr (kGiveBack) {
      if (!status.ok()) {
        try {
          detail::give_back(event, *owned);
        } catch (...) {
          return move_threw(type);
        }
      }
    }
    return status;
  }
}

}  // namespace fnbus
