#pragma once

// EventBus: typed events, named handlers, synchronous trigger and
// asynchronous publish through a bounded lock-free queue to a thread pool.

#include <atomic>
#include <concepts>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/detail/batch_delivery.hpp"
#include "fnbus/detail/bus_metrics.hpp"
#include "fnbus/detail/config.hpp"
#include "fnbus/detail/dead_letter_outlet.hpp"
#include "fnbus/detail/dispatch_counts.hpp"
#include "fnbus/detail/envelope.hpp"
#include "fnbus/detail/follow_up_buffer.hpp"
#include "fnbus/detail/handler_registry.hpp"
#include "fnbus/detail/handler_traits.hpp"
#include "fnbus/detail/lifecycle.hpp"
#include "fnbus/detail/live_sink.hpp"
#include "fnbus/detail/retry_delivery.hpp"
#include "fnbus/detail/sample_countdown.hpp"
#include "fnbus/detail/strand_turn.hpp"
#include "fnbus/detail/thread_activity.hpp"
#include "fnbus/detail/tick_clock.hpp"
#include "fnbus/detail/type_slot.hpp"
#include "fnbus/event.hpp"
#include "fnbus/exec/batch_result.hpp"
#include "fnbus/exec/batcher.hpp"
#include "fnbus/exec/priority_lanes.hpp"
#include "fnbus/exec/strands.hpp"
#include "fnbus/exec/thread_pool.hpp"
#include "fnbus/mesh/call.hpp"
#include "fnbus/metrics/snapshot.hpp"
#include "fnbus/options.hpp"
#include "fnbus/owned_event.hpp"
#include "fnbus/queue/mpmc_queue.hpp"
#include "fnbus/resilience/deadline_watch.hpp"
#include "fnbus/subscription.hpp"
#include "fnbus/timers/bus_timers.hpp"

namespace fnbus {

namespace detail {
struct BusCalls;
struct BusBatches;
}  // namespace detail

// An in-process event bus.
//
// - subscribe<E>(handler, options) registers a named function for events of
//   type E and returns its RAII Subscription.
// - trigger(e) runs E's handlers now, in the caller's thread: no lock, no
//   allocation, nothing written to memory shared with other threads.
// - publish(e) moves e into a bounded lock-free queue; a worker of the
//   bus's pool runs E's handlers. Events of up to 48 bytes (alignment <= 8)
//   with a noexcept
//   move constructor are stored in the queue slot: no allocation. In tests,
//   BusConfig::execution makes publish run the handlers itself (kInline)
//   or leaves them queued until run_one() & co. (kManual).
// - Every event carries trace ids (Context::event_trace()); stats() and
//   metrics() count and time what the bus does.
//
// Guarantees:
// - Every accepted event (publish returned OK) is dispatched to the
//   subscriptions that exist when a worker takes it, or is handed to the
//   dead-letter sink; after shutdown() returns none is pending or running.
// - publish never blocks longer than the block timeout and never drops an
//   event silently: a refusal is a non-OK Status and counts as rejected.
//   A handler publishing to its own bus does not block on a full queue
//   (it could be waiting for itself): on a pool worker the event is kept
//   in that worker's follow-up headroom (BusConfig::follow_up_headroom)
//   and run by it next; past the headroom, or elsewhere, it gets
//   ResourceExhausted at once.
//   Sinks run for an event on a worker (unhandled, dead-letter, error)
//   follow the same rules as handlers.
// - shutdown(kDrain) handles what is queued for at most
//   BusConfig::drain_timeout, then dead-letters the rest (kDrainTimeout).
// - A handler that throws (or returns a non-OK Status) is reported to the
//   error sink with its function name and event type; the bus goes on.
// - Handlers of one event run one after another, in subscription order.
//   Different events run in parallel on different workers, so a handler
//   may run concurrently with itself.
//
// - Events published with one PublishOptions::key are handled by each
//   function one at a time, in publish order (exec/strands.hpp).
//
// Not guaranteed: ordering between events handled by different workers
// (unless they share a key), or that a subscription made after
// publish() returned does not see that event.
//
// Lifetime: neither copyable nor movable; create with Create(). The
// destructor drains (shutdown(kDrain)); it must not run inside one of the
// bus's handlers, nor while another thread calls trigger() or publish().
class EventBus : private WorkSource {
 public:
  // Validates `config` and starts the pool. InvalidArgument names every
  // setting that is out of range and what to change it to.
  static absl::StatusOr<std::unique_ptr<EventBus>> Create(BusConfig config);
  static absl::StatusOr<std::unique_ptr<EventBus>> Create() {
    return Create(BusConfig{});
  }
  ~EventBus() override;

