// Tests of the seasonal load forecaster (scaling/forecaster.hpp).

#include "fnbus/scaling/forecaster.hpp"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

#include "fnbus/testing/manual_clock.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::Duration;
using fnbus::TimePoint;
using fnbus::scaling::Forecaster;
using fnbus::scaling::ForecasterOptions;
using fnbus::scaling::LoadSnapshot;

constexpr Duration kDay = 10min;  // a compressed day, as in the lab

// A day of 10 minutes in 1-minute buckets, with no weekly shape.
ForecasterOptions daily_options() {
  return {.name = "checkout",
          .origin = TimePoint{},
          .day = kDay,
          .days_per_week = 1,
          .bucket = 1min,
          .learning_rate = 0.2,
          .quantile = 0.95};
}

Forecaster make(const ForecasterOptions& options) {
  auto forecaster = Forecaster::Create(options);
  REQUIRE(forecaster.ok());
  return *std::move(forecaster);
}

// Feeds one snapshot per `tick` for `length` from the clock's time,
// advancing the clock; `rate` gives the arrival rate at each tick.
void feed(Forecaster& forecaster, fnbus::testing::ManualClock& clock,
          Duration length, Duration tick,
          const std::function<double(TimePoint)>& rate) {
  const TimePoint end = clock.now() + length;
  while (clock.now() < end) {
    clock.advance(tick);
    LoadSnapshot load;
    load.now = clock.now();
    load.tick = tick;
    load.arrival_rate_fast = rate(load.now);
    REQUIRE(forecaster.observe(load));
  }
}

// 100 events/s in the first half of each day, 500/s in the second.
double half_day_shape(TimePoint t) {
  return (t.time_since_epoch() % kDay) < kDay / 2 ? 100.0 : 500.0;
}

