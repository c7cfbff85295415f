#pragma once

// The time source of a bus. Everything the bus times -- queue waits,
// handler run times, the wait of a blocking publish, the drain deadline
// (BusConfig::drain_timeout) and an Autoscaler's ticks -- reads one Clock,
// so that a test can swap in testing::ManualClock and make time pass
// instantly and deterministically.

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>

namespace fnbus {

// Durations and instants on the bus's monotonic time scale.
using Duration = std::chrono::nanoseconds;
using TimePoint = std::chrono::time_point<std::chrono::steady_clock,
                                          std::chrono::nanoseconds>;

// A monotonic clock that can also put a thread to sleep until one of its
// instants. Implementations must be thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;

  // The current instant; never earlier than a value returned before.
  [[nodiscard]] virtual TimePoint now() const noexcept = 0;

  // Blocks until now() >= deadline (true) or until `stop` is requested
  // (false). For a manual clock "until" means until a test advances it.
  virtual bool sleep_until(TimePoint deadline, std::stop_token stop) = 0;
};

// std::chrono::steady_clock behind the Clock interface. A bus using
// SteadyClock::instance() makes no virtual call for it: it reads
// steady_clock directly, or the TSC for latency timestamps (see
// detail/tick_clock.hpp).
class SteadyClock final : public Clock {
 public:
  [[nodiscard]] TimePoint now() const noexcept override {
    return std::chrono::time_point_cast<Duration>(
        std::chrono::steady_clock::now());
  }
  bool sleep_until(TimePoint deadline, std::stop_token stop) override;

  // The process-wide instance, used when BusConfig::clock is null.
  [[nodiscard]] static SteadyClock& instance() noexcept;

 private:
  std::mutex mutex_;
  std::condition_variable_any wake_;
};

}  // namespace fnbus