  EventBus(const EventBus&) = delete;
  EventBus& operator=(const EventBus&) = delete;

  // Subscribes `handler` to events of type E.
  // Thread safety: any thread, also inside handlers, also while events
  // are dispatched. A dispatch already under way may or may not call the
  // new handler.
  template <Event E, HandlerFor<E> F>
  [[nodiscard]] Subscription subscribe(F&& handler,
                                       FunctionOptions options = {});

  // Subscribes `handler` to the event type of its first parameter:
  //   bus.subscribe([](const OrderPlaced& o) { ... }, {.name = "pack"});
  // The handler takes `const E&` (or E by value), optionally followed by
  // `Context&`. A handler whose event type cannot be read off (a generic
  // lambda, overloads) or that takes the event by non-const reference is
  // a compile error that says what to write instead.
  template <typename F>
  [[nodiscard]] Subscription subscribe(F&& handler,
                                       FunctionOptions options = {});

  // Subscribes one function object with an overload per event type (an
  // "order saga") to each of E1, E2, ... under one Subscription, which
  // cancels them all. The object is shared: dispatches of different types
  // may call it concurrently, as they would call separate handlers. Each
  // (type, options.name) is its own function in the metrics.
  template <Event E1, Event E2, Event... Es, typename F>
  [[nodiscard]] Subscription subscribe(F&& handler,
                                       FunctionOptions options = {});

  // Subscribes a batch function (docs/batches.md): `handler` is called as
  // handler(std::span<const E> events, BatchResult& result) -- returning
  // void or absl::Status -- with up to batch.max_items events, once that
  // many came or the first of them has waited batch.max_wait (bus clock).
  // result.fail(i, status) fails item i alone; a throw or a non-OK Status
  // fails them all. Failed items only are called again, in batches of
  // their own, after options.retry's backoff; an item out of retries is
  // reported to on_error and the error sink and dead-lettered for the
  // function (kRetriesExhausted & co.). Without options.retry a failed
  // item is reported, not retried. options.when filters events before
  // they join a batch. shutdown(kDrain) runs a batch still waiting;
  // kCancelPending dead-letters its items (kCancelledAtShutdown).
  // Returns the Subscription of the function (cancel() waits for a batch
  // call under way; batches still waiting then are dead-lettered,
  // kFunctionGone, when they come due); InvalidArgument naming every bad
  // BatchOptions field or bad or unsupported FunctionOptions (idempotency,
  // breaker, fallback, deadline, max_concurrency).
  // Thread safety: as subscribe(). The handler of one function may run
  // on several workers at once (a size cut and an age cut, say).
  template <Event E, typename F>
  absl::StatusOr<Subscription> subscribe_batch(F&& handler, BatchOptions batch,
                                               FunctionOptions options = {});

  // Runs E's handlers on `event` in the calling thread and returns when
  // they have. Unhandled events go to the unhandled sink; a failing
  // handler goes to its on_error and the error sink, and is counted as
  // failed in stats() and metrics() like a published event's. A call that
  // succeeds counts nothing, so that it writes no memory shared with
  // other threads.
  // Thread safety: any thread, also inside handlers. Never allocates,
  // never takes a lock -- except the first time a thread uses fnbus (it
  // claims a per-thread record), the first time a type is used (its id
  // is assigned), and when a handler fails (the count takes a lock).
  template <Event E>
  void trigger(const E& event) noexcept;

  // Queues `event` for the pool (Execution::kInline: and runs it; see
  // there).
  // Returns OK when accepted; ResourceExhausted when the queue is full under
  // kReject (and always under kInline and kManual, where waiting cannot
  // help); DeadlineExceeded when it stayed full for the block timeout (on
  // the bus clock) under kBlock; FailedPrecondition after shutdown() began
  // (except, while draining, for publishes from this bus's own handlers);
  // InvalidArgument for bad options, or when E's move constructor (not
  // noexcept) throws. On any error the event is not kept (use
  // try_publish() to keep it).
  // From a handler running on one of this bus's workers, a full queue
  // neither blocks nor refuses: the event is kept in that worker's
  // follow-up headroom (BusConfig::follow_up_headroom) and the worker runs
  // it before it takes anything else from the queue; only when that
  // headroom is used up is it ResourceExhausted, at once.
  // Thread safety: any thread, also inside handlers. Memory ordering:
  // actions before publish(e) are visible to every handler that receives e.
  template <Event E>
  absl::Status publish(E event, PublishOptions options = {});

  // publish(), except that a refused event stays with the caller: on any
  // non-OK Status `event` holds what it held before the call (e.g. to keep
  // it in an outbox and retry later); on OK it is moved from. Refusals
  // count as rejected, as publish()'s do. (If E's move constructor throws,
  // `event` is left as that constructor left it.)
  template <Event E>
  absl::Status try_publish(E& event, PublishOptions options = {});

