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

#include <chrono>
#include <cstdint>

#include "fnbus/clock.hpp"

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

// A bus's source of latency timestamps: TSC ticks when the bus clock is
// the steady clock and the TSC may stand in for it, else nanoseconds of
// the bus clock (steady_clock read directly, or a custom Clock).
// Immutable after construction. Thread safety: any thread.
class TickClock {
 public:
  // `record_latency`: whether anything will be timed (calibrating the TSC
  // takes 10 ms once; it is skipped otherwise).
  TickClock(Clock& clock, bool record_latency) noexcept;

  // A timestamp in ticks.
  [[nodiscard]] std::int64_t now() const noexcept {
    if (source_ == Source::kTsc) [[likely]]
      return read_tsc();
    if (source_ == Source::kSteady) {
      return std::chrono::duration_cast<std::chrono::nanoseconds>(
                 std::chrono::steady_clock::now().time_since_epoch())
          .count();
    }
    return clock_->now().time_since_epoch().count();
  }
  // Nanoseconds from `from` to `to` (two now() values); 0 if not after.
  [[nodiscard]] std::uint64_t elapsed_ns(std::int64_t from,
                                         std::int64_t to) const noexcept {
    if (to <= from) return 0;
    if (source_ != Source::kTsc) return static_cast<std::uint64_t>(to - from);
    return static_cast<std::uint64_t>(static_cast<double>(to - from) *
                                      nanos_per_tick_);
  }

 private:
  enum class Source { kTsc, kSteady, kCustom };
  [[nodiscard]] static Source choose(const Clock& clock,
                                     bool record_latency) noexcept;

  Clock* clock_;
  Source source_;
  double nanos_per_tick_;  // for Source::kTsc
};

}  // namespace fnbus::detail
