#pragma once

// A circuit breaker for one function: closed (calls pass, outcomes are
// counted over a rolling window), open (calls are refused until a
// cool-down has passed), half-open (a few probe calls pass; all succeed:
// closed again, one fails: open again).
//
//   auto breaker = fnbus::resilience::CircuitBreaker::Create(
//       {.failure_rate = 0.5, .minimum_calls = 20, .window = 10s,
//        .open_for = 30s});
//   if (auto permit = (*breaker)->try_acquire(clock.now())) {
//     absl::Status status = call_gateway();
//     status.ok() ? permit.on_success()  // at the instant of try_acquire
//                 : permit.on_failure(clock.now());
//   } else {
//     // open: use the fallback, or dead-letter the event
//   }
//
// Made of three parts, each usable alone: HealthWindow (the rolling
// counts, time passed in), should_trip() (the pure rule, so a simulator
// can replay it) and the state machine here. Time is always passed in
// (the bus clock's now()), so a ManualClock drives it in tests.
//
// Thread safety: every method from any thread. The closed state's common
// path -- try_acquire() while closed, then on_success() within the
// window's newest slice -- takes no lock and writes one shared word: a
// relaxed load of the state and one atomic increment (the slice's calls).
// Everything else (a failure, which may trip it; a success in another
// slice, which moves the window on; the open and half-open states; stats())
// takes the breaker's mutex for a few counter updates.
//
// Transitions can be observed: Create()'s `observer` is called once per
// state change, after the mutex is released (see BreakerObserver); the
// bus counts them per function (docs/metrics.md). The closed path never
// calls it.
//
// Not guaranteed: a caller that has not yet seen a trip made by another
// thread may be let through just after it, as if it had come a moment
// earlier; its outcome then changes nothing (as for any call let through
// while closed that finishes while open). A success counted while the
// window moves on (a slice rollover in another thread) may be counted in
// the slice after its own; stats() counts every outcome exactly.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/detail/config.hpp"
#include "fnbus/resilience/breaker_state.hpp"

namespace fnbus::resilience {

struct BreakerOptions {
  // Trips when failures / calls in the window reach this: in (0, 1].
  double failure_rate = 0.5;
  // ... and the window holds at least this many calls (>= 1), so that
  // one failure out of one call does not open it.
  std::uint32_t minimum_calls = 20;
  // The rolling window (> 0), kept in `window_buckets` slices (1 to
  // 1000): an outcome leaves the window between window - window/buckets
  // and window after it was recorded.
  Duration window = std::chrono::seconds(10);
  std::uint32_t window_buckets = 10;
  // How long it stays open before letting probes through (> 0).
  Duration open_for = std::chrono::seconds(30);
  // Probe calls let through while half-open (>= 1); this many successes
  // close it.
  std::uint32_t half_open_probes = 3;
};

// One state change of a breaker, as its observer hears it.
struct BreakerTransition {
  BreakerState from = BreakerState::kClosed;
  BreakerState to = BreakerState::kClosed;
  // The instant given to the call that made it (try_acquire(), state(),
  // a permit's report): for open -> half-open, when the cool-down was
  // found over, not when it ended.
  TimePoint at{};
  // 1 for the breaker's first transition, 2 for the next, ...
  // (Stats::transitions just after it): orders reports that race.
  std::uint64_t number = 0;
};

// Hears every transition of one breaker, exactly once each:
// closed -> open (tripped), open -> half-open (cooled down), half-open ->
// closed (every probe succeeded) and half-open -> open (a probe failed).
// Called on the thread whose call made the transition, after the
// breaker's mutex is released, so it may call the breaker's state() and
// stats() (whose state may then already be a later one). Must not throw
// (the breaker calls it from a noexcept context: a throw terminates), and
// should be quick: the call that made the transition waits for it.
// Not guaranteed: the order of reports made by different threads. Two
// transitions made close together on two threads (a trip, then a
// cool-down found over) may be reported concurrently or in either order;
// `number` orders them, and since each report is a change from `from` to
// `to`, counts kept per state by adding (-1 from, +1 to) are exact once
// both have returned.
using BreakerObserver = std::function<void(const BreakerTransition&)>;

// Outcomes counted over a rolling window of fixed slices: slice k holds
// the outcomes recorded at instants in [k * width, (k + 1) * width), with
// width = window / buckets, and the window at `now` is the `buckets`
// slices up to now's (a slice after now's, from a clock that went back,
// is counted too rather than lost).
//
// Thread safety: try_record_success() is lock-free and may run on any
// thread at any time, also while the other methods run. record(),
// counts(), totals() and clear() must not run at the same time as one
// another: the owner serialises them (the breaker's mutex).
// Not guaranteed: a success counted by try_record_success() while
// record() reuses the slice's bucket for a later slice, or while clear()
// runs, may land in that later slice, or in the cleared window (where
// counts() no longer sees it); totals() always has it.
class HealthWindow {
 public:
  struct Counts {
    std::uint64_t calls = 0;
    std::uint64_t failures = 0;
  };