  // Timers (docs/timers.md): publish `event` later, on the bus clock, from
  // the bus's timer thread (Execution::kThreadPool) or run_due_timers().
  // A waiting timer holds no worker. The publish uses `options` (overflow
  // defaulting to kBlock); its trace is taken now: a timer set by a handler
  // continues that handler's correlation. When the publish is refused
  // (e.g. the queue stayed full) the event goes to the dead-letter sink
  // (DeadLetterReason::kTimerRefused). shutdown(kDrain) first publishes
  // the timers already due; every one-shot timer still pending then goes
  // to the dead-letter sink (kTimerPendingAtShutdown) -- under both
  // modes; periodic ones stop. metrics().timers counts them all.
  // Returns: a handle (cancel() it, or let it go); InvalidArgument for a
  // delay or period <= 0 or bad options; FailedPrecondition once
  // shutdown() has begun. On error the event is not kept.
  // Thread safety: any thread, also inside handlers.
  template <Event E>
  absl::StatusOr<timers::TimerHandle> publish_after(
      Duration delay, E event, PublishOptions options = {});
  // At `due`; a time already past publishes at the next timer tick.
  template <Event E>
  absl::StatusOr<timers::TimerHandle> publish_at(TimePoint due, E event,
                                                 PublishOptions options = {});
  // A copy of `event` every `period`, the first one period from now, until
  // the returned handle is cancelled or destroyed.
  template <Event E>
  requires std::copy_constructible<E> absl::StatusOr<timers::PeriodicTimer>
  publish_every(Duration period, E event, PublishOptions options = {});
  // Request/reply (mesh/call.hpp states the contract; guide:
  // docs/request_reply.md). serve() registers `handler` -- first parameter
  // const Request&, returning absl::StatusOr<Reply> or a Reply -- as the
  // function answering Request; its `options` apply to calls as to events.
  // call<Reply>(request) asks it and returns the future of its reply, or
  // ends with `on_reply` instead (nothing waits: no worker is held).
  // Thread safety: any thread, also inside handlers.
  template <typename F>
  [[nodiscard]] mesh::Service serve(F&& handler, FunctionOptions options = {});
  template <typename F, typename G>
  [[nodiscard]] mesh::Service serve(F&& handler, FunctionOptions options,
                                    G&& fallback);
  template <typename Reply, Event Request>
  [[nodiscard]] mesh::CallFuture<Reply> call(Request request,
                                             mesh::CallOptions options = {});
  template <typename Reply, Event Request, typename Callback>
  absl::Status call(Request request, mesh::CallOptions options,
                    Callback on_reply);

  // Publishes the timers that are due now (by the bus clock) in the
  // calling thread; returns how many ran. Drives the timers of a bus
  // with Execution::kManual or kInline (which start no thread); with a
  // thread pool the timer thread does it anyway. Not from inside a
  // handler of a kInline bus's timer.
  // Thread safety: any thread.
  std::size_t run_due_timers();

  // publish() and try_publish() of the event an OwnedEvent holds (a dead
  // letter, say), as if it were published as its own type: same queue,
  // errors and counters (under its type); moved into the queue without a
  // copy or an allocation. Its trace is a published event's (options.trace,
  // else the publishing handler's, else TraceHooks::ambient, else a new
  // correlation), not the one it had before: pass that in options.trace to
  // continue its chain. InvalidArgument, counting nothing, for an empty
  // OwnedEvent. Thread safety and memory ordering: as publish().
  absl::Status publish(OwnedEvent event, PublishOptions options = {});
  absl::Status try_publish(OwnedEvent& event, PublishOptions options = {});

  // Stops accepting events, then either handles (kDrain) or dead-letters
  // (kCancelPending) everything still queued, waits for running handlers
  // and joins the workers. A drain accepts this bus's handlers' follow-ups
  // until BusConfig::drain_timeout (bus clock) passes, then dead-letters
  // what is left (kDrainTimeout). Idempotent: later calls return OK at once.
  // Returns FailedPrecondition if called from inside one of this bus's
  // handlers, since the bus would wait for itself.
  // Thread safety: any thread that is not running this bus's handlers.
  absl::Status shutdown(ShutdownMode mode = ShutdownMode::kDrain);

  // Execution::kManual (or kInline) only, a precondition: run queued events
  // in the calling thread. run_one() runs the oldest queued event, if any, and
  // says whether it did. run_all() runs the events queued when it was
  // called, not those their handlers publish. run_until_idle() runs until
  // the queue is empty, follow-ups included, but at most `max_events`
  // (a guard against handlers that publish forever). They return the count
  // run. Called from inside a handler they run nothing and return 0.
  // Thread safety: any thread; concurrent calls run one after another.
  // Called from a sink while this thread runs queued events: return 0.
  bool run_one();
  std::size_t run_all();
  std::size_t run_until_idle(std::size_t max_events = 1'000'000);

