#pragma once

// What each thread is doing inside fnbus, published cheaply enough for the
// dispatch hot path and read by the rare writers that must wait for it.
//
// Protocol (an asymmetric Dekker handshake, as in RCU and folly's hazptr):
// every thread that dispatches or publishes owns one ThreadRecord. Before it
// reads shared state that a writer may retract, it *announces* what it is
// about to use with a plain store into its record, then executes a light
// barrier, then reads. A writer first retracts (unpublishes a handler list,
// sets a cancelled flag, closes the bus), then executes a heavy barrier, then
// scans every record. The heavy barrier is membarrier(PRIVATE_EXPEDITED),
// which runs a full fence on every CPU running one of our threads, so the
// light barrier only has to stop the compiler: for any reader R and writer W,
// either W's scan sees R's announcement, or R's read sees W's retraction.
// Where membarrier is unavailable both sides use a seq_cst fence instead;
// under ThreadSanitizer (which does not model fences) both sides use seq_cst
// operations, which give the same guarantee in the C++ memory model.
//
// Records are process-wide, one per live thread that ever used a bus, and are
// recycled when a thread exits. The registry is leaked on purpose so that
// threads exiting after main() returns can still release their records.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fnbus/detail/config.hpp"
#include "fnbus/event.hpp"

namespace fnbus::detail {

// Most dispatches that may be running nested on one thread (a trigger inside
// a handler inside a trigger ...). Deeper nesting is a precondition failure:
// it is almost certainly unbounded recursion, and the stack is near its end.
inline constexpr std::size_t kMaxNesting = 256;

// Reader-side orders: relaxed plus a light barrier normally; seq_cst under
// TSan (see the protocol above).
inline constexpr std::memory_order kAnnounceOrder =
    kThreadSanitizer ? std::memory_order_seq_cst : std::memory_order_relaxed;
inline constexpr std::memory_order kObserveOrder =
    kThreadSanitizer ? std::memory_order_seq_cst : std::memory_order_acquire;
inline constexpr std::memory_order kRetractOrder =
    kThreadSanitizer ? std::memory_order_seq_cst : std::memory_order_release;
// An announcement that also retracts the previous one.
inline constexpr std::memory_order kHandoverOrder = kRetractOrder;

class DispatchScope;

struct alignas(kCacheLineSize) ThreadRecord {
  // Odd while this thread is inside a dispatch and may hold a handler list;
  // bumped at the outermost entry and exit. Written by the owner, read by
  // writers deciding whether a retired list may be freed.
  std::atomic<std::uint64_t> dispatch_gen{0};
  // running[i]: the handler running (or about to) at dispatch nesting level
  // i, or null. Written by the owner, read by cancel() waiting for that
  // handler to finish.
  std::atomic<const void*> running[kMaxNesting] = {};
  // The bus this thread is inside publish() of, or null. Written by the
  // owner, read by shutdown() waiting for publishes in progress.
  std::atomic<const void*> publishing_to{nullptr};
  // The handler this thread waits for in cancel(), or null. Written by the
  // owner, read by other cancellers to detect two waiting for each other.
  std::atomic<const void*> waiting_for{nullptr};
  // Claimed by a live thread. CAS by threads registering, cleared at exit.
  std::atomic<bool> in_use{false};
  // Next record in the registry; immutable once the record is published.
  ThreadRecord* next = nullptr;

  // Owner-only state (never read by other threads).
  std::uint32_t depth = 0;  // dispatches running (nested) on this thread
  const DispatchScope* innermost = nullptr;  // chain of nested dispatches
  std::uint64_t id_state = 0;      // event-id generator (next_event_id)
  std::uint32_t untimed_left = 0;  // publishes until the next timed one

