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
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/detail/bus_metrics.hpp"
#include "fnbus/detail/config.hpp"
#include "fnbus/detail/envelope.hpp"
#include "fnbus/detail/follow_up_buffer.hpp"
#include "fnbus/detail/handler_registry.hpp"
#include "fnbus/detail/handler_traits.hpp"
#include "fnbus/detail/sample_countdown.hpp"
#include "fnbus/detail/thread_activity.hpp"
#include "fnbus/detail/tick_clock.hpp"
#include "fnbus/detail/type_slot.hpp"
#include "fnbus/event.hpp"
#include "fnbus/exec/thread_pool.hpp"
#include "fnbus/metrics/snapshot.hpp"
#include "fnbus/options.hpp"
#include "fnbus/queue/mpmc_queue.hpp"
#include "fnbus/subscription.hpp"

namespace fnbus {

// What a handler may return: nothing, or an absl::Status whose non-OK value
// counts as a failure (like a throw, without the exception).
template <typename R>
concept HandlerResult = std::is_void_v<R> || std::same_as<R, absl::Status>;

// A callable taking `const E&`, or `const E&` and `Context&`.
template <typename F, typename E>
concept HandlerFor =
    (std::invocable<F&, const E&> &&
     HandlerResult<std::invoke_result_t<F&, const E&>>) ||
    (std::invocable<F&, const E&, Context&> &&
     HandlerResult<std::invoke_result_t<F&, const E&, Context&>>);

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
// Not guaranteed: ordering between events handled by different workers
// (per-key ordering comes with strands), or that a subscription made after
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
  enum State : int { kRunning, kDraining, kCancelling, kStopped };

  // How a worker accounts for the handler calls of one event: counts per
  // function and, when latency is recorded, the run time of each call.
  struct WorkerCounts {
    EventBus& bus;
    detail::WorkerShard& shard;
    std::int64_t last_ticks;  // when the previous call (or dequeue) ended
    std::uint64_t weight;     // events a timed one stands for; 0: untimed

    void on_delivered(const detail::HandlerEntry& entry) noexcept {
      finish(entry, &detail::FunctionSeries::delivered);
    }
    void on_failed(const detail::HandlerEntry& entry) noexcept {
      finish(entry, &detail::FunctionSeries::failed);
    }
    // Starts the next run time now: after work that is no handler's (an
    // error sink, a trace hook). Cold paths only.
    void restart() noexcept {
      if (weight != 0) last_ticks = bus.now_ticks();
    }
    void finish(
        const detail::HandlerEntry& entry,
        std::atomic<std::uint64_t> detail::FunctionSeries::*counter) noexcept {
      detail::FunctionSeries& series =
          bus.metrics_.function_series(shard, entry.function_id);
      detail::bump(series.*counter);
      if (weight != 0 && series.run_time) {
        const std::int64_t now = bus.now_ticks();
        series.run_time->record(bus.elapsed_ns(last_ticks, now), weight);
        last_ticks = now;
      }
    }
  };
  // trigger() counts only failures (a cold path), so that its success
  // path writes no memory shared with other threads.
  struct TriggerCounts {
    EventBus& bus;
    void on_delivered(const detail::HandlerEntry&) noexcept {}
    void on_failed(const detail::HandlerEntry& entry) noexcept {
      bus.count_trigger_failure(entry);
    }
    void restart() noexcept {}
  };
  void count_trigger_failure(const detail::HandlerEntry& entry) noexcept;
  // The shard where trigger() failures are counted, under trigger_mutex_.
  [[nodiscard]] detail::WorkerShard& trigger_shard() noexcept {
    return metrics_.shard(max_workers_ + 1);
  }

  explicit EventBus(BusConfig config);

  template <Event E, typename F>
  static detail::ErasedHandler erase_handler(F&& handler);

