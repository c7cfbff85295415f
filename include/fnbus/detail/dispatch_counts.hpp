#pragma once

// How the dispatch loop accounts for each handler call. The loop is a
// template over one of these, so that trigger()'s success path counts
// nothing and a worker's counts per function without a branch on which
// one it is. Each provides on_delivered(entry), on_failed(entry),
// on_counted(entry, counter) and restart() (start the next run time now, after
// work that was no handler's: a sink, a trace hook).

#include <atomic>
#include <cstdint>
#include <mutex>

#include "fnbus/detail/bus_metrics.hpp"
#include "fnbus/detail/handler_registry.hpp"
#include "fnbus/detail/tick_clock.hpp"

namespace fnbus::detail {

// A worker's (or a caller loop's) accounting for the calls of one event:
// counts per function in its own shard and, when the event is timed, the
// run time of each call. Lives for one event; used by one thread.
struct WorkerCounts {
  BusMetrics& metrics;
  WorkerShard& shard;
  const TickClock& ticks;
  std::int64_t last_ticks;  // when the previous call (or dequeue) ended
  std::uint64_t weight;     // events a timed one stands for; 0: untimed

  void on_delivered(const HandlerEntry& entry) noexcept {
    finish(entry, &FunctionSeries::delivered);
  }
  void on_failed(const HandlerEntry& entry) noexcept {
    finish(entry, &FunctionSeries::failed);
  }
  // An outcome that is no handler call of its own (filtered, duplicate,
  // rejected, fell back): counted, not timed.
  void on_counted(
      const HandlerEntry& entry,
      std::atomic<std::uint64_t> FunctionSeries::*counter) noexcept {
    bump(metrics.function_series(shard, entry.function_id).*counter);
    restart();
  }
  void restart() noexcept {
    if (weight != 0) last_ticks = ticks.now();
  }

 private:
  void finish(const HandlerEntry& entry,
              std::atomic<std::uint64_t> FunctionSeries::*counter) noexcept {
    FunctionSeries& series = metrics.function_series(shard, entry.function_id);
    bump(series.*counter);
    if (weight != 0 && series.run_time) {
      const std::int64_t now = ticks.now();
      series.run_time->record(ticks.elapsed_ns(last_ticks, now), weight);
      last_ticks = now;
    }
  }
};

// The failures of trigger() calls, which may come from any number of
// threads at once: counted in one shard of their own under a lock (a cold
// path), so that trigger()'s success path writes no shared memory.
// Thread safety: any thread.
class TriggerFailures {
 public:
  TriggerFailures(BusMetrics& metrics, WorkerShard& shard) noexcept
      : metrics_(metrics), shard_(shard) {}
  void count(const HandlerEntry& entry) noexcept;
  // One more of `counter` for function `function_id`: an outcome counted
  // off the dispatch path (a retry given up by the timer thread, say).
  void count(std::uint32_t function_id,
             std::atomic<std::uint64_t> FunctionSeries::*counter) noexcept;

 private:
  BusMetrics& metrics_;
  WorkerShard& shard_;
  std::mutex mutex_;  // serialises the writers of shard_
};

// trigger()'s accounting: failures only (see TriggerFailures).
struct TriggerCounts {
  TriggerFailures& failures;
  void on_delivered(const HandlerEntry&) noexcept {}
  void on_failed(const HandlerEntry& entry) noexcept { failures.count(entry); }
  void on_counted(const HandlerEntry&,
                  std::atomic<std::uint64_t> FunctionSeries::*) noexcept {}
  void restart() noexcept {}
};

// The accounting of a call run off the queue by whatever thread has it
// (a waiting call run in place, see EventBus::run_in_place()): every
// outcome counted per function, as a worker counts it, but through
// TriggerFailures' locked shard, since the thread may have no shard of its
// own (a trigger() caller). Untimed, like an event not sampled.
struct LockedCounts {
  TriggerFailures& counts;
  void on_delivered(const HandlerEntry& entry) noexcept {
    counts.count(entry.function_id, &FunctionSeries::delivered);
  }
  void on_failed(const HandlerEntry& entry) noexcept { counts.count(entry); }
  void on_counted(
      const HandlerEntry& entry,
      std::atomic<std::uint64_t> FunctionSeries::*counter) noexcept {
    counts.count(entry.function_id, counter);
  }
  void restart() noexcept {}
};

}  // namespace fnbus::detail