  // window > 0, buckets >= 1 (BreakerOptions checks them).
  HealthWindow(Duration window, std::uint32_t buckets);
  HealthWindow(const HealthWindow&) = delete;
  HealthWindow& operator=(const HealthWindow&) = delete;

  // Counts a success at `now` if `now` is in the newest slice recorded
  // (no lock, no division), else counts nothing.
  // Returns whether it counted; if not, record(now, true) must.
  // Thread safety: lock-free; concurrently with every method.
  // Memory ordering: actions before a counted success are visible to a
  // totals() or counts() that includes it.
  [[nodiscard]] bool try_record_success(TimePoint now) noexcept;
  // Counts an outcome at `now`; one older than the newest slice's window
  // is counted in totals() alone. A later slice becomes the newest.
  void record(TimePoint now, bool success);
  // The counts of the slices that `now` still covers.
  [[nodiscard]] Counts counts(TimePoint now) const;
  // Every outcome counted since construction, clear() notwithstanding.
  [[nodiscard]] Counts totals() const;
  // Empties the window (totals() keeps its counts).
  void clear();

 private:
  struct Bucket {
    // The slice's first and last instant (nanoseconds since the clock's
    // epoch, clamped to its range); first > last while unused. Written by
    // reuse() and clear() under the owner's serialisation, read by
    // try_record_success(); see newest_bucket_ for their ordering.
    std::atomic<std::int64_t> first{std::numeric_limits<std::int64_t>::max()};
    std::atomic<std::int64_t> last{std::numeric_limits<std::int64_t>::min()};
    // Outcomes in this slice. Incremented by try_record_success() (any
    // thread) and record(); moved into retired_ by an exchange when the
    // bucket is reused or cleared, so no increment is lost.
    std::atomic<std::uint64_t> calls{0};
    // The rest only under the owner's serialisation.
    std::uint64_t failures = 0;
    std::int64_t slice = 0;  // floor(time since epoch / width)
    bool used = false;
  };
  Bucket& bucket_of(std::int64_t slice) noexcept;
  // Empties `bucket` for `slice`, which holds `now` at `offset`.
  void reuse(Bucket& bucket, TimePoint now, std::int64_t slice,
             Duration offset);
  void retire(Bucket& bucket);
  // Whether the window ending in slice `newest` covers slice `slice`.
  [[nodiscard]] bool covers(std::int64_t newest, std::int64_t slice) const;

