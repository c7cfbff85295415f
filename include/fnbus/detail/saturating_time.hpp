#pragma once

// Deadline arithmetic that cannot overflow. A ManualClock may stand at
// TimePoint::max() and a caller may pass a huge timeout: `now + timeout`
// in plain arithmetic is then signed overflow (undefined behaviour).
// Every deadline fnbus computes goes through saturating_add().

#include <cstdint>
#include <limits>

#include "fnbus/clock.hpp"

namespace fnbus::detail {

// `at + delta`, clamped to [TimePoint::min(), TimePoint::max()].
[[nodiscard]] constexpr TimePoint saturating_add(TimePoint at,
                                                 Duration delta) noexcept {
  using Rep = Duration::rep;
  const Rep base = at.time_since_epoch().count();
  const Rep step = delta.count();
  Rep sum = 0;
  if (__builtin_add_overflow(base, step, &sum)) {
    return step > 0 ? TimePoint::max() : TimePoint::min();
  }
  return TimePoint(Duration(sum));
}

// `now - then` in nanoseconds, for now >= then: exact in unsigned
// arithmetic even where the signed difference does not fit (a ManualClock
// may stand anywhere in its range).
[[nodiscard]] constexpr std::uint64_t nanos_between(TimePoint then,
                                                    TimePoint now) noexcept {
  return static_cast<std::uint64_t>(now.time_since_epoch().count()) -
         static_cast<std::uint64_t>(then.time_since_epoch().count());
}

}  // namespace fnbus::detail
