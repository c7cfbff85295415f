#pragma once

// Small helpers shared by the benchmark files: clock, percentiles, a
// per-worker completion counter, the trigger benchmarks' event, handler
// and timing loop, and the registration entry points that main.cpp calls
// in a fixed order.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "fnbus/detail/config.hpp"
#include "fnbus/event_bus.hpp"

namespace fnbus_bench {

inline constexpr std::size_t kCacheLineSize = fnbus::detail::kCacheLineSize;

// The spin-wait hint fnbus's own workers use, so baselines spin alike.
using fnbus::detail::cpu_relax;

// steady_clock in nanoseconds (about 20 ns per read on these machines).
inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Waits until `done()`: spins briefly, then yields the CPU between checks
// so that worker threads sharing the core can run.
template <typename Done>
void wait_until(Done done) noexcept {
  for (std::uint32_t i = 0; !done(); ++i) {
    if (i < 64) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

struct Percentiles {
  double p50 = 0;
  double p99 = 0;
  double p999 = 0;

  static Percentiles of(std::vector<std::int64_t> samples) {
    if (samples.empty()) return {};
    std::sort(samples.begin(), samples.end());
    const auto at = [&](double q) {
      const auto index = static_cast<std::size_t>(
          q * static_cast<double>(samples.size() - 1) + 0.5);
      return static_cast<double>(samples[index]);
    };
    return {at(0.50), at(0.99), at(0.999)};
  }
};

// Counts handled events per producer. Each handler thread writes its own
// cache lines, so counting adds no sharing between workers; a producer sums
// the threads' cells to learn when its events have all been handled.
// MaxThreads bounds the distinct handler threads per counter (a resized
// pool starts new threads, so the scaling benchmarks need many).
// Thread safety: add() from handlers (up to MaxThreads distinct threads);
// handled() and wait_for() from any thread.
template <std::size_t MaxThreads, std::size_t MaxProducers>
class BasicHandledCounter {
 public:
  static constexpr std::size_t kMaxThreads = MaxThreads;
  static constexpr std::size_t kMaxProducers = MaxProducers;

  void add(std::size_t producer) noexcept {
    std::atomic<std::uint64_t>& count = cells_[thread_slot()][producer].count;
    // relaxed: one writer per cell; readers only compare counts.
    count.store(count.load(std::memory_order_relaxed) + 1,
                std::memory_order_relaxed);
  }

  [[nodiscard]] std::uint64_t handled(std::size_t producer) const noexcept {
    // relaxed: a stale (smaller) slot count leaves out a cell for now,
    // which only makes the sum smaller: wait_for() waits a little longer.
    const std::size_t used =
        std::min(next_slot_.load(std::memory_order_relaxed), kMaxThreads);
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < used; ++i) {
      // relaxed: a count; no data is read on the strength of it.
      sum += cells_[i][producer].count.load(std::memory_order_relaxed);
    }
    return sum;
  }

  void wait_for(std::size_t producer, std::uint64_t target) const noexcept {
    wait_until([&] { return handled(producer) >= target; });
  }

 private:
  struct alignas(kCacheLineSize) Cell {
    std::atomic<std::uint64_t> count{0};
  };

  std::size_t thread_slot() noexcept {
    thread_local std::uint64_t owner = 0;
    thread_local std::size_t slot = 0;
    if (owner != id_) [[unlikely]] {
      // relaxed: only hands out distinct indices.
      slot = next_slot_.fetch_add(1, std::memory_order_relaxed);
      owner = id_;
      if (slot >= kMaxThreads) {
        std::fputs("HandledCounter: more handler threads than kMaxThreads\n",
                   stderr);
        std::abort();
      }
    }
    return slot;
  }

  static std::uint64_t next_id() noexcept {
    static std::atomic<std::uint64_t> next{1};
    // relaxed: only hands out distinct ids.
    return next.fetch_add(1, std::memory_order_relaxed);
  }

  const std::uint64_t id_ = next_id();
  // Cells handed out so far (may exceed kMaxThreads just before abort()).
  std::atomic<std::size_t> next_slot_{0};
  Cell cells_[kMaxThreads][kMaxProducers];
};

// The fixed-pool benchmarks' counter: up to 8 workers, 4 producers.
using HandledCounter = BasicHandledCounter<8, 4>;

// The synchronous benchmarks' pieces (trigger_bench.cpp,
// stages_bench.cpp). Their event type E is a struct with one std::int64_t
// `value`, declared by each file in an anonymous namespace: with internal
// linkage GCC 12 inlines EventBus::trigger<E> into run_trigger()'s loop;
// with one event type shared through this header it kept trigger<E> out
// of line, and BM_Trigger_Handlers/1 took 1.1x as long (+0.9 ns).

inline constexpr int kMaxTriggerHandlers = 8;

// The handler body of the synchronous benchmarks and their std::function
// baseline: a relaxed read-modify-write of a counter of its own, which the
// compiler cannot drop or merge.
template <typename E>
struct AddToCounter {
  std::atomic<std::int64_t>* sum;
  void operator()(const E& event) const noexcept {
    sum->store(sum->load(std::memory_order_relaxed) + event.value,
               std::memory_order_relaxed);
  }
};

struct alignas(kCacheLineSize) Sum {
  std::atomic<std::int64_t> value{0};
};

// Fails the benchmark unless every handler ran once per iteration.
inline void check_sums(benchmark::State& state, const Sum* sums, int handlers) {
  for (int i = 0; i < handlers; ++i) {
    // relaxed: same thread.
    if (sums[i].value.load(std::memory_order_relaxed) !=
        static_cast<std::int64_t>(state.iterations())) {
      state.SkipWithError("a handler missed events");
      return;
    }
  }
}

// The timing loop of BM_Trigger_Handlers: subscribes `handlers`
// (1 .. kMaxTriggerHandlers) AddToCounter<E> handlers, each with a copy of
// `options`, to E on a bus with one parked worker, times
// EventBus::trigger(E{1}) per iteration, and fails the benchmark unless
// every handler ran once per iteration.
template <typename E>
void run_trigger(benchmark::State& state, int handlers,
                 const fnbus::FunctionOptions& options) {
  if (handlers < 1 || handlers > kMaxTriggerHandlers) {
    state.SkipWithError("run_trigger: handlers must be 1 .. 8");
    return;
  }
  // One worker, which parks: trigger() never touches the pool.
  auto bus = fnbus::EventBus::Create({.workers = 1});
  if (!bus.ok()) {
    state.SkipWithError(bus.status().ToString().c_str());
    return;
  }
  Sum sums[kMaxTriggerHandlers];
  std::vector<fnbus::Subscription> subscriptions;
  for (int i = 0; i < handlers; ++i) {
    subscriptions.push_back(
        (*bus)->subscribe<E>(AddToCounter<E>{&sums[i].value}, options));
  }
  for (auto _ : state) {
    E event{1};
    // The address, not DoNotOptimize(event): with Google Benchmark 1.7.1
    // and GCC 12, the "+m,r" constraint of the T& overload hands the
    // handlers a garbage value for this struct.
    benchmark::DoNotOptimize(&event);
    (*bus)->trigger(event);
  }
  check_sums(state, sums, handlers);
}

// Registration, called by main() in the order the benchmarks should run.
void register_trigger_benchmarks();
void register_stages_benchmarks();
void register_histogram_benchmarks();
void register_timer_benchmarks();
void register_mesh_benchmarks();
void register_idle_benchmarks();
void register_mesh_versions_benchmarks();
void register_pingpong_benchmark(const char* name);
void register_latency_benchmarks();
void register_call_benchmarks();
void register_throughput_benchmarks();
void register_scaling_benchmarks();

}  // namespace fnbus_bench
