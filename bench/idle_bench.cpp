// CPU used by an idle bus: 4 workers with the default idle_spin, settled
// (one event handled, then 100 ms), measured over a 2 s sleep of the
// benchmark thread.
//
// Counters: cpu_pct, process CPU time (all threads) over wall time, in
// percent of one core; ctx_switches, context switches of the whole process
// in the window (the benchmark thread's own sleep accounts for about one);
// parked, workers parked at the end. Target: cpu_pct < 1.
//
// BM_Idle_Bursts/<workers>: wake-ups (ThreadPoolStats::wakeups, exact)
// per burst of 16 events published back to back into a bus whose workers
// are all parked, then per second of an idle 1 s sleep that follows.
// Counters: wakeups_per_burst (at least 1; at most the workers when every
// publish wakes a worker that then finds nothing), idle_wakeups_per_s
// (target 0), bursts.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>

#include "support.hpp"
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <time.h>

#include "fnbus/event_bus.hpp"

namespace fnbus_bench {
namespace {

struct Nudge {
  int value;
};

double process_cpu_seconds() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) +
         static_cast<double>(ts.tv_nsec) * 1e-9;
}

long context_switches() noexcept {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_nvcsw + usage.ru_nivcsw;
}

void BM_Idle_Fnbus(benchmark::State& state) {
  std::atomic<int> handled{0};  // outlives the bus
  auto bus = fnbus::EventBus::Create({.workers = 4});
  if (!bus.ok()) {
    state.SkipWithError(bus.status().ToString().c_str());
    return;
  }
  fnbus::Subscription subscription = (*bus)->subscribe<Nudge>(
      [&handled](const Nudge&) {
        // release: pairs with the acquire in the wait below.
        handled.fetch_add(1, std::memory_order_release);
      },
      {.name = "nudge"});
  if (!(*bus)->publish(Nudge{1}).ok()) {
    state.SkipWithError("publish refused the settling event");
    return;
  }
  // acquire: pairs with the release in the handler.
  wait_until([&] { return handled.load(std::memory_order_acquire) == 1; });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));

  double cpu_s = 0;
  double wall_s = 0;
  long switches = 0;
  for (auto _ : state) {
    const auto wall_start = std::chrono::steady_clock::now();
    const double cpu_start = process_cpu_seconds();
    const long switches_start = context_switches();
    std::this_thread::sleep_for(std::chrono::seconds(2));
    switches += context_switches() - switches_start;
    cpu_s += process_cpu_seconds() - cpu_start;
    const std::chrono::duration<double> wall =
        std::chrono::steady_clock::now() - wall_start;
    wall_s += wall.count();
    state.SetIterationTime(wall.count());
  }
  state.counters["cpu_pct"] = 100.0 * cpu_s / wall_s;
  state.counters["ctx_switches"] = static_cast<double>(switches);
  state.counters["parked"] = static_cast<double>((*bus)->pool_stats().parked);
}

void BM_Idle_Bursts(benchmark::State& state) {
  constexpr int kBurst = 16;
  const auto workers = static_cast<std::size_t>(state.range(0));
  std::atomic<int> handled{0};  // outlives the bus
  auto bus = fnbus::EventBus::Create({.workers = workers});
  if (!bus.ok()) {
    state.SkipWithError(bus.status().ToString().c_str());
    return;
  }
  fnbus::Subscription subscription = (*bus)->subscribe<Nudge>(
      [&handled](const Nudge&) {
        // release: pairs with the acquire in the wait below.
        handled.fetch_add(1, std::memory_order_release);
      },
      {.name = "nudge"});
  const auto all_parked = [&] {
    return (*bus)->pool_stats().parked == workers;
  };
  int published = 0;
  std::uint64_t burst_wakeups = 0;
  std::int64_t bursts = 0;
  for (auto _ : state) {
    wait_until(all_parked);
    const std::uint64_t before = (*bus)->pool_stats().wakeups;
    for (int i = 0; i < kBurst; ++i) {
      if (!(*bus)->publish(Nudge{i}).ok()) {
        state.SkipWithError("publish refused an event");
        return;
      }
    }
    published += kBurst;
    // acquire: pairs with the release in the handler.
    wait_until(
        [&] { return handled.load(std::memory_order_acquire) == published; });
    wait_until(all_parked);  // helpers woken for nothing have re-parked
    burst_wakeups += (*bus)->pool_stats().wakeups - before;
    ++bursts;
  }
  // The idle window: a measurement, not a synchronisation.
  const std::uint64_t idle_before = (*bus)->pool_stats().wakeups;
  const auto idle_start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const std::chrono::duration<double> idle =
      std::chrono::steady_clock::now() - idle_start;
  const std::uint64_t idle_wakeups = (*bus)->pool_stats().wakeups - idle_before;
  state.counters["wakeups_per_burst"] =
      static_cast<double>(burst_wakeups) / static_cast<double>(bursts);
  state.counters["idle_wakeups_per_s"] =
      static_cast<double>(idle_wakeups) / idle.count();
  state.counters["bursts"] = static_cast<double>(bursts);
}

}  // namespace

void register_idle_benchmarks() {
  benchmark::RegisterBenchmark("BM_Idle_Fnbus", BM_Idle_Fnbus)
      ->Iterations(1)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_Idle_Bursts", BM_Idle_Bursts)
      ->Arg(4)
      ->Arg(8)
      ->Iterations(500)
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace fnbus_bench
