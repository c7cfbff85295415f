// Tests of detail::saturating_add() (detail/saturating_time.hpp): deadline
// arithmetic clamps at the ends of the time scale instead of overflowing,
// and is plain addition everywhere else.

#include "fnbus/detail/saturating_time.hpp"

#include <chrono>

#include <catch2/catch.hpp>

#include "fnbus/clock.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::Duration;
using fnbus::TimePoint;
using fnbus::detail::saturating_add;

constexpr TimePoint kMax = TimePoint::max();
constexpr TimePoint kMin = TimePoint::min();

// Usable in constant expressions (a deadline in a constexpr default).
static_assert(saturating_add(kMax, 1ns) == kMax);
static_assert(saturating_add(TimePoint{}, 1s) == TimePoint{} + 1s);

TEST_CASE("saturating_time: ordinary values add exactly", "[saturating_time]") {
  const TimePoint start = TimePoint{} + 1h;
  CHECK(saturating_add(start, 100ms) == start + 100ms);
  CHECK(saturating_add(start, -100ms) == start - 100ms);
  CHECK(saturating_add(start, Duration::zero()) == start);
  CHECK(saturating_add(TimePoint{}, -1ns) == TimePoint{} - 1ns);
  // Up to the last representable instant, and no further.
  CHECK(saturating_add(kMax - 1s, 1s) == kMax);
  CHECK(saturating_add(kMin + 1s, -1s) == kMin);
}

TEST_CASE(
    "saturating_time: the maximum plus a positive duration stays at "
    "the maximum",
    "[saturating_time]") {
  CHECK(saturating_add(kMax, 1ns) == kMax);
  CHECK(saturating_add(kMax, 100ms) == kMax);
  CHECK(saturating_add(kMax - 50ms, 100ms) == kMax);
  CHECK(saturating_add(kMax, Duration::zero()) == kMax);
  // Going back from the maximum is ordinary arithmetic.
  CHECK(saturating_add(kMax, -1s) == kMax - 1s);
}

TEST_CASE(
    "saturating_time: the minimum plus a negative duration stays at "
    "the minimum",
    "[saturating_time]") {
  CHECK(saturating_add(kMin, -1ns) == kMin);
  CHECK(saturating_add(kMin, -100ms) == kMin);
  CHECK(saturating_add(kMin + 50ms, -100ms) == kMin);
  CHECK(saturating_add(kMin, Duration::zero()) == kMin);
  CHECK(saturating_add(kMin, 1s) == kMin + 1s);
}

TEST_CASE("saturating_time: huge durations clamp at either end",
          "[saturating_time]") {
  const TimePoint after = TimePoint{} + 1h;
  const TimePoint before = TimePoint{} - 1h;
  CHECK(saturating_add(after, Duration::max()) == kMax);
  CHECK(saturating_add(before, Duration::min()) == kMin);
  // Towards the epoch even the largest duration fits.
  CHECK(saturating_add(after, Duration::min()) == kMin + 1h);
  CHECK(saturating_add(before, Duration::max()) == kMax - 1h);
  CHECK(saturating_add(kMax, Duration::max()) == kMax);
  CHECK(saturating_add(kMin, Duration::min()) == kMin);
  // From the epoch the extremes are reached exactly, without clamping.
  CHECK(saturating_add(TimePoint{}, Duration::max()) == kMax);
  CHECK(saturating_add(TimePoint{}, Duration::min()) == kMin);
  // Opposite ends cancel without overflow.
  CHECK(saturating_add(kMax, Duration::min()) == TimePoint{} - 1ns);
  CHECK(saturating_add(kMin, Duration::max()) == TimePoint{} - 1ns);
}

}  // namespace