  // Runs the handlers of one event; false if it had none.
  template <typename Counts>
  bool dispatch(detail::ThreadRecord& record, detail::TypeSlot slot,
                std::string_view type_name, const void* event,
                const EventTrace& trace, Counts& counts) noexcept;
  static void call_handler_hook(const std::function<void(const Context&)>& hook,
                                const Context& context) noexcept;
  template <bool kHooks, typename Counts>
  void run_handler(detail::HandlerEntry& entry, const void* event,
                   Context& context, absl::Status& failure,
                   Counts& counts) noexcept;
  // After this thread's call of `entry` is over and announced so: a
  // handler that cancelled itself is destroyed by the last call to end.
  void finish_call(detail::HandlerEntry& entry) noexcept {
    // Observe: after our retraction (begin_handler()/end_handler() and
    // their light barrier); pairs with the canceller's store and heavy
    // barrier (see HandlerRegistry::after_cancelled_call()).
    if (entry.cancelled.load(detail::kObserveOrder) == detail::kCancelledInside)
        [[unlikely]] {
      registry_->after_cancelled_call(entry);
    }
  }
  template <bool kHooks, typename Counts>
  void run_handlers(detail::DispatchScope& scope,
                    const detail::HandlerList& list, const void* event,
                    Context& context, Counts& counts) noexcept;

  // Where latency timestamps come from (see detail/tick_clock.hpp).
  enum class TickSource { kTsc, kSteady, kCustom };
  // A latency timestamp: TSC ticks, or nanoseconds of the bus clock.
  [[nodiscard]] static TickSource choose_tick_source(
      const Clock& clock, bool record_latency) noexcept;
  [[nodiscard]] std::int64_t now_ticks() const noexcept {
    if (tick_source_ == TickSource::kTsc) [[likely]]
      return detail::read_tsc();
    if (tick_source_ == TickSource::kSteady) {
      return std::chrono::duration_cast<std::chrono::nanoseconds>(
                 std::chrono::steady_clock::now().time_since_epoch())
          .count();
    }
    return clock_->now().time_since_epoch().count();
  }
  [[nodiscard]] std::uint64_t elapsed_ns(std::int64_t from,
                                         std::int64_t to) const noexcept {
    if (to <= from) return 0;
    if (tick_source_ != TickSource::kTsc) {
      return static_cast<std::uint64_t>(to - from);
    }
    return static_cast<std::uint64_t>(static_cast<double>(to - from) *
                                      nanos_per_tick_);
  }
  [[nodiscard]] detail::TraceOrigin trace_origin(
      const detail::ThreadRecord& record, const TraceContext* context) const {
    return detail::trace_origin(record, context, [this] {
      return ambient_hook_ ? ambient_trace() : TraceContext{};
    });
  }
  // Calls TraceHooks::ambient.
  [[nodiscard]] TraceContext ambient_trace() const noexcept;
  [[nodiscard]] detail::EnvelopeMeta make_meta(
      detail::ThreadRecord& record, const PublishOptions& options) const {
    detail::EnvelopeMeta meta;  // a root event, not timed
    if (options.trace || record.innermost != nullptr || ambient_hook_) {
      const detail::TraceOrigin origin =
          trace_origin(record, options.trace ? &*options.trace : nullptr);
      meta.context = origin.context;
      meta.has_context = origin.has;
    }
    if (metrics_.timed() && take_latency_sample(record)) {
      meta.timed = true;
      meta.accepted_ticks = now_ticks();
    }
    return meta;
  }
  // One publish in latency_sample_every_ (per thread, per bus) is timed.
  [[nodiscard]] bool take_latency_sample(
      const detail::ThreadRecord& record) const noexcept {
    return sample_countdowns_.take(record);
  }