  const Duration width_;
  const std::uint32_t size_;
  const std::unique_ptr<Bucket[]> buckets_;
  // The index of the newest slice's bucket. Stored (release) by record()
  // after reuse() wrote the bucket's first and last; loaded (acquire) by
  // try_record_success(), which therefore reads that slice's range or a
  // later reuse's.
  std::atomic<std::uint32_t> newest_bucket_{0};
  // Under the owner's serialisation.
  bool started_ = false;  // newest_ is set
  std::int64_t newest_ = 0;
  Counts retired_;  // outcomes no longer in any bucket
};

// The trip rule, pure: enough calls, and the failure rate reached.
[[nodiscard]] bool should_trip(const HealthWindow::Counts& counts,
                               const BreakerOptions& options) noexcept;

class CircuitBreaker {
 public:
  // What one breaker has done; for metrics.
  struct Stats {
    BreakerState state = BreakerState::kClosed;
    // Calls let through: a half-open probe when it is let through, any
    // other call once it reports or is abandoned (a call let through while
    // closed and still running is not counted yet: counting it at
    // try_acquire() would cost the closed path a second shared write).
    std::uint64_t permitted = 0;
    std::uint64_t refused = 0;      // calls refused (open, probes used)
    std::uint64_t successes = 0;    // reported by permits
    std::uint64_t failures = 0;     // reported by permits
    std::uint64_t abandoned = 0;    // permits dropped without a report
    std::uint64_t transitions = 0;  // state changes
  };

  // Leave to call: report the outcome with on_success() or on_failure()
  // (once). A permit dropped without a report counts as abandoned: it
  // frees its probe slot and changes no state. Movable, not copyable.
  // Thread safety: one permit from one thread at a time.
  class Permit {
   public:
    Permit() = default;
    Permit(Permit&& other) noexcept;
    Permit& operator=(Permit&& other) noexcept;
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;
    ~Permit();

    // Whether the call may go ahead.
    explicit operator bool() const noexcept { return breaker_ != nullptr; }
    // The outcome at `now`.
    void on_success(TimePoint now);
    void on_failure(TimePoint now);
    // The outcome at the instant given to try_acquire(): no clock read.
    // A success then counts in the slice where the call started, which
    // is exact enough for slices far longer than a call; a failure that
    // took long may count in a slice that has already left the window,
    // so report failures with on_failure(now).
    void on_success() { on_success(acquired_at_); }
    void on_failure() { on_failure(acquired_at_); }

   private:
    friend class CircuitBreaker;
    Permit(CircuitBreaker* breaker, std::uint64_t spell,
           TimePoint acquired_at) noexcept
        : breaker_(breaker), spell_(spell), acquired_at_(acquired_at) {}

    CircuitBreaker* breaker_ = nullptr;  // null: refused or reported
    // The half-open spell this probe belongs to; 0: not a probe.
    std::uint64_t spell_ = 0;
    TimePoint acquired_at_{};
  };

  // InvalidArgument naming every bad option and what to use instead.
  // `observer`, if set, hears each transition (see BreakerObserver).
  static absl::StatusOr<std::unique_ptr<CircuitBreaker>> Create(
      BreakerOptions options, BreakerObserver observer = nullptr);

  // A permit if a call may go ahead at `now`, else an empty one. Moves
  // open -> half-open once open_for has passed (told to the observer
  // before it returns). The breaker must outlive its permits.
  // Thread safety: any thread; lock-free while closed.
  [[nodiscard]] Permit try_acquire(TimePoint now);

  // The state at `now`: moves open -> half-open, as try_acquire() does.
  // Thread safety: any thread (takes the mutex).
  [[nodiscard]] BreakerState state(TimePoint now);
  // A snapshot: successes + failures + abandoned <= permitted.
  // Thread safety: any thread (takes the mutex).
  [[nodiscard]] Stats stats() const;
  [[nodiscard]] const BreakerOptions& options() const noexcept {
    return options_;
  }

 private:
  class Notice;

  CircuitBreaker(BreakerOptions options, BreakerObserver observer);
  Permit acquire_locked(TimePoint now);
  void report(TimePoint now, bool success, std::uint64_t spell);
  void abandon(std::uint64_t spell);
  // The rest run under mutex_; a transition is left in `notice`, which
  // reports it once the mutex is released.
  void move_to(BreakerState state, TimePoint now, Notice& notice);
  void leave_open_if_cooled(TimePoint now, Notice& notice);
  [[nodiscard]] bool cooled(TimePoint now) const noexcept;
  [[nodiscard]] bool current_probe(std::uint64_t spell) const noexcept;
  void report_probe(TimePoint now, bool success, Notice& notice);