TEST_CASE("forecaster: Create names every bad option", "[forecaster]") {
  auto forecaster = Forecaster::Create({.name = "two words",
                                        .origin = TimePoint{},
                                        .day = 0s,
                                        .days_per_week = 0,
                                        .bucket = -1s,
                                        .learning_rate = 0,
                                        .quantile = 1.0});
  REQUIRE(forecaster.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(forecaster.status().message());
  CHECK_THAT(message, Catch::Contains("name is 'two words'"));
  CHECK_THAT(message, Catch::Contains("day is 0s"));
  CHECK_THAT(message, Catch::Contains("days_per_week is 0"));
  CHECK_THAT(message, Catch::Contains("bucket is -1s"));
  CHECK_THAT(message, Catch::Contains("learning_rate is 0"));
  CHECK_THAT(message, Catch::Contains("quantile is 1"));

  ForecasterOptions too_long = daily_options();
  too_long.day = std::chrono::hours(24 * 367);
  CHECK_THAT(std::string(Forecaster::Create(too_long).status().message()),
             Catch::Contains("(a year)"));

  ForecasterOptions uneven = daily_options();
  uneven.bucket = 7min;
  CHECK_THAT(std::string(Forecaster::Create(uneven).status().message()),
             Catch::Contains("does not divide day"));
}

TEST_CASE("forecaster: memory is fixed by the options", "[forecaster]") {
  ForecasterOptions options = daily_options();
  options.days_per_week = 7;
  Forecaster forecaster = make(options);
  CHECK(forecaster.buckets_per_day() == 10);
  CHECK(forecaster.buckets_per_week() == 70);
  fnbus::testing::ManualClock clock(TimePoint{});
  feed(forecaster, clock, 3 * 7 * kDay, 1s, half_day_shape);
  CHECK(forecaster.buckets_per_week() == 70);
  CHECK(forecaster.observed() == 3 * 7 * 600);
}

TEST_CASE("forecaster: knows nothing before it has seen a bucket",
          "[forecaster]") {
  Forecaster forecaster = make(daily_options());
  const auto forecast = forecaster.forecast(TimePoint{} + 3min, 1min);
  CHECK_FALSE(forecast.known());
  CHECK(forecast.mean == 0);
  CHECK(forecast.upper == 0);
}

TEST_CASE("forecaster: learns the shape of a day and forecasts the next",
          "[forecaster]") {
  Forecaster forecaster = make(daily_options());
  fnbus::testing::ManualClock clock(TimePoint{});
  feed(forecaster, clock, kDay + 1min, 100ms, half_day_shape);

  const TimePoint day2 = TimePoint{} + kDay;
  const auto morning = forecaster.forecast(day2 + 2min, 0s);
  REQUIRE(morning.known());
  CHECK(morning.periods == 1);
  CHECK(morning.mean == Approx(100));
  const auto evening = forecaster.forecast(day2 + 7min, 0s);
  CHECK(evening.mean == Approx(500));
  // The same rate every tick: no spread, so the quantile is the mean.
  CHECK(evening.upper == Approx(500));
  // A horizon reaching into the busy half forecasts its peak.
  CHECK(forecaster.forecast(day2 + 4min + 30s, 1min).mean == Approx(500));
  // A horizon longer than the season covers all of it.
  CHECK(forecaster.forecast(day2, 100 * kDay).mean == Approx(500));
}

TEST_CASE("forecaster: the upper quantile follows the day-to-day spread",
          "[forecaster]") {
  Forecaster forecaster = make(daily_options());
  fnbus::testing::ManualClock clock(TimePoint{});
  // One day at 100/s, the next at 300/s: the first periods weigh equally,
  // so mean 200, standard deviation 100, and z(0.95) = 1.6449.
  feed(forecaster, clock, kDay, 1s, [](TimePoint) { return 100.0; });
  feed(forecaster, clock, kDay + 1min, 1s, [](TimePoint) { return 300.0; });
  const auto forecast = forecaster.forecast(TimePoint{} + 2 * kDay + 5min, 0s);
  CHECK(forecast.periods == 2);
  CHECK(forecast.mean == Approx(200));
  CHECK(forecast.upper == Approx(200 + 1.6449 * 100).epsilon(1e-4));
}

TEST_CASE("forecaster: a changed shape is learnt at the learning rate",
          "[forecaster]") {
  ForecasterOptions options = daily_options();
  options.learning_rate = 0.5;
  Forecaster forecaster = make(options);
  fnbus::testing::ManualClock clock(TimePoint{});
  feed(forecaster, clock, 5 * kDay, 1s, [](TimePoint) { return 100.0; });
  feed(forecaster, clock, 6 * kDay + 1min, 1s, [](TimePoint) { return 400.0; });
  // Six periods at 400 after five at 100: the old weight is 0.5^6.
  const auto forecast = forecaster.forecast(TimePoint{} + 11 * kDay, 0s);
  CHECK(forecast.mean == Approx(400 - 300 * std::pow(0.5, 6)));
}

TEST_CASE("forecaster: a weekday's own shape replaces the pooled one",
          "[forecaster]") {
  ForecasterOptions options = daily_options();
  options.days_per_week = 7;
  Forecaster forecaster = make(options);
  fnbus::testing::ManualClock clock(TimePoint{});
  // Five weekdays at 100/s, a weekend at 300/s.
  const auto weekly = [](TimePoint t) {
    return (t.time_since_epoch() % (7 * kDay)) < 5 * kDay ? 100.0 : 300.0;
  };
  feed(forecaster, clock, 5 * kDay, 1s, weekly);
  // Before the first Saturday: the same time of any day seen so far.
  const TimePoint saturday = TimePoint{} + 5 * kDay;
  CHECK(forecaster.forecast(saturday + 3min, 0s).mean == Approx(100));
  feed(forecaster, clock, 7 * kDay + 1min, 1s, weekly);
  // A week later: Saturday's own bucket, and Monday's.
  CHECK(forecaster.forecast(saturday + 7 * kDay + 3min, 0s).mean ==
        Approx(300));
  CHECK(forecaster.forecast(TimePoint{} + 14 * kDay + 3min, 0s).mean ==
        Approx(100));
}

TEST_CASE("forecaster: unusable ticks are refused and counted",
          "[forecaster]") {
  Forecaster forecaster = make(daily_options());
  LoadSnapshot load;
  load.now = TimePoint{} + 5min;
  load.tick = 100ms;
  load.arrival_rate_fast = 10;
  REQUIRE(forecaster.observe(load));

  LoadSnapshot bad = load;
  bad.arrival_rate_fast = std::nan("");
  CHECK_FALSE(forecaster.observe(bad));
  bad.arrival_rate_fast = -1;
  CHECK_FALSE(forecaster.observe(bad));
  bad = load;
  bad.tick = 0s;
  CHECK_FALSE(forecaster.observe(bad));
  bad = load;
  bad.now = load.now - 2min;  // an earlier bucket than one already learnt
  CHECK_FALSE(forecaster.observe(bad));
  CHECK(forecaster.ignored() == 4);
  CHECK(forecaster.observed() == 1);
}

// ---------------------------------------------------------------------------
// Saving and loading.

// A forecaster that has learnt two days of half_day_shape, saved.
std::string saved_two_days(const ForecasterOptions& options) {
  Forecaster forecaster = make(options);
  fnbus::testing::ManualClock clock(TimePoint{});
  feed(forecaster, clock, 2 * kDay + 1min, 1s, half_day_shape);
  std::ostringstream out;
  REQUIRE(forecaster.save(out).ok());
  return out.str();
}

absl::Status load_text(Forecaster& forecaster, const std::string& text) {
  std::istringstream in(text);
  return forecaster.load(in);
}

// Checks that a forecaster with `options` refuses `text` with `code` and a
// message containing `says`, and has learnt nothing from it.
void check_refused(const ForecasterOptions& options, const std::string& text,
                   absl::StatusCode code, const std::string& says) {
  Forecaster forecaster = make(options);
  const absl::Status status = load_text(forecaster, text);
  CHECK(status.code() == code);
  CHECK_THAT(std::string(status.message()), Catch::Contains(says));
  CHECK_FALSE(forecaster.forecast(TimePoint{} + 5min, 0s).known());
}

TEST_CASE("forecaster: a loaded file forecasts what the saved one did",
          "[forecaster]") {
  ForecasterOptions options = daily_options();
  options.days_per_week = 7;
  const std::string text = saved_two_days(options);
  Forecaster restarted = make(options);
  REQUIRE(load_text(restarted, text).ok());
  const auto forecast = restarted.forecast(TimePoint{} + 3 * kDay + 6min, 0s);
  CHECK(forecast.periods == 2);  // pooled: Monday and Tuesday
  CHECK(forecast.mean == Approx(500));
  // Saving the loaded state gives the same file.
  std::ostringstream again;
  REQUIRE(restarted.save(again).ok());
  CHECK(again.str() == text);
}

TEST_CASE("forecaster: every truncation of a file is DataLoss",
          "[forecaster]") {
  const std::string text = saved_two_days(daily_options());
  Forecaster forecaster = make(daily_options());
  for (std::size_t length = 0; length < text.size(); ++length) {
    const absl::Status status = load_text(forecaster, text.substr(0, length));
    INFO("truncated to " << length << " bytes: " << status);
    CHECK(status.code() == absl::StatusCode::kDataLoss);
  }
  CHECK_THAT(
      std::string(
          load_text(forecaster, text.substr(0, text.size() / 2)).message()),
      Catch::Contains("truncated"));
  // Nothing was loaded.
  CHECK_FALSE(forecaster.forecast(TimePoint{} + 5min, 0s).known());
}

TEST_CASE("forecaster: a changed byte is DataLoss and loads nothing",
          "[forecaster]") {
  const std::string text = saved_two_days(daily_options());
  std::string corrupted = text;
  const auto digit = corrupted.find("500");
  REQUIRE(digit != std::string::npos);
  corrupted[digit] = '9';
  check_refused(daily_options(), corrupted, absl::StatusCode::kDataLoss,
                "checksum");
}

TEST_CASE("forecaster: a file of another format version is refused",
          "[forecaster]") {
  std::string text = saved_two_days(daily_options());
  REQUIRE(text.rfind("fnbus-forecaster 1\n", 0) == 0);
  text.replace(0, 18, "fnbus-forecaster 2");
  check_refused(daily_options(), text, absl::StatusCode::kFailedPrecondition,
                "format version 2; this fnbus reads version 1");
  check_refused(daily_options(), "not a forecast\n",
                absl::StatusCode::kDataLoss, "does not start with");
}

TEST_CASE("forecaster: a file of another bus or season is refused",
          "[forecaster]") {
  const std::string text = saved_two_days(daily_options());

  ForecasterOptions other_bus = daily_options();
  other_bus.name = "payments";
  check_refused(other_bus, text, absl::StatusCode::kFailedPrecondition,
                "learnt on bus 'checkout', not 'payments'");
  ForecasterOptions other_bucket = daily_options();
  other_bucket.bucket = 2min;
  check_refused(other_bucket, text, absl::StatusCode::kFailedPrecondition,
                "buckets of 60s");
  ForecasterOptions other_week = daily_options();
  other_week.days_per_week = 7;
  check_refused(other_week, text, absl::StatusCode::kFailedPrecondition,
                "1 days a week");
}

TEST_CASE("forecaster: files round-trip and a missing one is NotFound",
          "[forecaster]") {
  std::string dir =
      (std::filesystem::temp_directory_path() / "fnbus-forecast-XXXXXX")
          .string();
  REQUIRE(::mkdtemp(dir.data()) != nullptr);
  const std::string path = dir + "/checkout.forecast";
  Forecaster learnt = make(daily_options());
  fnbus::testing::ManualClock clock(TimePoint{});
  feed(learnt, clock, kDay + 1min, 1s, half_day_shape);
  REQUIRE(learnt.save_file(path).ok());

  Forecaster restarted = make(daily_options());
  REQUIRE(restarted.load_file(path).ok());
  CHECK(restarted.forecast(TimePoint{} + kDay + 7min, 0s).mean == Approx(500));
  std::filesystem::remove_all(dir);
  CHECK(restarted.load_file(path).code() == absl::StatusCode::kNotFound);
  CHECK(learnt.save_file(path).code() == absl::StatusCode::kUnavailable);
}

}  // namespace