  // Counters of published events (see BusStats). Thread safety: any thread.
  [[nodiscard]] BusStats stats() const noexcept;
  // Counters per event type and function, latency histograms and gauges
  // (see metrics/snapshot.hpp). Allocates; meant for scrapes and scaling
  // ticks, not per event. Thread safety: any thread.
  [[nodiscard]] metrics::MetricsSnapshot metrics() const;
  // The clock the bus reads (BusConfig::clock or SteadyClock::instance()).
  [[nodiscard]] Clock& clock() const noexcept { return *clock_; }
  // Sets the number of pool workers to `workers` (1 .. BusConfig::
  // max_workers) while the bus runs: new workers start at once; workers
  // asked to leave finish the event they are handling first, and no
  // queued event is lost or delayed by their going. Usually called by a
  // scaling::Autoscaler. InvalidArgument out of range; FailedPrecondition
  // without a thread pool (kInline, kManual) or after shutdown() began;
  // ResourceExhausted if the OS refuses a thread (the workers that did
  // start are kept). Thread safety: any thread, also inside handlers.
  absl::Status resize_workers(std::size_t workers);
  [[nodiscard]] ThreadPoolStats pool_stats() const noexcept;
  // The configuration given to Create() (its sinks as given then; see
  // set_error_sink() & co. for replacing them).
  [[nodiscard]] const BusConfig& config() const noexcept { return config_; }

  // Replace BusConfig::error_sink, dead_letter_sink or unhandled_sink on a
  // live bus (an empty function removes it). Calls that begin after the
  // setter returns use the new sink; a call already under way may still
  // finish with the old one, which is destroyed when its last call
  // returns. Thread safety: any thread, also inside handlers and sinks,
  // concurrently with failures and dispatches.
  using ErrorSink = std::function<void(const HandlerError&)>;
  using DeadLetterSink = std::function<void(const DeadLetter&)>;
  using UnhandledSink = std::function<void(const EventRef&)>;
  void set_error_sink(ErrorSink sink);
  void set_dead_letter_sink(DeadLetterSink sink);
  void set_unhandled_sink(UnhandledSink sink);

 private:
  explicit EventBus(BusConfig config);

  template <Event E, typename F>
  static detail::ErasedHandler erase_handler(F&& handler);
  // `handler` run through the stages `options` asks for (see
  // resilience::Pipeline), inside its concurrency limit if it has one;
  // fails a precondition check on bad options. A breaker reports its
  // transitions to the series of `function_id`. Sets `retry` to the
  // pipeline's retry policy and `concurrency` to the limit (each null
  // without one).
  detail::ErasedHandler with_pipeline(
      detail::ErasedHandler handler, const FunctionOptions& options,
      detail::TypeSlot slot, std::string_view event_type,
      std::uint32_t function_id, bool event_copyable,
      const resilience::RetryPolicy*& retry,
      std::shared_ptr<detail::SlotLimit>& concurrency);
  // with_pipeline()'s resilience::Pipeline, for options it has checked.
  detail::ErasedHandler with_stages(detail::ErasedHandler handler,
                                    const FunctionOptions& options,
                                    detail::TypeSlot slot,
                                    std::string_view event_type,
                                    std::uint32_t function_id,
                                    bool event_copyable,
                                    const resilience::RetryPolicy*& retry);
  // `handler` run only while it holds a slot of `limit`
  // (src/resilience/bus_concurrency.cpp): kThrottled when none is free.
  detail::ErasedHandler with_concurrency_limit(
      detail::ErasedHandler handler, std::shared_ptr<detail::SlotLimit> limit);
  // The watch of the functions with a deadline, its watchdog made (or its
  // period shortened) to cover `deadline` (bus_stages.cpp).
  std::shared_ptr<resilience::DeadlineWatch> deadline_watch(Duration deadline);

