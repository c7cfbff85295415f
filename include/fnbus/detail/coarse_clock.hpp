#pragma once

// CLOCK_MONOTONIC_COARSE on the bus's time scale, for resilience::Pipeline
// (pipeline.cpp, pipeline_deadline.cpp): the clock steady_clock reads
// (CLOCK_MONOTONIC) as of the kernel's last tick, a few ns per read
// instead of ~25 ns. Never ahead of steady_clock; behind it by about one
// tick (clock_getres).

#include <ctime>

#include "fnbus/clock.hpp"

namespace fnbus::detail {

[[nodiscard]] inline TimePoint coarse_steady_now() noexcept {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  return TimePoint(std::chrono::seconds(now.tv_sec) + Duration(now.tv_nsec));
}

}  // namespace fnbus::detail