  // Whether this thread is inside a dispatch of `bus` at any nesting level.
  [[nodiscard]] bool dispatching_for(const void* bus) const noexcept;
};

inline constinit thread_local ThreadRecord* tls_thread_record = nullptr;

// Claims a record for the calling thread (once per thread).
ThreadRecord& register_this_thread();

[[nodiscard]] inline ThreadRecord& this_thread_record() {
  ThreadRecord* record = tls_thread_record;
  if (record == nullptr) [[unlikely]]
    return register_this_thread();
  return *record;
}

// True when membarrier is not available and readers must fence.
extern std::atomic<bool> g_readers_fence;

// Reader half of the asymmetric barrier.
inline void light_barrier() noexcept {
  if constexpr (!kThreadSanitizer) {
    // relaxed: set once before any record exists (see register_this_thread).
    if (g_readers_fence.load(std::memory_order_relaxed)) [[unlikely]] {
      std::atomic_thread_fence(std::memory_order_seq_cst);
    } else {
      std::atomic_signal_fence(std::memory_order_seq_cst);
    }
  }
}

// Writer half: after it returns, every announcement made before any
// reader's light barrier that preceded this call is visible to the caller.
void heavy_barrier() noexcept;

// Marks the calling thread as inside a dispatch for the scope's lifetime,
// and which of the dispatch's handlers it runs. Dispatches nest (a handler
// may trigger), each on its own level of ThreadRecord::running.
class DispatchScope {
 public:
  DispatchScope(ThreadRecord& record, const void* bus,
                const EventTrace& trace) noexcept
      : record_(record),
        bus_(bus),
        trace_(trace),
        outer_(record.innermost),
        level_(record.depth++) {
    FNBUS_ASSERT(level_ < kMaxNesting,
                 "dispatches nested more than 256 deep on one thread (a "
                 "handler that triggers its own event without end?)");
    record.innermost = this;
    if (level_ == 0) {
      // relaxed: the owner is the only writer of its own record.
      const auto gen = record.dispatch_gen.load(std::memory_order_relaxed);
      // Announce (see protocol): pairs with heavy_barrier() in
      // GraceSnapshot::take(). Release as well, so that a writer reading
      // this value instead of the exit store before it still synchronises
      // with that exit (plain stores do not extend a release sequence).
      record.dispatch_gen.store(gen + 1, kHandoverOrder);
      light_barrier();
    }
  }
  ~DispatchScope() {
    // release: the last handler's effects happen before cancel() returns
    // (acquire load in wait_until_not_running()).
    record_.running[level_].store(nullptr, kRetractOrder);
    record_.innermost = outer_;
    if (--record_.depth == 0) {
      // relaxed: owner-only writer.
      const auto gen = record_.dispatch_gen.load(std::memory_order_relaxed);
      // release: our reads of the handler list happen before a writer that
      // sees the even value frees it (acquire in GraceSnapshot::elapsed()).
      record_.dispatch_gen.store(gen + 1, kRetractOrder);
    }
  }
  DispatchScope(const DispatchScope&) = delete;
  DispatchScope& operator=(const DispatchScope&) = delete;

  // Marks `handler` as the one running at this level (which also says the
  // previous one has finished), then tells whether it may run: false if
  // `cancelled` was set before the announcement could be seen.
  [[nodiscard]] bool begin_handler(
      const void* handler, const std::atomic<bool>& cancelled) noexcept {
    // Announce: pairs with heavy_barrier() in wait_until_not_running().
    // Release as well: the previous handler's effects happen before a
    // canceller that sees this store stops waiting for it.
    record_.running[level_].store(handler, kHandoverOrder);
    light_barrier();
    // Observe: pairs with the store in HandlerRegistry::remove().
    return !cancelled.load(kObserveOrder);
  }

  [[nodiscard]] const void* bus() const noexcept { return bus_; }
  // The event being dispatched: events published from its handlers
  // inherit its trace.
  [[nodiscard]] const EventTrace& trace() const noexcept { return trace_; }
  [[nodiscard]] const DispatchScope* outer() const noexcept { return outer_; }