  // Runs the handlers of one event; false if it had none.
  template <typename Counts>
  bool dispatch(detail::ThreadRecord& record, detail::TypeSlot slot,
                std::string_view type_name, const void* event,
                const EventTrace& trace, Counts& counts,
                detail::SettleState* settle = nullptr) noexcept;
  static void call_handler_hook(const std::function<void(const Context&)>& hook,
                                const Context& context) noexcept;
  template <bool kHooks, typename Counts>
  void run_handler(detail::HandlerEntry& entry, const void* event,
                   Context& context, absl::Status& failure,
                   Counts& counts) noexcept;
  // The cold halves of run_handler(): a handler that returned an error,
  // one that threw (called from the catch handler).
  template <typename Counts>
  [[gnu::cold, gnu::noinline]] void handler_failed(detail::HandlerEntry& entry,
                                                   const void* event,
                                                   const Context& context,
                                                   absl::Status& failure,
                                                   Counts& counts) noexcept;
  // Accounts for every outcome but the success path's kDelivered.
  template <typename Counts>
  [[gnu::cold, gnu::noinline]] void account(
      Outcome outcome, detail::HandlerEntry& entry, const void* event,
      const Context& context, absl::Status& failure, Counts& counts) noexcept;
  // Counts a call that ended after its deadline as timed out (and late).
  template <typename Counts>
  void count_overrun(detail::HandlerEntry& entry, const Context& context,
                     Counts& counts) noexcept;
  template <typename Counts>
  [[gnu::cold, gnu::noinline]] void handler_threw(detail::HandlerEntry& entry,
                                                  const void* event,
                                                  const Context& context,
                                                  Counts& counts) noexcept;
  // After this thread's call of `entry` is over and announced so: a
  // handler that cancelled itself is destroyed by the last call to end.
  // Marks a function's final failure (one without a dead letter) in the
  // event's on_settled record, if it has one.
  static void settle_failed(const Context& context) noexcept {
    if (detail::SettleState* settle = detail::ContextAccess::settle(context))
      settle->mark_failed();
  }
  void finish_call(detail::HandlerEntry& entry) noexcept {
    // Observe: after our retraction (begin_handler()/end_handler() and
    // their light barrier); pairs with the canceller's store and heavy
    // barrier (see HandlerRegistry::after_cancelled_call()).
    if (entry.cancelled.load(detail::kObserveOrder) == detail::kCancelledInside)
        [[unlikely]] {
      registry_->after_cancelled_call(entry);
    }
  }
  // Inlined into dispatch() (GCC 12 otherwise calls it out of line once
  // the failure paths grow: ~10% of a one-handler trigger()).
  template <bool kHooks, typename Counts>
  [[gnu::always_inline]] inline void run_handlers(
      detail::DispatchScope& scope, const detail::HandlerList& list,
      const void* event, Context& context, Counts& counts) noexcept;

  [[nodiscard]] detail::TraceOrigin trace_origin(
      const detail::ThreadRecord& record, const TraceContext* context) const {
    return detail::trace_origin(record, context, [this] {
      return ambient_hook_ ? ambient_trace() : TraceContext{};
    });
  }
  // Calls TraceHooks::ambient.
  [[nodiscard]] TraceContext ambient_trace() const noexcept;
  [[nodiscard]] detail::EnvelopeMeta make_meta(
      detail::ThreadRecord& record, const PublishOptions& options,
      detail::SettleState* settle) const {
    detail::EnvelopeMeta meta;  // a root event, not timed
    meta.settle = settle;
    if (options.trace || record.innermost != nullptr || ambient_hook_) {
      const detail::TraceOrigin origin =
          trace_origin(record, options.trace ? &*options.trace : nullptr);
      meta.context = origin.context;
      meta.has_context = origin.has;
    }
    if (metrics_.timed() && take_latency_sample(record)) {
      meta.timed = true;
      meta.accepted_ticks = ticks_.now();
    }
    return meta;
  }
  // One publish in latency_sample_every_ (per thread, per bus) is timed.
  [[nodiscard]] bool take_latency_sample(
      const detail::ThreadRecord& record) const noexcept {
    return sample_countdowns_.take(record);
  }

