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

#include "fnbus/detail/config.hpp"
#include "fnbus/detail/envelope.hpp"
#include "fnbus/detail/handler_registry.hpp"
#include "fnbus/detail/thread_activity.hpp"
#include "fnbus/detail/type_slot.hpp"
#include "fnbus/event.hpp"
#include "fnbus/exec/thread_pool.hpp"
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
//   bus's pool runs E's handlers. Events of up to 48 bytes with a noexcept
//   move constructor are stored in the queue slot: no allocation.
//
// Guarantees:
// - Every accepted event (publish returned OK) is dispatched to the
//   subscriptions that exist when a worker takes it, or is handed to the
//   dead-letter sink; after shutdown() returns none is pending or running.
// - publish never blocks longer than the block timeout and never drops an
//   event silently: a refusal is a non-OK Status and counts as rejected.
//   A handler publishing to its own bus does not block on a full queue
//   (it could be waiting for itself): it gets ResourceExhausted at once.
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

  // Runs E's handlers on `event` in the calling thread and returns when
  // they have. Unhandled events go to the unhandled sink; a throwing
  // handler goes to the error sink. Counts nothing in stats(), so that it
  // writes no memory shared with other threads.
  // Thread safety: any thread, also inside handlers. Never allocates,
  // never takes a lock -- except the first time a thread uses fnbus (it
  // claims a per-thread record) and the first time a type is used (its id
  // is assigned).
  template <Event E>
  void trigger(const E& event) noexcept;

  // Queues `event` for the pool.
  // Returns OK when accepted; ResourceExhausted when the queue is full under
  // kReject; DeadlineExceeded when it stayed full for the block timeout
  // under kBlock; FailedPrecondition after shutdown() began (except, while
  // draining, for publishes from this bus's own handlers); InvalidArgument
  // for bad options. On any error the event is not kept.
  // Thread safety: any thread, also inside handlers.
  // Memory ordering: actions before publish(e) are visible to every handler
  // that receives e.
  template <Event E>
  absl::Status publish(E event, PublishOptions options = {});

  // Stops accepting events, then either handles (kDrain) or dead-letters
  // (kCancelPending) everything still queued, waits for running handlers
  // and joins the workers. Idempotent: later calls return OK at once.
  // Returns FailedPrecondition if called from inside one of this bus's
  // handlers, since the bus would wait for itself.
  // Thread safety: any thread that is not running this bus's handlers.
  absl::Status shutdown(ShutdownMode mode = ShutdownMode::kDrain);

  // Counters of published events (see BusStats). Thread safety: any thread.
  [[nodiscard]] BusStats stats() const noexcept;
  [[nodiscard]] ThreadPoolStats pool_stats() const noexcept;
  [[nodiscard]] const BusConfig& config() const noexcept { return config_; }

 private:
  enum State : int { kRunning, kDraining, kCancelling, kStopped };

  // Per-worker counters: each has one writer, which increments with a
  // plain load and store; stats() sums them.
  struct alignas(detail::kCacheLineSize) CounterCell {
    std::atomic<std::uint64_t> dispatched{0};
    std::atomic<std::uint64_t> delivered{0};
    std::atomic<std::uint64_t> failed{0};
    std::atomic<std::uint64_t> unhandled{0};
    std::atomic<std::uint64_t> dead_lettered{0};

    static void bump(std::atomic<std::uint64_t>& counter) noexcept {
      // relaxed: single writer; readers want a recent value, no ordering.
      counter.store(counter.load(std::memory_order_relaxed) + 1,
                    std::memory_order_relaxed);
    }
    void on_delivered() noexcept { bump(delivered); }
    void on_failed() noexcept { bump(failed); }
  };
  // trigger() counts nothing.
  struct NoCounts {
    void on_delivered() noexcept {}
    void on_failed() noexcept {}
  };

  explicit EventBus(BusConfig config);

  template <Event E, typename F>
  static detail::ErasedHandler erase_handler(F&& handler);

  // Runs the handlers of one event; false if it had none.
  template <typename Counts>
  bool dispatch(detail::ThreadRecord& record, detail::TypeSlot slot,
                std::string_view type_name, const void* event,
                Counts& counts) noexcept;
  template <typename Counts>
  void run_handler(detail::HandlerEntry& entry, const void* event,
                   Context& context, absl::Status& failure,
                   Counts& counts) noexcept;

  [[nodiscard]] bool accepting(
      const detail::ThreadRecord& record) const noexcept;
  void on_accepted() noexcept;
  absl::Status publish_slow(detail::ThreadRecord& record,
                            const PublishOptions& options,
                            std::string_view type_name,
                            absl::FunctionRef<bool()> try_push);
  absl::Status publish_blocking(detail::ThreadRecord& record,
                                std::chrono::nanoseconds timeout,
                                std::string_view type_name,
                                absl::FunctionRef<bool()> try_push);
  absl::Status reject(absl::Status status) noexcept;
  absl::Status reject_closed(std::string_view type_name) noexcept;
  static absl::Status validate(const PublishOptions& options);
  absl::Status heap_alloc_failed(std::string_view type_name) noexcept;

  // WorkSource
  [[nodiscard]] bool has_work() const noexcept override;
  [[nodiscard]] bool poll_work() const noexcept override;
  bool run_one(std::size_t worker,
               absl::FunctionRef<void()> taken) noexcept override;

  void handle(detail::Envelope& envelope, CounterCell& cell,
              bool cancel) noexcept;
  void sweep(bool cancel) noexcept;
  void wake_blocked_publishers() noexcept;
  void notify_blocked_publishers() noexcept;

  void report_failure(const detail::HandlerEntry& entry,
                      std::string_view type_name, absl::StatusCode code,
                      std::string_view message) noexcept;
  void report_unhandled(const EventRef& event) noexcept;
  void report_dead_letter(const detail::Envelope& envelope,
                          DeadLetterReason reason) noexcept;

  const BusConfig config_;
  const std::shared_ptr<detail::HandlerRegistry> registry_;
  MpmcQueue<detail::Envelope> queue_;
  std::unique_ptr<CounterCell[]> cells_;  // one per worker + one for sweeps
  std::unique_ptr<ThreadPool> pool_;

  // Lifecycle. Written by shutdown() (announce + heavy barrier), read by
  // publish() after its PublishScope announcement and by workers.
  std::atomic<int> state_{kRunning};
  std::mutex shutdown_mutex_;  // serialises shutdown() calls
  // The thread inside shutdown(), so that a sink it calls cannot re-enter.
  std::atomic<std::thread::id> shutdown_thread_{};

  // Accepted events. RMW by publishers (relaxed: a statistic).
  alignas(detail::kCacheLineSize) std::atomic<std::uint64_t> published_{0};
  // Refused publishes. RMW by publishers (relaxed: a statistic).
  std::atomic<std::uint64_t> rejected_{0};
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
  detail::HandlerEntry* entry =
      registry_->add(detail::type_slot<E>(), std::move(name),
                     erase_handler<E>(std::forward<F>(handler)));
  return Subscription(registry_, entry);
}

