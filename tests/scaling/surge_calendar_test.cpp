// Tests of announced surges (scaling/surge_calendar.hpp).

#include "fnbus/scaling/surge_calendar.hpp"

#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include <catch2/catch.hpp>

#include "fnbus/testing/manual_clock.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::scaling::ScheduledSurge;
using fnbus::scaling::SurgeCalendar;

SurgeCalendar make_calendar(std::size_t max_surges = 64) {
  auto calendar = SurgeCalendar::Create({.max_surges = max_surges});
  REQUIRE(calendar.ok());
  return *std::move(calendar);
}

TEST_CASE("surge_calendar: Create refuses a capacity outside 1 to 4096",
          "[surge_calendar]") {
  CHECK(SurgeCalendar::Create({.max_surges = 0}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(SurgeCalendar::Create({.max_surges = 5000}).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

// A calendar with a sale of 5x the rate for 20 minutes, announced 10
// minutes before it starts.
struct AnnouncedSale {
  AnnouncedSale() { REQUIRE(calendar.announce({sale, 20min, 5.0}, now).ok()); }
  fnbus::testing::ManualClock clock;
  fnbus::TimePoint now = clock.now();
  fnbus::TimePoint sale = now + 10min;
  SurgeCalendar calendar = make_calendar();
};

TEST_CASE_METHOD(AnnouncedSale,
                 "surge_calendar: the multiplier applies from start until end",
                 "[surge_calendar]") {
  CHECK(calendar.multiplier_at(sale - 1ns) == 1.0);
  CHECK(calendar.multiplier_at(sale) == 5.0);
  CHECK(calendar.multiplier_at(sale + 20min - 1ns) == 5.0);
  CHECK(calendar.multiplier_at(sale + 20min) == 1.0);
}

TEST_CASE_METHOD(
    AnnouncedSale,
    "surge_calendar: the peak over a lead sees a surge before it starts",
    "[surge_calendar]") {
  // 30 s ahead with a 30 s lead: the sale is at the window's end.
  CHECK(calendar.peak_multiplier(sale - 30s, 30s) == 5.0);
  CHECK(calendar.peak_multiplier(sale - 31s, 30s) == 1.0);
  // A surge shorter than a tick, inside the window, is not stepped over.
  REQUIRE(calendar.announce({sale + 1h, 50ms, 8.0}, now).ok());
  CHECK(calendar.peak_multiplier(sale + 1h - 70ms, 100ms) == 8.0);
  // A lead of 0 is the multiplier at that instant.
  CHECK(calendar.peak_multiplier(sale + 1min, 0s) == 5.0);
}

TEST_CASE("surge_calendar: an announced lull lowers the peak only inside it",
          "[surge_calendar]") {
  fnbus::testing::ManualClock clock;
  SurgeCalendar calendar = make_calendar();
  const auto start = clock.now() + 1min;
  REQUIRE(calendar.announce({start, 10min, 0.5}, clock.now()).ok());
  REQUIRE(calendar.announce({start + 10min, 10min, 0.25}, clock.now()).ok());
  CHECK(calendar.peak_multiplier(start + 1min, 1min) == 0.5);
  // Across the two lulls, which meet: no instant at the normal rate.
  CHECK(calendar.peak_multiplier(start + 9min, 2min) == 0.5);
  // A window reaching past the last lull includes normal load.
  CHECK(calendar.peak_multiplier(start + 19min, 2min) == 1.0);
  CHECK(calendar.peak_multiplier(start - 1s, 1min) == 1.0);
}

TEST_CASE("surge_calendar: a surge is forgotten once it has passed",
          "[surge_calendar]") {
  fnbus::testing::ManualClock clock;
  SurgeCalendar calendar = make_calendar();
  REQUIRE(calendar.announce({clock.now() + 1min, 1min, 2.0}, clock.now()).ok());
  REQUIRE(calendar.announce({clock.now() + 5min, 1min, 3.0}, clock.now()).ok());
  clock.advance(90s);  // inside the first
  CHECK(calendar.forget_passed(clock.now()) == 0);
  CHECK(calendar.size() == 2);
  clock.advance(30s);  // the first has just ended
  CHECK(calendar.forget_passed(clock.now()) == 1);
  REQUIRE(calendar.size() == 1);
  CHECK(calendar.surges().front().multiplier == 3.0);
  clock.advance(1h);
  CHECK(calendar.forget_passed(clock.now()) == 1);
  CHECK(calendar.empty());
}

TEST_CASE("surge_calendar: bad announcements are refused and change nothing",
          "[surge_calendar]") {
  fnbus::testing::ManualClock clock;
  SurgeCalendar calendar = make_calendar();
  const auto now = clock.now();
  const auto code = [&](ScheduledSurge surge) {
    return calendar.announce(surge, now).code();
  };
  const auto invalid = absl::StatusCode::kInvalidArgument;
  CHECK(code({now - 1ms, 1min, 2.0}) == invalid);
  CHECK_THAT(
      std::string(calendar.announce({now - 1ms, 1min, 2.0}, now).message()),
      Catch::Contains("before now"));
  CHECK(code({now + 1min, 0s, 2.0}) == invalid);
  CHECK(code({now + 1min, -1s, 2.0}) == invalid);
  CHECK(code({now + 1min, fnbus::Duration::max(), 2.0}) == invalid);
  CHECK(code({now + 1min, 1min, 0.0}) == invalid);
  CHECK(code({now + 1min, 1min, -3.0}) == invalid);
  CHECK(code({now + 1min, 1min, std::nan("")}) == invalid);
  CHECK(code({now + 1min, 1min, std::numeric_limits<double>::infinity()}) ==
        invalid);
  CHECK_THAT(
      std::string(calendar.announce({now + 1min, 1min, -3.0}, now).message()),
      Catch::Contains("multiplier is -3"));
  CHECK(calendar.empty());
  // Starting now is not in the past.
  CHECK(calendar.announce({now, 1min, 2.0}, now).ok());
}

TEST_CASE_METHOD(AnnouncedSale,
                 "surge_calendar: an overlapping announcement is refused",
                 "[surge_calendar]") {
  // The sale is [now + 10min, now + 30min).
  const auto overlap = absl::StatusCode::kFailedPrecondition;
  CHECK(calendar.announce({now + 5min, 6min, 2.0}, now).code() == overlap);
  CHECK(calendar.announce({now + 29min, 5min, 2.0}, now).code() == overlap);
  CHECK(calendar.announce({now + 12min, 1min, 2.0}, now).code() == overlap);
  CHECK(calendar.announce({now + 1min, 1h, 2.0}, now).code() == overlap);
  CHECK_THAT(
      std::string(calendar.announce({now + 5min, 6min, 2.0}, now).message()),
      Catch::Contains("cancel that one first"));
  CHECK(calendar.size() == 1);
  // Touching is not overlapping: [5, 10) and [30, 35) fit.
  CHECK(calendar.announce({now + 5min, 5min, 2.0}, now).ok());
  CHECK(calendar.announce({now + 30min, 5min, 2.0}, now).ok());
  REQUIRE(calendar.size() == 3);
  CHECK(calendar.surges()[0].start == now + 5min);
  CHECK(calendar.surges()[1].start == now + 10min);
  CHECK(calendar.surges()[2].start == now + 30min);
}

TEST_CASE("surge_calendar: a full calendar is ResourceExhausted",
          "[surge_calendar]") {
  fnbus::testing::ManualClock clock;
  SurgeCalendar calendar = make_calendar(2);
  const auto now = clock.now();
  REQUIRE(calendar.announce({now + 1min, 1min, 2.0}, now).ok());
  REQUIRE(calendar.announce({now + 3min, 1min, 2.0}, now).ok());
  CHECK(calendar.announce({now + 5min, 1min, 2.0}, now).code() ==
        absl::StatusCode::kResourceExhausted);
  CHECK(calendar.size() == 2);
}

TEST_CASE_METHOD(AnnouncedSale,
                 "surge_calendar: a cancelled surge no longer applies",
                 "[surge_calendar]") {
  CHECK(calendar.cancel(sale + 1s).code() == absl::StatusCode::kNotFound);
  REQUIRE(calendar.cancel(sale).ok());
  CHECK(calendar.multiplier_at(sale) == 1.0);
  CHECK(calendar.empty());
}

}  // namespace
