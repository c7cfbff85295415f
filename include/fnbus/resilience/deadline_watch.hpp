#pragma once

// The watchdog of per-invocation deadlines (FunctionOptions::deadline):
// requests the std::stop_token of each call still running past its
// deadline. It only signals; whether a call overran is decided exactly by
// the pipeline when the handler returns (resilience::Pipeline), so the
// watch's resolution bounds how late a token is requested, never what is
// counted.
//
//   DeadlineWatch watch;
//   {
//     DeadlineWatch::Invocation call = watch.begin(now + 100ms, 100ms);
//     handler(call.state().token);    // meanwhile, on a timer thread:
//   }                                 //   watch.check(clock.now());
//
// Slots: one per thread and dispatch nesting level (a handler that
// triggers an event whose handler has a deadline uses the next level),
// made the first time that thread uses that level and reused by every
// later call there. Each slot holds a std::stop_source, replaced only
// after it was requested. So a call allocates nothing, takes no lock and
// arms no timer: begin() and end() are plain stores and loads on the
// calling thread's own cache line. A thread finds its slot through a
// small per-thread cache (the last slot it used at each of the first
// nesting levels, with the watch's id), else through the watch's table.
//
// Protocol (an asymmetric Dekker handshake, as in detail/thread_activity.hpp):
// the owner arms its slot with a release store of the deadline and, at
// end(), stores kIdle, runs a light barrier (a compiler fence) and loads
// the slot's `checking` flag. check() first scans every slot with plain
// loads; for the slots past their deadline it sets `checking`, runs one
// heavy barrier (membarrier) and loads the deadline again; only if the
// slot is still armed and past due does it request stop on the slot's
// source. For any owner O and check C, either C's second load sees O's
// kIdle (and C does not touch the source), or O's load sees C's flag (and
// O waits until C is done with the source before it may replace it).
// C marks the slot `requested` inside that window, so the owner's next
// begin() sees the mark without looking at the stop_source's state.
//
// Guarantees:
// - check(now) requests the token of every call armed with a deadline
//   <= now that has not ended, and of no other call: never the token of a
//   call that ended, nor of the next call in the same slot.
// - A token is requested at most once; the next call in that slot gets a
//   fresh one.
// Not guaranteed: when check() runs (its driver decides; see
// DeadlineWatchdog), nor that a handler looks at its token.
//
// Thread safety: begin()/end() by any thread, each for its own slot (one
// call per thread and nesting level at a time); check() and watching() by
// any thread, concurrently with them (check() calls run one at a time).
// Lifetime: no call may be in progress when the watch is destroyed.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <stop_token>
#include <vector>

#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/detail/config.hpp"
#include "fnbus/detail/deadline_state.hpp"
#include "fnbus/detail/thread_activity.hpp"

namespace fnbus::timers {
class Scheduler;
}  // namespace fnbus::timers

namespace fnbus::resilience {

class DeadlineWatch {
  struct Slot;

 public:
  DeadlineWatch();
  ~DeadlineWatch();
  DeadlineWatch(const DeadlineWatch&) = delete;
  DeadlineWatch& operator=(const DeadlineWatch&) = delete;

  // One watched call, from begin() until end() or its destruction.
  class Invocation {
   public:
    Invocation(const Invocation&) = delete;
    Invocation& operator=(const Invocation&) = delete;
    ~Invocation() {
      if (slot_ != nullptr) end();
    }
    // The call's deadline, budget and token, for its Context; stays valid
    // (with timed_out and late for the bus to read) after end(), until the
    // next call in the same slot begins.
    [[nodiscard]] detail::DeadlineState& state() noexcept;  // below
    // Stops watching: check() no longer requests this call's token. Waits
    // while a check() is requesting it (running the token's callbacks).
    void end() noexcept;

   private:
    friend class DeadlineWatch;
    explicit Invocation(Slot* slot) noexcept : slot_(slot) {}
    // end()'s rare half: waits until check() is done with the slot.
    static void wait_for_check(Slot& slot) noexcept;
    Slot* slot_;
  };

  // Watches the calling thread's call at its current dispatch nesting
  // level until `deadline`. `budget` is only recorded (for messages).
  // Allocates only the first time this thread uses this level, and after
  // the slot's token was requested (a new stop_source); may then throw
  // bad_alloc.
  // Thread safety: any thread; one call per thread and level at a time (a
  // precondition).
  // Memory ordering: actions before begin() that set up the slot are
  // visible to check().
  [[nodiscard]] Invocation begin(TimePoint deadline, Duration budget);

  // Requests stop on the token of each call in progress whose deadline is
  // <= now and whose token was not requested yet. Returns how many it
  // requested. Runs the tokens' stop callbacks (a handler's
  // std::stop_callback, a condition_variable_any wait) on this thread.
  // Thread safety: any thread; calls run one at a time. Never called from
  // a stop callback of this watch.
  std::size_t check(TimePoint now);

  // Calls in progress (armed, requested or not). For tests and gauges.
  // Thread safety: any thread; a snapshot.
  [[nodiscard]] std::size_t watching() const;

 private:
  // Slot::armed values besides deadlines (nanoseconds since the clock's
  // epoch, clamped above these two).
  static constexpr std::int64_t kIdle =
      std::numeric_limits<std::int64_t>::min();
  static constexpr std::int64_t kRequested = kIdle + 1;