  [[nodiscard]] bool accepting(const detail::ThreadRecord& record) noexcept;
  // `inline_lock`: Execution::kInline's, from lock_for_inline().
  void on_accepted(
      detail::TypeInfo& type,
      std::unique_lock<std::mutex>* inline_lock = nullptr) noexcept;
  template <bool kGiveBack, Event E>
  absl::Status publish_event(E& event, const PublishOptions& options,
                             detail::SettleState* settle = nullptr);
  // publish_event() with a new record for options.on_settled.
  template <bool kGiveBack, Event E>
  absl::Status publish_settled(E& event, const PublishOptions& options,
                               detail::TypeInfo& type);
  absl::Status publish_slow(
      detail::ThreadRecord& record, const PublishOptions& options,
      detail::TypeInfo& type, absl::FunctionRef<bool()> try_push,
      absl::FunctionRef<bool(detail::FollowUpBuffer&)> try_keep);
  // A handler on one of our workers publishing to a full queue: keeps the
  // event in that worker's FollowUpBuffer (see follow_up_headroom).
  absl::Status keep_follow_up(
      detail::ThreadRecord& record, detail::TypeInfo& type,
      absl::FunctionRef<bool(detail::FollowUpBuffer&)> try_keep);
  // keep_follow_up()'s refusal: what to raise, or that headroom is off.
  std::string follow_up_refusal(std::string_view type_name,
                                std::size_t headroom) const;
  // Runs the follow-ups `worker`'s handlers kept (see keep_follow_up()).
  void run_follow_ups(detail::FollowUpBuffer& buffer,
                      detail::WorkerShard& shard) noexcept;
  absl::Status publish_blocking(detail::ThreadRecord& record,
                                std::chrono::nanoseconds timeout,
                                detail::TypeInfo& type,
                                absl::FunctionRef<bool()> try_push);
  static absl::Status reject(detail::TypeInfo& type,
                             absl::Status status) noexcept;
  static absl::Status reject_closed(detail::TypeInfo& type) noexcept;
  static absl::Status validate(const PublishOptions& options);
  static absl::Status heap_alloc_failed(detail::TypeInfo& type) noexcept;
  absl::Status lane_alloc_failed(detail::TypeInfo& type) const noexcept;
  absl::Status settle_alloc_failed(detail::TypeInfo& type) const noexcept;
  // Call inside the catch block: reads the exception in flight.
  static absl::Status move_threw(detail::TypeInfo& type) noexcept;

  // Execution::kInline and kManual.
  class CallerLoop;
  // Whether this thread runs queued events of this bus (a CallerLoop).
  [[nodiscard]] bool in_caller_loop() const noexcept;
  [[nodiscard]] std::unique_lock<std::mutex> lock_for_inline() noexcept;
  void run_inline(std::unique_lock<std::mutex>& held) noexcept;
  std::size_t run_queued(std::size_t max_events) noexcept;
  std::size_t run_queued_checked(std::size_t max_events) noexcept;

  // WorkSource
  [[nodiscard]] bool has_work() const noexcept override;
  [[nodiscard]] bool poll_work() const noexcept override;
  bool run_one(std::size_t worker,
               absl::FunctionRef<void()> taken) noexcept override;

  void handle(detail::Envelope& envelope, detail::WorkerShard& shard,
              detail::Fate fate) noexcept;
  // The shard of the thread running run_one() & co. or shutdown's sweeps.
  [[nodiscard]] detail::WorkerShard& caller_shard() noexcept {
    return metrics_.shard(max_workers_);
  }
  [[nodiscard]] LaneCursor& caller_cursor() noexcept {
    return lane_cursors_[max_workers_];
  }
  void sweep() noexcept;
  void wake_blocked_publishers() noexcept;
  void notify_blocked_publishers() noexcept;

  void report_failure(const detail::HandlerEntry& entry, const void* event,
                      const Context& context, absl::StatusCode code,
                      std::string_view message) noexcept;
  void report_unhandled(const EventRef& event) noexcept;
  // An open breaker kept `entry` from handling `event`: the dead-letter
  // sink hears of it (DeadLetterReason::kCircuitOpen).
  void report_circuit_open(const detail::HandlerEntry& entry, const void* event,
                           const Context& context) noexcept;
  // `entry` gives `event` up: the dead-letter sink hears of it, for that
  // function, with the calls made and the last one's error. With
  // retry_lost(), the one place a function's dead letters are counted
  // (FunctionMetrics::dead_letter_reasons).
  void function_dead_letter(const detail::HandlerEntry& entry,
                            const void* event, const Context& context,
                            DeadLetterReason reason, std::uint32_t attempts,
                            const absl::Status& last_error) noexcept;
  void report_dead_letter(const detail::Envelope& envelope,
                          DeadLetterReason reason,
                          const EventTrace& trace) noexcept;

  // Timers: `options` completed for a timer's publish (see publish_after).
  // Request/reply's internals (detail/bus_call_inl.hpp) read the call
  // deadlines and timers, and ask has_handlers().
  friend struct detail::BusCalls;
  // Batch functions' timers, deliveries and sinks (subscribe_batch()).
  friend struct detail::BusBatches;
  // Whether `slot` has a subscription now (src/mesh/bus_calls.cpp).
  [[nodiscard]] bool has_handlers(detail::TypeSlot slot) noexcept;
  absl::StatusOr<PublishOptions> timer_options(PublishOptions options) const;
  template <Event E>
  absl::StatusOr<timers::TimerHandle> schedule_publish(TimePoint due, E& event,
                                                       PublishOptions options);
  // A timer came due: publishes `event`, or dead-letters it if refused.
  template <Event E>
  void fire_timer(E& event, const PublishOptions& options) noexcept;
  // A timer's event will not be published.
  void timer_event_lost(const EventRef& event, DeadLetterReason reason,
                        const PublishOptions& options) noexcept;

