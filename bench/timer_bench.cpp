// timers::TimerWheel: the cost of schedule + cancel, and of firing, with
// 1,000 against 1,000,000 timers pending. Target (issue 12): flat -- the
// cost with a million pending within a small factor of the cost with a
// thousand (a sorted structure would pay log2(1e6)/log2(1e3) = 2x in
// comparisons, and far more in cache misses).
//
// Both run single-threaded with time passed in (no clock reads). The
// pending timers are spread uniformly over the next `pending` ticks of a
// 1 ms wheel (about one per tick), so they occupy levels 0 to 2.

#include <cstdint>
#include <vector>

#include "support.hpp"
#include <benchmark/benchmark.h>

#include "fnbus/random.hpp"
#include "fnbus/timers/timer_wheel.hpp"

namespace fnbus_bench {
namespace {

using fnbus::Duration;
using fnbus::Random;
using fnbus::TimePoint;
using fnbus::timers::TimerWheel;

constexpr Duration kTick = std::chrono::milliseconds(1);

TimerWheel filled_wheel(std::uint64_t pending, Random& random) {
  TimerWheel wheel = *TimerWheel::Create({.tick = kTick}, TimePoint{});
  for (std::uint64_t i = 0; i < pending; ++i) {
    wheel.schedule(TimePoint{} + kTick * (1 + random.uniform_to(pending)), i);
  }
  return wheel;
}

// One schedule at a random due time among the pending ones, then its
// cancel: what a retry that succeeds before its timer costs.
void BM_TimerWheel_ScheduleCancel(benchmark::State& state) {
  const auto pending = static_cast<std::uint64_t>(state.range(0));
  Random random(1);
  TimerWheel wheel = filled_wheel(pending, random);
  std::uint64_t i = 0;
  for (auto _ : state) {
    const auto id = wheel.schedule(
        TimePoint{} + kTick * (1 + random.uniform_to(pending)), i++);
    benchmark::DoNotOptimize(wheel.cancel(id));
  }
  state.counters["pending"] = static_cast<double>(wheel.size());
}

// Steady state: each iteration advances the wheel by one tick, firing the
// timers due then (about one), and re-schedules each fired one `pending`
// ticks later, so the number pending stays put. Time per iteration.
void BM_TimerWheel_AdvanceFire(benchmark::State& state) {
  const auto pending = static_cast<std::uint64_t>(state.range(0));
  Random random(2);
  TimerWheel wheel = filled_wheel(pending, random);
  std::uint64_t tick = 0;
  std::uint64_t fired = 0;
  std::vector<std::uint64_t> due_now;
  for (auto _ : state) {
    ++tick;
    due_now.clear();
    wheel.advance(TimePoint{} + kTick * tick,
                  [&](std::uint64_t payload) { due_now.push_back(payload); });
    for (const std::uint64_t payload : due_now) {
      wheel.schedule(
          TimePoint{} + kTick * (tick + 1 + random.uniform_to(pending)),
          payload);
    }
    fired += due_now.size();
  }
  state.counters["fired_per_tick"] =
      static_cast<double>(fired) / static_cast<double>(tick);
  state.counters["pending"] = static_cast<double>(wheel.size());
}

}  // namespace

void register_timer_benchmarks() {
  benchmark::RegisterBenchmark("BM_TimerWheel_ScheduleCancel",
                               BM_TimerWheel_ScheduleCancel)
      ->ArgName("pending")
      ->Arg(1'000)
      ->Arg(1'000'000);
  benchmark::RegisterBenchmark("BM_TimerWheel_AdvanceFire",
                               BM_TimerWheel_AdvanceFire)
      ->ArgName("pending")
      ->Arg(1'000)
      ->Arg(1'000'000);
}

}  // namespace fnbus_bench
