#pragma once

// One batch function (EventBus::subscribe_batch): the collector of its
// events (a Batcher), the runs of its handler, and what becomes of the
// items that fail. The bus side (timers, queue, sinks) is BusBatches.
//
// Where a batch runs:
// - cut by size: in the collector's call that filled it (on the worker
//   handling that event);
// - cut by age: the batch's timer takes it and queues a BatchDelivery,
//   which a worker runs (the timer thread runs no handler);
// - a retry of failed items: its backoff timer queues a BatchDelivery.
// Every one runs inside a call of one of the function's subscriptions
// (the collector's or the delivery's), so Subscription::cancel() waits for
// it like for any handler.
//
// Items end exactly once: succeeded; or failed for good (reported to
// on_error and the error sink, then -- with a retry policy -- dead-lettered
// kRetriesExhausted / kNotRetryable / kEventExpired); or dead-lettered
// unrun with the reason their delivery or timer gives.

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"

#include "fnbus/clock.hpp"
#include "fnbus/detail/batch_delivery.hpp"
#include "fnbus/detail/saturating_time.hpp"
#include "fnbus/event.hpp"
#include "fnbus/exec/batch_result.hpp"
#include "fnbus/exec/batcher.hpp"
#include "fnbus/random.hpp"
#include "fnbus/resilience/retry.hpp"
#include "fnbus/timers/scheduler.hpp"

namespace fnbus::detail {

// An event waiting in a batch, with its trace (for its dead letters).
template <typename E>
struct BatchItem {
  E event;
  EventTrace trace;
};

// The items of one call: events contiguous, for the handler's span.
template <typename E>
struct BatchItems {
  std::vector<E> events;
  std::vector<EventTrace> traces;
  // Each item's last call's error; empty before the first call.
  std::vector<absl::Status> last_errors;
  std::uint32_t attempt = 1;  // the call these items get next
  TimePoint first_call{};     // when their first call was made

  [[nodiscard]] bool empty() const noexcept { return events.empty(); }
  [[nodiscard]] const absl::Status& last_error(std::size_t i) const noexcept {
    static const absl::Status kNone;
    return i < last_errors.size() ? last_errors[i] : kNone;
  }
  // Moves the items out of `cut`. Throws bad_alloc before moving any.
  static BatchItems from(std::vector<BatchItem<E>>& cut) {
    BatchItems items;
    items.events.reserve(cut.size());
    items.traces.reserve(cut.size());
    for (BatchItem<E>& item : cut) {
      items.events.push_back(std::move(item.event));
      items.traces.push_back(item.trace);
    }
    cut.clear();
    return items;
  }
  // Room for `n` items, so that adding them allocates nothing.
  void reserve(std::size_t n) {
    events.reserve(n);
    traces.reserve(n);
    last_errors.reserve(n);
  }
};

template <typename E, typename F>
class BatchFunction final
    : public std::enable_shared_from_this<BatchFunction<E, F>> {
 public:
  BatchFunction(EventBus& bus, Clock& clock, F handler,
                std::unique_ptr<Batcher<BatchItem<E>>> batcher,
                BatchFunctionInfo info,
                std::optional<resilience::RetryPolicy> retry)
      : bus_(bus),
        clock_(clock),
        handler_(std::move(handler)),
        batcher_(std::move(batcher)),
        info_(std::move(info)),
        retry_(std::move(retry)) {}

  // The collector: E's handler. Runs the batch `event` fills; arms the
  // age timer of the batch it opens -- or, when no timer can be set
  // (shutdown() has begun), runs that batch now rather than leave it.
  void collect(const E& event, const Context& context);
  // Runs one call of the handler on `items` and settles each item.
  void run(BatchItems<E>& items) noexcept;
  // Dead-letters every item of `items` for this function.
  void dead_letter_all(const BatchItems<E>& items,
                       DeadLetterReason reason) noexcept;

 private:
  class Run;  // a queued batch (BatchWork)

  // Runs a batch the collector cut; dead-letters it (kRetryRefused) if
  // there is no memory to.
  void run_cut(std::vector<BatchItem<E>>& cut) noexcept;
  void dead_letter_cut(const std::vector<BatchItem<E>>& cut,
                       DeadLetterReason reason) noexcept;
  [[nodiscard]] bool arm_age_timer(TimePoint due);
  // The age timer of a batch came due (take the due batch) or ends at
  // shutdown (take what is open: the drain runs it; kCancelPending
  // dead-letters the delivery, so its items).
  void age_timer_fired(timers::TimerFate fate) noexcept;
  // Queues `items` as a BatchDelivery; when refused, dead-letters them
  // for `refused`. Returns whether it was queued.
  bool send(BatchItems<E>& items, DeadLetterReason refused) noexcept;
  // Calls the handler: the whole batch's failure, if any.
  absl::Status call(const BatchItems<E>& items, BatchResult& result,
                    std::exception_ptr& thrown) noexcept;
  // Retries or gives up each failed item of a finished call; `again`
  // (reserved for every item, so nothing here allocates) takes the retried.
  void settle(BatchItems<E>& items, const BatchResult& result,
              const absl::Status& whole, const std::exception_ptr& thrown,
              BatchItems<E>& again) noexcept;
  // `items` failed and the policy retries them: a timer for their next
  // call, or dead letters if they would be too old or it cannot be set.
  void retry_later(BatchItems<E> items) noexcept;
  void give_up(const E& event, const EventTrace& trace, std::uint32_t attempt,
               const absl::Status& failure) noexcept;
  [[nodiscard]] EventRef ref(const E& event) const noexcept {
    return EventRef(type_slot<E>(), event_type_name<E>(), &event,
                    event_ops<E>());
  }

  EventBus& bus_;
  Clock& clock_;
  F handler_;
  const std::unique_ptr<Batcher<BatchItem<E>>> batcher_;
  const BatchFunctionInfo info_;
  const std::optional<resilience::RetryPolicy> retry_;
};

template <typename E, typename F>
class BatchFunction<E, F>::Run final : public BatchWork {
 public:
  Run(std::shared_ptr<BatchFunction> function, BatchItems<E>&& items)
      : function_(std::move(function)), items_(std::move(items)) {}
  // Never run nor lost: its function was cancelled before it ran.
  ~Run() override {
    if (!items_.empty()) function_->dead_letter_all(items_, kFunctionGone);
  }