 private:
  ThreadRecord& record_;
  const void* bus_;
  const EventTrace& trace_;
  const DispatchScope* outer_;
  std::size_t level_;
};

inline bool ThreadRecord::dispatching_for(const void* bus) const noexcept {
  for (const DispatchScope* scope = innermost; scope != nullptr;
       scope = scope->outer()) {
    if (scope->bus() == bus) return true;
  }
  return false;
}

// A new event id for the calling thread: the next element of a per-thread
// Weyl sequence (an odd step modulo 2^64) from a random start. It repeats
// only after 2^64 ids within a thread, and two threads' ids collide with
// the probability of random 64-bit ids -- for the price of one add.
[[nodiscard]] inline std::uint64_t next_event_id(
    ThreadRecord& record) noexcept {
  const std::uint64_t id = (record.id_state += 0x9e3779b97f4a7c15);
  return id == 0 ? 1 : id;  // 0 means "none"
}

// Where an event that starts now on this thread comes from: an explicit
// context, else the innermost dispatch's event (inherited), else
// `ambient()` (called only when there is no dispatch; it returns {} for
// none). `has` tells whether there is any: without one the event starts a
// new correlation.
struct TraceOrigin {
  TraceContext context;
  bool has = false;
};
template <typename Ambient>
[[nodiscard]] TraceOrigin trace_origin(const ThreadRecord& record,
                                       const TraceContext* explicit_context,
                                       Ambient&& ambient) {
  if (explicit_context != nullptr) return {*explicit_context, true};
  if (record.innermost != nullptr) {
    const EventTrace& cause = record.innermost->trace();
    return {{cause.context.correlation_id, cause.event_id}, true};
  }
  const TraceContext context = ambient();
  return {context, context != TraceContext{}};
}

// The trace of an event dispatched now on this thread, from its context
// ({} for a new correlation, whose id is then the event's own).
[[nodiscard]] inline EventTrace event_trace(ThreadRecord& record,
                                            TraceContext context) noexcept {
  EventTrace trace{context, next_event_id(record)};
  if (trace.context.correlation_id == 0) {
    trace.context.correlation_id = trace.event_id;
  }
  return trace;
}

// Marks the calling thread as inside publish() on `bus`.
class PublishScope {
 public:
  PublishScope(ThreadRecord& record, const void* bus) noexcept
      : record_(record),
        // relaxed: owner-only writer.
        previous_(record.publishing_to.load(std::memory_order_relaxed)) {
    // Announce: pairs with heavy_barrier() in wait_for_publishers().
    record.publishing_to.store(bus, kAnnounceOrder);
    light_barrier();
  }
  ~PublishScope() {
    // release: our push happens before shutdown's final sweep
    // (acquire load in wait_for_publishers()).
    record_.publishing_to.store(previous_, kRetractOrder);
  }
  PublishScope(const PublishScope&) = delete;
  PublishScope& operator=(const PublishScope&) = delete;

 private:
  ThreadRecord& record_;
  const void* previous_;
};

// Writer side. Each runs a heavy barrier first.

// Returns when no thread other than the caller runs `handler`. Fails a
// precondition check (instead of deadlocking) when that thread is itself
// waiting for a handler the caller is running: two handlers cancelling
// each other's subscriptions.
void wait_until_not_running(const void* handler) noexcept;
// True if the calling thread is running `handler` (at any nesting level).
[[nodiscard]] bool running_on_this_thread(const void* handler) noexcept;
// Returns when no thread other than the caller is inside publish() on `bus`.
void wait_for_publishers(const void* bus) noexcept;

// Which threads were inside a dispatch at a moment, so that memory they may
// have been reading can be freed once each has left that dispatch.
class GraceSnapshot {
 public:
  static GraceSnapshot take();
  [[nodiscard]] bool elapsed() const noexcept;

 private:
  struct Entry {
    const ThreadRecord* record;
    std::uint64_t gen;
  };
  std::vector<Entry> in_dispatch_;
};

}  // namespace fnbus::detail