  [[nodiscard]] bool accepting(const detail::ThreadRecord& record) noexcept;
  // What becomes of the next event a worker or sweep takes.
  enum class Fate { kDispatch, kCancelledAtShutdown, kDrainTimeout };
  [[nodiscard]] Fate fate() noexcept;
  // Whether shutdown(kDrain) has passed BusConfig::drain_timeout.
  [[nodiscard]] bool drain_expired() noexcept;
  // `inline_lock`: Execution::kInline's, from lock_for_inline().
  void on_accepted(
      detail::TypeInfo& type,
      std::unique_lock<std::mutex>* inline_lock = nullptr) noexcept;
  template <bool kGiveBack, Event E>
  absl::Status publish_event(E& event, const PublishOptions& options);
  absl::Status publish_slow(
      detail::ThreadRecord& record, const PublishOptions& options,
      detail::TypeInfo& type, absl::FunctionRef<bool()> try_push,
      absl::FunctionRef<bool(detail::FollowUpBuffer&)> try_keep);
  // A handler on one of our workers publishing to a full queue: keeps the
  // event in that worker's FollowUpBuffer (see follow_up_headroom).
  absl::Status keep_follow_up(
      detail::ThreadRecord& record, detail::TypeInfo& type,
      absl::FunctionRef<bool(detail::FollowUpBuffer&)> try_keep);
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
              Fate fate) noexcept;
  // The shard of the thread running run_one() & co. or shutdown's sweeps.
  [[nodiscard]] detail::WorkerShard& caller_shard() noexcept {
    return metrics_.shard(max_workers_);
  }
  void sweep() noexcept;
  void wake_blocked_publishers() noexcept;
  void notify_blocked_publishers() noexcept;

  void report_failure(const detail::HandlerEntry& entry, const void* event,
                      const Context& context, absl::StatusCode code,
                      std::string_view message) noexcept;
  void report_unhandled(const EventRef& event) noexcept;
  void report_dead_letter(const detail::Envelope& envelope,
                          DeadLetterReason reason,
                          const EventTrace& trace) noexcept;

  const BusConfig config_;
  Clock* const clock_;  // BusConfig::clock or SteadyClock::instance()
  const TickSource tick_source_;
  const double nanos_per_tick_;  // for TickSource::kTsc
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
  MpmcQueue<detail::Envelope> queue_;
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

  // Lifecycle. Written by shutdown() (announce + heavy barrier), read by
  // publish() after its PublishScope announcement and by workers.
  std::atomic<int> state_{kRunning};
  std::mutex shutdown_mutex_;  // serialises shutdown() calls
  std::mutex trigger_mutex_;   // serialises writers of trigger_shard()
  // The sinks now (BusConfig's, or set_*_sink()'s). Loaded (acquire) by
  // every sink call, stored (release) by the setters: a call sees a
  // fully built sink; a replaced one lives until its last call returns.
  std::atomic<std::shared_ptr<const ErrorSink>> error_sink_;
  std::atomic<std::shared_ptr<const DeadLetterSink>> dead_letter_sink_;
  std::atomic<std::shared_ptr<const UnhandledSink>> unhandled_sink_;
  // Set by shutdown() before the state leaves kRunning; read by fate().
  std::atomic<bool> cancel_at_stop_{false};  // shutdown(kCancelPending)
  // shutdown(kDrain)'s deadline on the bus clock, in its nanoseconds.
  std::atomic<TimePoint::rep> drain_deadline_{
      TimePoint::max().time_since_epoch().count()};
  // Set (once) by the first thread that finds the drain deadline passed.
  std::atomic<bool> drain_expired_{false};
  // The thread inside shutdown(), so that a sink it calls cannot re-enter.
  std::atomic<std::thread::id> shutdown_thread_{};

  // Publishers waiting under kBlock. RMW by them; read (relaxed) by
  // consumers after each pop as a hint to notify blocked_cv_.
  alignas(detail::kCacheLineSize) std::atomic<std::int32_t> blocked_{0};
  std::mutex blocked_mutex_;
  std::condition_variable blocked_cv_;
};

// ---------------------------------------------------------------------------