  void run() noexcept override {
    BatchItems<E> items = std::move(items_);
    items_.events.clear();  // ends it: the destructor has nothing to do
    function_->run(items);
  }
  void lost(DeadLetterReason reason) noexcept override {
    function_->dead_letter_all(items_, reason);
    items_.events.clear();
  }
  [[nodiscard]] const void* owner() const noexcept override {
    return function_.get();
  }

 private:
  static constexpr DeadLetterReason kFunctionGone =
      DeadLetterReason::kFunctionGone;
  const std::shared_ptr<BatchFunction> function_;
  BatchItems<E> items_;  // empty once run or lost
};

template <typename E, typename F>
void BatchFunction<E, F>::collect(const E& event, const Context& context) {
  typename Batcher<BatchItem<E>>::Added added = batcher_->add(
      BatchItem<E>{.event = event, .trace = context.event_trace()},
      clock_.now());
  if (!added.full.empty()) {
    run_cut(added.full);
  } else if (added.opened && !arm_age_timer(added.due)) {
    if (std::vector<BatchItem<E>> rest = batcher_->take_all(); !rest.empty()) {
      run_cut(rest);
    }
  }
}

template <typename E, typename F>
void BatchFunction<E, F>::run_cut(std::vector<BatchItem<E>>& cut) noexcept {
  try {
    BatchItems<E> items = BatchItems<E>::from(cut);
    run(items);
  } catch (...) {  // bad_alloc in from(): the items are still in `cut`
    dead_letter_cut(cut, DeadLetterReason::kRetryRefused);
  }
}

template <typename E, typename F>
void BatchFunction<E, F>::dead_letter_cut(const std::vector<BatchItem<E>>& cut,
                                          DeadLetterReason reason) noexcept {
  for (const BatchItem<E>& item : cut) {
    BusBatches::dead_letter(bus_, info_, ref(item.event), item.trace, reason, 0,
                            {});
  }
}

template <typename E, typename F>
bool BatchFunction<E, F>::arm_age_timer(TimePoint due) {
  try {
    return BusBatches::set_timer(
        bus_, due, [self = this->shared_from_this()](timers::TimerFate fate) {
          self->age_timer_fired(fate);
        });
  } catch (...) {  // bad_alloc making the task: the caller runs the batch
    return false;
  }
}

template <typename E, typename F>
void BatchFunction<E, F>::age_timer_fired(timers::TimerFate fate) noexcept {
  const bool due = fate == timers::TimerFate::kDue;
  std::vector<BatchItem<E>> cut =
      due ? batcher_->take_due(clock_.now()) : batcher_->take_all();
  bool published = true;  // nothing to publish: the timer did its job
  if (!cut.empty()) {
    const DeadLetterReason refused =
        due ? DeadLetterReason::kTimerRefused
            : DeadLetterReason::kTimerPendingAtShutdown;
    try {
      BatchItems<E> items = BatchItems<E>::from(cut);
      published = send(items, refused);
    } catch (...) {  // bad_alloc in from(): the items are still in `cut`
      dead_letter_cut(cut, refused);
      published = false;
    }
  }
  BusBatches::timer_ended(bus_, published);
}

template <typename E, typename F>
bool BatchFunction<E, F>::send(BatchItems<E>& items,
                               DeadLetterReason refused) noexcept {
  try {
    BatchDelivery delivery(
        std::make_shared<Run>(this->shared_from_this(), std::move(items)));
    if (BusBatches::publish(bus_, delivery)) return true;
    delivery.work->lost(refused);
  } catch (...) {  // bad_alloc: make_shared threw before moving `items`
    dead_letter_all(items, refused);
  }
  return false;
}

template <typename E, typename F>
void BatchFunction<E, F>::run(BatchItems<E>& items) noexcept {
  if (items.attempt == 1) items.first_call = clock_.now();
  std::optional<BatchResult> result;
  BatchItems<E> again;  // assigned field by field: -Wextra in users' builds
  again.attempt = items.attempt + 1;
  again.first_call = items.first_call;
  try {  // every allocation the call's settling needs, before the call
    result.emplace(items.events.size(), items.attempt);
    if (retry_) again.reserve(items.events.size());
  } catch (...) {  // bad_alloc: the batch cannot be run
    return dead_letter_all(items, DeadLetterReason::kRetryRefused);
  }
  std::exception_ptr thrown;
  const absl::Status whole = call(items, *result, thrown);
  settle(items, *result, whole, thrown, again);
}

template <typename E, typename F>
absl::Status BatchFunction<E, F>::call(const BatchItems<E>& items,
                                       BatchResult& result,
                                       std::exception_ptr& thrown) noexcept {
  const std::span<const E> events(items.events);
  try {
    if constexpr (std::is_void_v<std::invoke_result_t<F&, std::span<const E>,
                                                      BatchResult&>>) {
      handler_(events, result);
    } else {
      if (absl::Status status = handler_(events, result); !status.ok()) {
        return status;
      }
    }
  } catch (const std::exception& error) {
    thrown = std::current_exception();
    return absl::UnknownError(error.what());
  } catch (...) {
    thrown = std::current_exception();
    return absl::UnknownError(
        "unknown exception (not derived from std::exception)");
  }
  return result.misuse();
}

template <typename E, typename F>
void BatchFunction<E, F>::settle(BatchItems<E>& items,
                                 const BatchResult& result,
                                 const absl::Status& whole,
                                 const std::exception_ptr& thrown,
                                 BatchItems<E>& again) noexcept {
  if (whole.ok() && result.failed_count() == 0) return;
  for (std::size_t i = 0; i < items.events.size(); ++i) {
    const absl::Status& failure = whole.ok() ? result.status(i) : whole;
    if (failure.ok()) continue;  // succeeded: never run again
    if (retry_ && retry_->should_retry(items.attempt, failure, thrown)) {
      again.events.push_back(std::move(items.events[i]));
      again.traces.push_back(items.traces[i]);
      again.last_errors.push_back(failure);
    } else {
      give_up(items.events[i], items.traces[i], items.attempt, failure);
    }
  }
  if (!again.empty()) retry_later(std::move(again));
}

template <typename E, typename F>
void BatchFunction<E, F>::give_up(const E& event, const EventTrace& trace,
                                  std::uint32_t attempt,
                                  const absl::Status& failure) noexcept {
  BusBatches::report_failure(bus_, info_, ref(event), trace, failure);
  if (!retry_) return;  // as for any function: no retries, no dead letter
  BusBatches::dead_letter(bus_, info_, ref(event), trace,
                          retry_->exhausted(attempt)
                              ? DeadLetterReason::kRetriesExhausted
                              : DeadLetterReason::kNotRetryable,
                          attempt, failure);
}

template <typename E, typename F>
void BatchFunction<E, F>::retry_later(BatchItems<E> items) noexcept {
  const TimePoint due = saturating_add(
      clock_.now(), retry_->delay(items.attempt - 1, thread_random()));
  if (retry_->expired(items.first_call, due)) {
    return dead_letter_all(items, DeadLetterReason::kEventExpired);
  }
  // Shared with the task, so that the items stay ours if no timer is set.
  std::shared_ptr<BatchItems<E>> pending;
  try {
    pending = std::make_shared<BatchItems<E>>(std::move(items));
    const bool set = BusBatches::set_timer(
        bus_, due,
        [self = this->shared_from_this(), pending](timers::TimerFate fate) {
          if (fate == timers::TimerFate::kDue) {
            BusBatches::timer_ended(
                self->bus_,
                self->send(*pending, DeadLetterReason::kRetryRefused));
            return;
          }
          self->dead_letter_all(*pending,
                                DeadLetterReason::kRetryPendingAtShutdown);
          BusBatches::timer_ended(self->bus_, false);
        });
    if (set) return;
  } catch (...) {  // bad_alloc (make_shared throws before moving `items`)
  }
  dead_letter_all(pending ? *pending : items, DeadLetterReason::kRetryRefused);
}

template <typename E, typename F>
void BatchFunction<E, F>::dead_letter_all(const BatchItems<E>& items,
                                          DeadLetterReason reason) noexcept {
  for (std::size_t i = 0; i < items.events.size(); ++i) {
    BusBatches::dead_letter(bus_, info_, ref(items.events[i]), items.traces[i],
                            reason, items.attempt - 1, items.last_error(i));
  }
}

}  // namespace fnbus::detail