  struct alignas(detail::kCacheLineSize) Slot {
    // The running call's deadline; kIdle between calls; kRequested once
    // check() requested its token. Stored by the owner (begin(): release,
    // publishing `source` to check()'s acquire loads; end(): kIdle, see
    // the protocol); CAS'd by check() from a deadline to kRequested (only
    // while it holds `checking`, so never on a later call's deadline).
    std::atomic<std::int64_t> armed{kIdle};
    // True while check() may touch `source`. Stored by check() (true
    // before its heavy barrier; false with release after it is done,
    // pairing with the owner's acquire load in end()); loaded by the
    // owner in end().
    std::atomic<bool> checking{false};
    // Owner-only, except request_stop() by check() inside the handshake.
    std::stop_source source;
    // Whether check() requested `source`. Not atomic: written (true) only
    // by check() inside the handshake, after its acquire load of an armed
    // deadline and before its release store of `checking` false; read and
    // cleared by the owner in begin(), after the previous end() loaded
    // `checking` (acquire) and, if it was true, waited for false. So the
    // write happens before the read (directly, or through check_mutex_ and
    // a later check()'s release of `checking`), and the clear happens
    // before any later check()'s write (through the release store of
    // `armed` that check() must load first).
    bool requested = false;
    detail::DeadlineState state;  // owner-only
  };
  // The per-thread cache of slots (deadline_watch.cpp): the slot a thread
  // last used at nesting level `depth` (indexed depth % kCachedLevels) of
  // the watch with id `watch`, as thread `record`. Thread-local, so plain
  // fields; an entry of a destroyed watch is never matched (ids are not
  // reused), nor one of a thread record given up (the record is compared).
  struct CachedSlot {
    std::uint64_t watch = 0;  // DeadlineWatch::id_; 0: empty
    const void* record = nullptr;
    std::uint32_t depth = 0;
    Slot* slot = nullptr;
  };
  static constexpr std::uint32_t kCachedLevels = 4;
  // The calling thread's cache (defined in deadline_watch.cpp, its only
  // user).
  static thread_local CachedSlot tls_cached_slots_[kCachedLevels];
  // One thread's slots, by nesting level; see Threads.
  struct ThreadSlots;
  struct Threads;

  [[nodiscard]] Slot& slot_for_this_thread();
  // slot_for_this_thread() past the cache: the table (and the first use).
  [[nodiscard]] Slot& find_slot(std::uint32_t index, std::uint32_t depth);
  Slot& add_slot(ThreadSlots& slots, std::uint32_t level);
  [[nodiscard]] static std::int64_t encode(TimePoint deadline) noexcept;
  template <typename Fn>
  void for_each_slot(Fn&& fn) const;

  // Unique among the process's watches (never reused), for the cache.
  const std::uint64_t id_;
  const std::unique_ptr<Threads> threads_;
  std::mutex check_mutex_;  // serialises check() (the `checking` writers)
  std::vector<Slot*> candidates_;  // guarded by check_mutex_
};

inline detail::DeadlineState& DeadlineWatch::Invocation::state() noexcept {
  return slot_->state;
}

inline void DeadlineWatch::Invocation::end() noexcept {
  Slot& slot = *slot_;
  slot_ = nullptr;
  slot.state.running = false;
  // The owner's half of the handshake (see the class comment): announce,
  // light barrier, observe. kAnnounceOrder (relaxed, seq_cst under TSan):
  // the light barrier orders it before the load below, against check()'s
  // heavy barrier.
  slot.armed.store(kIdle, detail::kAnnounceOrder);
  detail::light_barrier();
  // kObserveOrder (acquire): pairs with check()'s release store of false
  // (see Slot::requested); true: a check() may be requesting this call.
  if (slot.checking.load(detail::kObserveOrder)) [[unlikely]] {
    wait_for_check(slot);
  }
}

// Drives a DeadlineWatch on a clock: a periodic timer of its own (a
// timers::Scheduler) calls check(clock.now()) every period(), the shortest
// period_for() of the deadlines it was told to cover(). So a stop token is
// requested within one period (plus the scheduler's 1 ms tick) after its
// deadline. Without a thread (Execution::kInline and kManual buses) the
// watch is never checked and tokens are not requested.
// Thread safety: cover() by any thread (serialised inside); watch() and
// period() by any thread.
class DeadlineWatchdog {
 public:
  // The watch period for a deadline: a quarter of it, within [1 ms, 1 s].
  [[nodiscard]] static Duration period_for(Duration deadline) noexcept;

  // `start_thread`: run the timer thread (else nothing checks the watch).
  // Errors: the scheduler's (a null clock).
  static absl::StatusOr<std::unique_ptr<DeadlineWatchdog>> Create(
      std::shared_ptr<Clock> clock, bool start_thread);
  ~DeadlineWatchdog();  // stops and joins the timer thread

  DeadlineWatchdog(const DeadlineWatchdog&) = delete;
  DeadlineWatchdog& operator=(const DeadlineWatchdog&) = delete;

  // Makes the period at most period_for(deadline) (re-arming the timer if
  // it shrinks). Errors: the scheduler's (shut down).
  absl::Status cover(Duration deadline);

  [[nodiscard]] const std::shared_ptr<DeadlineWatch>& watch() const noexcept {
    return watch_;
  }
  // The current period; 0 before the first cover().
  [[nodiscard]] Duration period() const;

 private:
  DeadlineWatchdog(std::shared_ptr<Clock> clock,
                   std::unique_ptr<timers::Scheduler> scheduler);

  const std::shared_ptr<Clock> clock_;
  const std::shared_ptr<DeadlineWatch> watch_ =
      std::make_shared<DeadlineWatch>();
  const std::unique_ptr<timers::Scheduler> scheduler_;  // null: no thread
  mutable std::mutex mutex_;  // guards period_ and timer_
  Duration period_{0};
  std::uint64_t timer_ = 0;  // the periodic timer's TimerId, or 0
};

}  // namespace fnbus::resilience