  // Retries (FunctionOptions::retry): src/resilience/bus_retries.cpp and
  // detail/bus_retries_inl.hpp; see detail::RetryDelivery.
  // `entry`'s call of `event` failed with `failure` and its policy gives it
  // another: copies the event and sets a timer for the retry, or
  // dead-letters the event when that cannot be done.
  void schedule_retry(const detail::HandlerEntry& entry, const void* event,
                      const Context& context,
                      const absl::Status& failure) noexcept;
  // `entry` gives `event` up after its final failure (no more retries).
  void give_up(const detail::HandlerEntry& entry, const void* event,
               const Context& context, const absl::Status& failure) noexcept;
  // A retry's timer came due: queues the delivery, or dead-letters it.
  void fire_retry(detail::RetryDelivery& delivery) noexcept;
  // A retry will not run: dead-letters its event for its function.
  void retry_lost(const detail::RetryDelivery& delivery,
                  DeadLetterReason reason) noexcept;
  // Runs a queued call (a retry, or an event that waited for a slot):
  // called by dispatch(), which found no handlers for its type. `limit`:
  // the slot the call holds (a SlotDelivery's), or null.
  template <typename Counts>
  [[gnu::cold, gnu::noinline]] void run_queued_call(
      detail::ThreadRecord& record, const detail::RetryDelivery& call,
      detail::SlotLimit* limit, const EventTrace& trace,
      Counts& counts) noexcept;

  // Strands (PublishOptions::key): src/exec/bus_strands.cpp. `make`
  // builds the keyed event's envelope; it is called only once accepted.
  // Appends it to its key's strand with the strand's turn queued; false
  // (make() not called) when the queue or the strand is full.
  [[nodiscard]] bool push_keyed(
      OrderingKey key, Priority priority,
      absl::FunctionRef<detail::Envelope()> make) noexcept;
  // push_keyed(), the turn kept in a worker's follow-up headroom.
  [[nodiscard]] bool keep_keyed(
      OrderingKey key, Priority priority, detail::FollowUpBuffer& buffer,
      absl::FunctionRef<detail::Envelope()> make) noexcept;
  // handle() took a strand's turn: runs the strand's events.
  void run_strand(const detail::Envelope& turn,
                  detail::WorkerShard& shard) noexcept;
  // A call of `context`'s event is about to be kept for later (a retry, or
  // a wait for a slot): holds the strand it keeps waiting -- the keyed
  // event's own, when this thread runs that event's dispatch, or the one
  // `context`'s queued call holds -- once more, for the kept call.
  // Returns that strand, or detail::kNoStrand.
  [[nodiscard]] std::uint32_t hold_strand_for(const Context& context) noexcept;
  // A kept call holding `strand` (or kNoStrand: nothing to do) has run or
  // will not run: the last such release lets the key go on.
  void release_strand(std::uint32_t strand) noexcept;
  // The queue was found empty: posts the turns strands owe (a release
  // that found the queue full) and pops again.
  [[nodiscard]] bool repay_and_pop(detail::Envelope& envelope,
                                   LaneCursor& cursor) noexcept;

  // Concurrency limits (FunctionOptions::max_concurrency):
  // src/resilience/bus_concurrency.cpp; see detail::SlotDelivery.
  // `entry` is at its limit: keeps a copy of `event` waiting for a slot,
  // or dead-letters it (kWaitRefused) when it cannot.
  void wait_for_slot(const detail::HandlerEntry& entry, const void* event,
                     const Context& context) noexcept;
  // A call holding a slot of `limit` is over (or will not run): hands the
  // slot to the oldest waiting call, queued, or frees it.
  void pass_slot(detail::SlotLimit& limit) noexcept;
  // Queues `call`, which holds a slot. Refused for want of room, it runs
  // in place instead (run_in_place()); refused because the bus no longer
  // accepts events, it is dead-lettered (kWaitRefused) and its slot passed
  // on (the next waiting call is likely refused too).
  void queue_with_slot(detail::SlotDelivery call) noexcept;
  // Runs `call` (which holds a slot, and found the queue full) in the
  // calling thread, as a worker would run it dequeued -- or, when this
  // thread is running waiting calls of this bus in place already, leaves
  // it to that loop to run next, so that a chain of them never nests.
  // False only if it could do neither (no memory to keep it): `call` is
  // then as it was.
  [[nodiscard]] bool run_in_place(detail::SlotDelivery& call) noexcept;
  // run_in_place()'s call of one waiting call: run_queued_call(), counted
  // per function (detail::LockedCounts).
  void run_with_slot(const detail::SlotDelivery& call) noexcept;
  // A call holding a slot will not run: dead-letters its event for its
  // function and passes the slot on.
  void slot_lost(const detail::SlotDelivery& call,
                 DeadLetterReason reason) noexcept;