template <typename Counts>
void EventBus::run_handler(detail::HandlerEntry& entry, const void* event,
                           Context& context, absl::Status& failure,
                           Counts& counts) noexcept {
  try {
    if (entry.fn(event, context, failure)) [[likely]] {
      counts.on_delivered();
    } else {
      counts.on_failed();
      report_failure(
          entry, context.event_type(), failure.code(),
          std::string_view(failure.message().data(), failure.message().size()));
      failure = absl::OkStatus();
    }
  } catch (const std::exception& error) {
    counts.on_failed();
    report_failure(entry, context.event_type(), absl::StatusCode::kUnknown,
                   error.what());
  } catch (...) {
    counts.on_failed();
    report_failure(entry, context.event_type(), absl::StatusCode::kUnknown,
                   "unknown exception (not derived from std::exception)");
  }
}

template <typename Counts>
bool EventBus::dispatch(detail::ThreadRecord& record, detail::TypeSlot slot,
                        std::string_view type_name, const void* event,
                        Counts& counts) noexcept {
  detail::DispatchScope scope(record, this);
  const detail::HandlerList* list = registry_->find(slot);
  if (list == nullptr || list->entries.empty()) return false;
  Context context(type_name, {});
  absl::Status failure;  // one per dispatch: set only when a handler fails
  for (detail::HandlerEntry* entry : list->entries) {
    if (!scope.begin_handler(entry, entry->cancelled)) continue;
    detail::ContextAccess::set_function(context, entry->name);
    run_handler(*entry, event, context, failure, counts);
  }
  return true;
}

template <Event E>
void EventBus::trigger(const E& event) noexcept {
  NoCounts none;
  const detail::TypeSlot slot = detail::type_slot<E>();
  if (!dispatch(detail::this_thread_record(), slot, event_type_name<E>(),
                &event, none)) [[unlikely]] {
    report_unhandled(EventRef(slot, event_type_name<E>(), &event));
  }
}

template <Event E>
absl::Status EventBus::publish(E event, PublishOptions options) {
  static_assert(std::is_move_constructible_v<E>,
                "published events are moved into the queue");
  if (options.overflow || options.block_timeout) [[unlikely]] {
    if (absl::Status status = validate(options); !status.ok()) {
      return reject(std::move(status));
    }
  }
  detail::ThreadRecord& record = detail::this_thread_record();
  detail::PublishScope publishing(record, this);
  if (!accepting(record)) [[unlikely]] {
    return reject_closed(event_type_name<E>());
  }
  const detail::TypeSlot slot = detail::type_slot<E>();
  if constexpr (detail::kStoredInline<E>) {
    auto try_push = [&]() noexcept {
      return queue_.try_emplace(detail::InPlace<E>{}, std::move(event), slot);
    };
    if (try_push()) [[likely]] {
      on_accepted();
      return absl::OkStatus();
    }
    return publish_slow(record, options, event_type_name<E>(), try_push);
  } else {
    std::unique_ptr<E> owned(new (std::nothrow) E(std::move(event)));
    if (owned == nullptr) return heap_alloc_failed(event_type_name<E>());
    auto try_push = [&]() noexcept {
      if (!queue_.try_emplace(detail::Adopt<E>{owned.get()}, slot)) {
        return false;
      }
      (void)owned.release();  // the queue owns it now
      return true;
    };
    if (try_push()) [[likely]] {
      on_accepted();
      return absl::OkStatus();
    }
    return publish_slow(record, options, event_type_name<E>(), try_push);
  }
}

}  // namespace fnbus