namespace detail {
// Calls `fn` and maps its result (void or absl::Status) to ErasedHandler's.
template <typename Fn, typename... Args>
bool call_handler(Fn& fn, absl::Status& failure, Args&... args) {
  if constexpr (std::is_void_v<std::invoke_result_t<Fn&, Args&...>>) {
    fn(args...);
    return true;
  } else {
    absl::Status status = fn(args...);
    if (status.ok()) [[likely]]
      return true;
    failure = std::move(status);
    return false;
  }
}
}  // namespace detail

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
  std::string name =
      options.name.empty() ? std::string("<unnamed>") : std::move(options.name);
  const detail::TypeSlot slot = detail::type_slot<E>();
  const std::uint32_t function_id =
      metrics_.function_id(slot, event_type_name<E>(), name);
  detail::HandlerEntry* entry = registry_->add(
      slot, std::move(name), function_id,
      erase_handler<E>(std::forward<F>(handler)), std::move(options.on_error));
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
  try {
    if (entry.fn(event, context, failure)) [[likely]] {
      counts.on_delivered(entry);
    } else {
      counts.on_failed(entry);
      report_failure(
          entry, event, context, failure.code(),
          std::string_view(failure.message().data(), failure.message().size()));
      failure = absl::OkStatus();
      counts.restart();
    }
  } catch (const std::exception& error) {
    counts.on_failed(entry);
    report_failure(entry, event, context, absl::StatusCode::kUnknown,
                   error.what());
    counts.restart();
  } catch (...) {
    counts.on_failed(entry);
    report_failure(entry, event, context, absl::StatusCode::kUnknown,
                   "unknown exception (not derived from std::exception)");
    counts.restart();
  }
  if constexpr (kHooks)
    call_handler_hook(config_.trace.on_handler_end, context);
}

template <typename Counts>
bool EventBus::dispatch(detail::ThreadRecord& record, detail::TypeSlot slot,
                        std::string_view type_name, const void* event,
                        const EventTrace& trace, Counts& counts) noexcept {
  detail::DispatchScope scope(record, this, trace);
  const detail::HandlerList* list = registry_->find(slot, scope);
  if (list == nullptr || list->entries.empty()) [[unlikely]] {
    // Inside the scope: the sink runs under the rules of a handler (its
    // publishes inherit the trace, never block on this bus's queue, and
    // are accepted while the bus drains).
    report_unhandled(EventRef(slot, type_name, event));
    return false;
  }
  Context context(type_name, {}, trace);
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

template <Event E>
void EventBus::trigger(const E& event) noexcept {
  TriggerCounts counts{*this};
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
absl::Status EventBus::publish_event(E& event, const PublishOptions& options) {
  const detail::TypeSlot slot = detail::type_slot<E>();
  detail::TypeInfo& type = metrics_.type_info(slot, event_type_name<E>());
  if (options.overflow || options.block_timeout) [[unlikely]] {
    if (absl::Status status = validate(options); !status.ok()) {
      return reject(type, std::move(status));
    }
  }
  detail::ThreadRecord& record = detail::this_thread_record();
  // Before the PublishScope: TraceHooks::ambient may publish or shut down.
  const detail::EnvelopeMeta meta = make_meta(record, options);
  detail::PublishScope publishing(record, this);
  if (!accepting(record)) [[unlikely]] {
    return reject_closed(type);
  }
  std::unique_lock<std::mutex> inline_lock;  // Execution::kInline only
  if (inline_) [[unlikely]]
    inline_lock = lock_for_inline();
  if constexpr (detail::kStoredInline<E>) {
    // Each moves `event` only if it keeps it: a refusal leaves it as it was.
    auto try_push = [&]() noexcept {
      return queue_.try_emplace(detail::InPlace<E>{}, std::move(event), slot,
                                meta);
    };
    auto try_keep = [&](detail::FollowUpBuffer& buffer) noexcept {
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
    auto try_push = [&]() noexcept {
      if (!queue_.try_emplace(detail::Adopt<E>{owned.get()}, slot, meta)) {
        return false;
      }
      (void)owned.release();  // the queue owns it now
      return true;
    };
    auto try_keep = [&](detail::FollowUpBuffer& buffer) noexcept {
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