  const BusConfig config_;
  Clock* const clock_;  // BusConfig::clock or SteadyClock::instance()
  const detail::TickClock ticks_;  // latency timestamps
  const std::uint32_t latency_sample_every_;
  // The threads' sampling countdowns for this bus (latency_sample_every_).
  mutable detail::SampleCountdowns sample_countdowns_;
  const bool inline_;         // Execution::kInline
  const bool ambient_hook_;   // TraceHooks::ambient set
  const bool handler_hooks_;  // TraceHooks::on_handler_start or _end set
  const std::shared_ptr<detail::HandlerRegistry> registry_;
  const std::size_t max_workers_;  // BusConfig::max_workers, 0 resolved
  // One shard per worker, one for run_one() & co. and shutdown's sweeps,
  // and one for trigger()'s failures.
  detail::BusMetrics metrics_;
  detail::TriggerFailures trigger_failures_;  // in the last shard
  // One lane per Priority (PublishOptions::priority), each of
  // queue_capacity slots; the high and low lanes are allocated on first use.
  PriorityLanes<detail::Envelope> queue_;
  // Where each consumer is in its lane cycle (exec/priority_lanes.hpp): one
  // per worker index, and the last for run_one() & co. and sweeps (under
  // caller_mutex_).
  const std::unique_ptr<LaneCursor[]> lane_cursors_;
  // Keyed events (PublishOptions::key), each with one StrandTurn queued.
  Strands<detail::Envelope> strands_;
  const detail::TypeSlot strand_turn_slot_;  // type_slot<StrandTurn>()
  // One per worker (Execution::kThreadPool only), each used by its worker
  // alone: the follow-ups its handlers kept (BusConfig::follow_up_headroom).
  const std::unique_ptr<detail::FollowUpBuffer[]> follow_ups_;
  static std::unique_ptr<detail::FollowUpBuffer[]> make_follow_up_buffers(
      std::size_t workers, std::size_t headroom);
  // Events held in follow_ups_, for the queue-depth gauges. RMW by the
  // workers (slow path only), read by stats() and metrics().
  std::atomic<std::int64_t> follow_ups_held_{0};
  std::unique_ptr<ThreadPool> pool_;  // null unless Execution::kThreadPool
  // Serialises the users of caller_shard(): run_one() & co. and sweeps.
  std::mutex caller_mutex_;
  // The thread holding caller_mutex_ (see CallerLoop), or none.
  std::atomic<std::thread::id> caller_runner_{};

  timers::BusTimers timers_;  // publish_after() & co.
  // The deadlines of pending call()s, sharing timers_ (after it: the
  // timers' shutdown ends the calls they watch).
  const std::shared_ptr<detail::CallDeadlines> call_deadlines_ =
      detail::CallDeadlines::Create(config_.timer_tick);
  detail::Lifecycle lifecycle_;
  std::mutex shutdown_mutex_;  // serialises shutdown() calls
  // The sinks now (BusConfig's, or set_*_sink()'s).
  detail::LiveSink<ErrorSink> error_sink_;
  detail::DeadLetterOutlet dead_letter_sink_;  // counts them by reason
  detail::LiveSink<UnhandledSink> unhandled_sink_;
  // The thread inside shutdown(), so that a sink it calls cannot re-enter.
  std::atomic<std::thread::id> shutdown_thread_{};

  // Publishers waiting under kBlock. RMW by them; read (relaxed) by
  // consumers after each pop as a hint to notify blocked_cv_.
  alignas(detail::kCacheLineSize) std::atomic<std::int32_t> blocked_{0};
  std::mutex blocked_mutex_;
  std::condition_variable blocked_cv_;

  // Deadlines (FunctionOptions::deadline): the watchdog requesting the
  // stop tokens of overrunning calls, made by the first subscribe() with
  // a deadline. Last, so destroyed first: its timer thread is joined
  // before the rest of the bus goes. Guarded by deadlines_mutex_.
  std::mutex deadlines_mutex_;
  std::unique_ptr<resilience::DeadlineWatchdog> deadlines_;
};

}  // namespace fnbus

// The definitions of the templates above (the dispatch hot path).
#include "fnbus/detail/bus_batch_inl.hpp"    // IWYU pragma: export
#include "fnbus/detail/bus_call_inl.hpp"     // IWYU pragma: export
#include "fnbus/detail/bus_retries_inl.hpp"  // IWYU pragma: export
#include "fnbus/detail/bus_timers_inl.hpp"   // IWYU pragma: export
#include "fnbus/detail/event_bus_inl.hpp"    // IWYU pragma: export