  const BreakerOptions options_;
  // Called by Notice, outside mutex_; empty: no one listens.
  const BreakerObserver observer_;
  // The state. Written by move_to() under mutex_; read without it by
  // try_acquire() (and under it by the rest). Relaxed throughout: the
  // closed path needs the value alone (its permit holds this breaker and
  // an instant; the window orders itself, every other path takes mutex_).
  // On a line of its own, which the closed path only reads: concurrent
  // callers share it without moving it between cores.
  alignas(detail::kCacheLineSize) std::atomic<BreakerState> state_{
      BreakerState::kClosed};
  alignas(detail::kCacheLineSize) mutable std::mutex mutex_;
  // Guarded by mutex_; its lock-free success path excepted.
  HealthWindow window_;
  // All guarded by mutex_.
  std::uint64_t refused_ = 0;
  std::uint64_t failures_ = 0;
  std::uint64_t abandoned_ = 0;
  std::uint64_t transitions_ = 0;
  // Probes let through, and probes reported or abandoned (of any spell):
  // Stats::permitted counts the other calls by their outcomes.
  std::uint64_t probes_let_through_ = 0;
  std::uint64_t probe_outcomes_ = 0;
  // Successes reported while not closed, or by probes: not in window_
  // (whose totals() has the others).
  std::uint64_t unwindowed_successes_ = 0;
  TimePoint opened_at_{};
  // Numbers the half-open spells, so that a probe reported after its
  // spell ended (another probe failed) changes nothing.
  std::uint64_t spell_ = 0;
  std::uint32_t probes_out_ = 0;       // this spell's unreported probes
  std::uint32_t probe_successes_ = 0;  // this spell's successes
};

// ---------------------------------------------------------------------------
// The lock-free paths, inline: they are the whole closed, successful call.

inline bool HealthWindow::try_record_success(TimePoint now) noexcept {
  // acquire: pairs with the release store in record(), so that first and
  // last below are those reuse() wrote for this bucket's newest slice (or
  // for a later reuse of the bucket).
  Bucket& bucket = buckets_[newest_bucket_.load(std::memory_order_acquire)];
  const std::int64_t at = now.time_since_epoch().count();
  // relaxed: ordered by the acquire above. A reuse racing with these two
  // loads can only make the success count in the slice that reuses the
  // bucket (see the class comment) or send it to record().
  if (at < bucket.first.load(std::memory_order_relaxed) ||
      at > bucket.last.load(std::memory_order_relaxed)) {
    return false;
  }
  // release: pairs with the acquire loads of calls in counts(), totals()
  // and retire(), so that whoever counts this success also sees what came
  // before it.
  bucket.calls.fetch_add(1, std::memory_order_release);
  return true;
}

inline CircuitBreaker::Permit CircuitBreaker::try_acquire(TimePoint now) {
  // relaxed: see state_.
  if (state_.load(std::memory_order_relaxed) == BreakerState::kClosed)
      [[likely]] {
    return Permit(this, 0, now);  // counted in permitted once it reports
  }
  return acquire_locked(now);
}

inline void CircuitBreaker::Permit::on_success(TimePoint now) {
  // A refused permit, or a second report: nothing to count.
  if (breaker_ == nullptr) return;
  CircuitBreaker* breaker = std::exchange(breaker_, nullptr);
  // Not a probe, and in the newest slice: counted without the lock,
  // whatever the state (a closed permit's success changes no state, and
  // the window restarts when the breaker closes).
  if (spell_ == 0 && breaker->window_.try_record_success(now)) [[likely]] {
    return;
  }
  breaker->report(now, true, spell_);
}

}  // namespace fnbus::resilience
