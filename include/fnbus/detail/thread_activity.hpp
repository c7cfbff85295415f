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
// Handler lists are protected by hazard pointers announced this way (one
// per nesting level, DispatchScope::protect()): a retired list waits only
// for the dispatches that read that very list, so neither a long handler
// of another bus nor one of the same bus holds back the freeing of lists
// it does not read.
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
  // reading[i]: the shared object (a handler list) the dispatch at nesting
  // level i reads, or null -- a hazard pointer. Written by the owner (see
  // DispatchScope::protect), read by writers deciding whether a retired
  // list may be freed.
  std::atomic<const void*> reading[kMaxNesting] = {};
  // running[i]: the handler running (or about to) at dispatch nesting level
  // i, or null. Written by the owner, read by cancel() waiting for that
  // handler to finish.
  std::atomic<const void*> running[kMaxNesting] = {};
  // Nesting levels this thread has ever used (<= kMaxNesting): scanners
  // read reading[] and running[] below it only. Only grows. Written by the
  // owner before it announces anything at a new level, read by scanners.
  std::atomic<std::uint32_t> levels_used{0};
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
  // Dense number of this record (0, 1, 2, ... in creation order), for
  // per-thread tables of other objects; immutable once published.
  std::uint32_t index = 0;

  // Owner-only state (never read by other threads).
  std::uint32_t depth = 0;  // dispatches running (nested) on this thread
  const DispatchScope* innermost = nullptr;  // chain of nested dispatches
  std::uint64_t id_state = 0;                // event-id generator
  // Set by a bus's worker while it runs an event: publishes from its
  // handlers to that bus that find the queue full go to `follow_ups` (a
  // FollowUpBuffer of that worker) instead of blocking or failing.
  const void* follow_ups_bus = nullptr;
  void* follow_ups = nullptr;
  // Set by a bus's strand runner around a keyed event's handling: which
  // strand, and the nesting level that event's dispatch takes, so that a
  // retry its own handlers schedule holds the strand -- not one of a
  // trigger() nested in them. `bus` null: none.
  struct KeyedDispatch {
    const void* bus = nullptr;
    std::uint32_t strand = 0;
    std::uint32_t level = 0;
  } keyed;

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

// Marks the calling thread as inside a dispatch for the scope's lifetime:
// which shared list it reads (protect()) and which of the list's handlers
// it runs (begin_handler()). Dispatches nest (a handler may trigger), each
// on its own level of ThreadRecord::reading and ::running.
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
    // relaxed: the owner is the only writer of its own record.
    if (level_ >= record.levels_used.load(std::memory_order_relaxed))
        [[unlikely]] {
      // Announce: before this level's first announcement, so that a
      // scanner that sees that one scans this level (see protect()).
      record.levels_used.store(static_cast<std::uint32_t>(level_ + 1),
                               kAnnounceOrder);
    }
  }
  ~DispatchScope() {
    // running[level_] is null here: end_handler() retracted the last
    // handler, or none began (begin_handler() is always paired with it).
    // release: our reads of the protected list happen before a writer that
    // sees null frees it (acquire in HazardSet::take()).
    record_.reading[level_].store(nullptr, kRetractOrder);
    record_.innermost = outer_;
    --record_.depth;
  }
  DispatchScope(const DispatchScope&) = delete;
  DispatchScope& operator=(const DispatchScope&) = delete;

  // Loads `source` and protects what it points to for the rest of the
  // scope: a writer that replaces it afterwards and scans the hazards
  // (HazardSet::take()) sees it and keeps it. Loops until the announced
  // value is still current after the barrier (the classic hazard-pointer
  // validation), which is almost always the first time.
  template <typename T>
  [[nodiscard]] const T* protect(const std::atomic<const T*>& source) noexcept {
    // relaxed: validated below.
    const T* seen = source.load(std::memory_order_relaxed);
    for (;;) {
      // Announce: pairs with heavy_barrier() in HazardSet::take().
      record_.reading[level_].store(seen, kAnnounceOrder);
      light_barrier();
      // Observe: pairs with the writer's release exchange of `source`, so
      // the object's contents are visible; either the writer's scan sees
      // our announcement, or this load sees its replacement.
      const T* current = source.load(kObserveOrder);
      if (current == seen) [[likely]]
        return seen;
      seen = current;
    }
  }

  // Marks `handler` as the one running at this level (which also says the
  // previous one has finished), then tells whether it may run: false if
  // `cancelled` was set before the announcement could be seen.
  [[nodiscard]] bool begin_handler(
      const void* handler,
      const std::atomic<std::uint8_t>& cancelled) noexcept {
    // Announce: pairs with heavy_barrier() in wait_until_not_running().
    // Release as well: the previous handler's effects happen before a
    // canceller that sees this store stops waiting for it.
    record_.running[level_].store(handler, kHandoverOrder);
    light_barrier();
    // Observe: pairs with the store in HandlerRegistry::cancel().
    return cancelled.load(kObserveOrder) == 0;
  }
  // Marks that no handler runs at this level any more (the last one has
  // returned); every begin_handler() is followed by one before the scope
  // ends. Retract + light barrier, so that a
  // load after it and a scanner's heavy barrier form a Dekker pair (see
  // HandlerRegistry::after_cancelled_call()).
  void end_handler() noexcept {
    // release: as in begin_handler().
    record_.running[level_].store(nullptr, kHandoverOrder);
    light_barrier();
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
// True if any thread, the caller included, announces `handler` as running
// (or about to run) after a heavy barrier. Never waits.
[[nodiscard]] bool running_anywhere(const void* handler) noexcept;
// Returns when no thread other than the caller is inside publish() on `bus`.
void wait_for_publishers(const void* bus) noexcept;

// The objects protected by any thread's DispatchScope::protect() at a
// moment after the call began: an object retired (unpublished) before the
// call and not in the set is read by nobody and may be freed.
class HazardSet {
 public:
  // Runs the heavy barrier, then scans every record.
  static HazardSet take();
  [[nodiscard]] bool contains(const void* object) const noexcept;

 private:
  std::vector<const void*> sorted_;
};

}  // namespace fnbus::detail
