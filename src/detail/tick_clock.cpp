#include "fnbus/detail/tick_clock.hpp"

#include <chrono>
#include <fstream>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace fnbus::detail {
namespace {

using std::chrono::steady_clock;

std::int64_t steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             steady_clock::now().time_since_epoch())
      .count();
}

// The kernel keeps CLOCK_MONOTONIC on the TSC only after checking that it
// is invariant and synchronised across CPUs; we rely on the same check.
bool kernel_clock_is_tsc() {
  std::ifstream source(
      "/sys/devices/system/clocksource/clocksource0/current_clocksource");
  std::string name;
  return static_cast<bool>(source >> name) && name == "tsc";
}

bool cpu_has_invariant_tsc() noexcept {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0x80000007, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (edx & (1u << 8)) != 0;
#else
  return false;
#endif
}

// One (TSC, steady) pair, the TSC taken as the midpoint of two reads
// around the steady_clock read; the tightest of a few tries, so that a
// preemption in between does not skew the ratio.
struct Pair {
  std::int64_t tsc;
  std::int64_t ns;
};
Pair read_pair() noexcept {
  Pair best{0, 0};
  std::int64_t best_width = INT64_MAX;
  for (int i = 0; i < 8; ++i) {
    const std::int64_t before = read_tsc();
    const std::int64_t ns = steady_ns();
    const std::int64_t after = read_tsc();
    if (after - before < best_width) {
      best_width = after - before;
      best = {before + (after - before) / 2, ns};
    }
  }
  return best;
}

double calibrate() noexcept {
  try {
    if (!cpu_has_invariant_tsc() || !kernel_clock_is_tsc()) return 0;
  } catch (...) {
    return 0;
  }
  // 10 ms: a 50 ns error in either pair moves the ratio by 5e-6.
  constexpr std::int64_t kWindowNs = 10'000'000;
  const Pair start = read_pair();
  while (steady_ns() - start.ns < kWindowNs) {
  }
  const Pair end = read_pair();
  if (end.tsc <= start.tsc) return 0;
  return static_cast<double>(end.ns - start.ns) /
         static_cast<double>(end.tsc - start.tsc);
}

}  // namespace

double tsc_nanos_per_tick() noexcept {
  // Thread-safe one-time initialisation (a function-local static).
  static const double nanos_per_tick = calibrate();
  return nanos_per_tick;
}

TickClock::Source TickClock::choose(const Clock& clock,
                                    bool record_latency) noexcept {
  if (&clock != &SteadyClock::instance()) return Source::kCustom;
  if (record_latency && tsc_nanos_per_tick() > 0) return Source::kTsc;
  return Source::kSteady;
}

TickClock::TickClock(Clock& clock, bool record_latency) noexcept
    : clock_(&clock),
      source_(choose(clock, record_latency)),
      nanos_per_tick_(source_ == Source::kTsc ? tsc_nanos_per_tick() : 1.0) {}

}  // namespace fnbus::detail
