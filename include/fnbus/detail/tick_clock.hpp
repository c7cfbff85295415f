#pragma once

// Cheap timestamps for the latency histograms. The bus stamps every event
// twice and every handler call once, on the critical path of a dispatch
// that costs well under 100 ns, where steady_clock::now() (about 20 ns
// here: a vDSO call with a serialising TSC read) would be the largest cost.
// When the kernel itself keeps CLOCK_MONOTONIC on an invariant TSC, the bus
// reads the TSC directly (about 9 ns, not serialising) and converts tick
// differences to nanoseconds with a ratio measured once against
// steady_clock. Anywhere else (other CPUs, other clock sources, a manual
// clock) a tick is a nanosecond of the bus clock.

#include <cstdint>

namespace fnbus::detail {

// Nanoseconds per TSC tick if the TSC may stand in for steady_clock in
// this process, else 0. Measured on first call (about 10 ms, once).
// Thread safety: any thread.
[[nodiscard]] double tsc_nanos_per_tick() noexcept;

[[nodiscard]] inline std::int64_t read_tsc() noexcept {
#if defined(__x86_64__)
  return static_cast<std::int64_t>(__builtin_ia32_rdtsc());
#else
  return 0;  // never used: tsc_nanos_per_tick() is 0 here
#endif
}

}  // namespace fnbus::detail
