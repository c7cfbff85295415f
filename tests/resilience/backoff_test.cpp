// Tests of fnbus::resilience::Backoff: the ceiling's growth and cap, the
// jitter's bounds over many draws, and bad options.

#include "fnbus/resilience/backoff.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>

#include <catch2/catch.hpp>

namespace {

using namespace std::chrono_literals;
using fnbus::Duration;
using fnbus::Random;
using fnbus::resilience::Backoff;
using fnbus::resilience::BackoffOptions;
using fnbus::resilience::Jitter;

Backoff make(BackoffOptions options) {
  auto backoff = Backoff::Create(options);
  REQUIRE(backoff.ok());
  return *backoff;
}

std::string problems_of(BackoffOptions options) {
  auto backoff = Backoff::Create(options);
  REQUIRE(backoff.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(backoff.status().message());
}

TEST_CASE("backoff: the ceiling grows by the multiplier up to max",
          "[backoff]") {
  const Backoff backoff = make({.initial = 100ms,
                                .multiplier = 2.0,
                                .max = 1s,
                                .jitter = Jitter::kNone});
  CHECK(backoff.ceiling(0) == 100ms);  // 0 counts as the first retry
  CHECK(backoff.ceiling(1) == 100ms);
  CHECK(backoff.ceiling(2) == 200ms);
  CHECK(backoff.ceiling(3) == 400ms);
  CHECK(backoff.ceiling(4) == 800ms);
  CHECK(backoff.ceiling(5) == 1s);  // 1.6 s, capped
  CHECK(backoff.ceiling(6) == 1s);
}

TEST_CASE("backoff: multiplier 1 is a constant backoff", "[backoff]") {
  const Backoff backoff = make({.initial = 250ms,
                                .multiplier = 1.0,
                                .max = 250ms,
                                .jitter = Jitter::kNone});
  Random random(1);
  for (std::uint32_t retry = 1; retry < 50; ++retry) {
    CHECK(backoff.delay(retry, random) == 250ms);
  }
}

TEST_CASE("backoff: huge retry numbers and multipliers saturate at max",
          "[backoff]") {
  // Under UBSan with float-cast-overflow: converting 1e300 ns to an
  // integer would be undefined behaviour, so the cap must come first.
  const Duration max = Duration::max();
  const Backoff doubling = make(
      {.initial = 1ns, .multiplier = 2.0, .max = max, .jitter = Jitter::kNone});
  CHECK(doubling.ceiling(63) == Duration(std::int64_t{1} << 62));
  CHECK(doubling.ceiling(64) == max);
  CHECK(doubling.ceiling(std::numeric_limits<std::uint32_t>::max()) == max);
  const Backoff steep = make(
      {.initial = 1s, .multiplier = 1e300, .max = 1h, .jitter = Jitter::kFull});
  Random random(2);
  CHECK(steep.ceiling(2) == 1h);
  CHECK(steep.ceiling(1000) == 1h);  // 1e300^999 is inf
  CHECK(steep.delay(1000, random) <= 1h);
  const Backoff full_range = make({.initial = 1ns,
                                   .multiplier = 2.0,
                                   .max = max,
                                   .jitter = Jitter::kEqual});
  const Duration drawn = full_range.delay(100, random);
  CHECK(drawn >= max / 2);
  CHECK(drawn <= max);
}

// `draws` delays for one retry: their range and mean, in nanoseconds.
struct Draws {
  Duration low = Duration::max();
  Duration high = Duration::zero();
  double mean = 0;
};
Draws draw(const Backoff& backoff, std::uint32_t retry, Random& random,
           int draws) {
  Draws out;
  double sum = 0;
  for (int i = 0; i < draws; ++i) {
    const Duration d = backoff.delay(retry, random);
    out.low = std::min(out.low, d);
    out.high = std::max(out.high, d);
    sum += static_cast<double>(d.count());
  }
  out.mean = sum / draws;
  return out;
}

// Full jitter: uniform in [0, ceiling], so mean 1/2 and both ends nearly
// reached. Equal jitter: uniform in [ceiling/2, ceiling], mean 3/4.
TEST_CASE("backoff: jitter draws within its bounds, spread over them",
          "[backoff]") {
  struct Row {
    Jitter jitter;
    double lowest;  // of the ceiling
    double mean;    // of the ceiling
  };
  const Row row =
      GENERATE(Row{Jitter::kFull, 0.0, 0.5}, Row{Jitter::kEqual, 0.5, 0.75});
  INFO("jitter " << fnbus::resilience::to_string(row.jitter));
  const Backoff backoff = make(
      {.initial = 100ms, .multiplier = 3.0, .max = 5s, .jitter = row.jitter});
  Random random(42);
  for (std::uint32_t retry = 1; retry <= 8; ++retry) {
    INFO("retry " << retry);
    const Duration top = backoff.ceiling(retry);
    const auto top_ns = static_cast<double>(top.count());
    const Draws d = draw(backoff, retry, random, 20'000);
    CHECK(static_cast<double>(d.low.count()) >= top_ns * row.lowest);
    CHECK(d.high <= top);
    CHECK(d.mean == Approx(top_ns * row.mean).epsilon(0.02));
    CHECK(static_cast<double>(d.low.count()) < top_ns * (row.lowest + 0.01));
    CHECK(d.high > top - top / 100);
  }
}

TEST_CASE("backoff: a seed gives the same delays", "[backoff]") {
  const Backoff backoff = make({});
  Random a(5);
  Random b(5);
  for (std::uint32_t retry = 1; retry <= 20; ++retry) {
    CHECK(backoff.delay(retry, a) == backoff.delay(retry, b));
  }
}

TEST_CASE("backoff: the defaults are valid: 100 ms doubling to 30 s, full",
          "[backoff]") {
  const Backoff backoff = make({});
  CHECK(backoff.options().jitter == Jitter::kFull);
  CHECK(backoff.ceiling(1) == 100ms);
  CHECK(backoff.ceiling(20) == 30s);
  CHECK(fnbus::resilience::to_string(Jitter::kEqual) == "equal");
}

TEST_CASE("backoff: bad options are InvalidArgument naming each one",
          "[backoff]") {
  CHECK_THAT(problems_of({.initial = 0ns}),
             Catch::Contains("initial is 0 ns; use more than 0"));
  CHECK_THAT(problems_of({.initial = -5ms}), Catch::Contains("initial is"));
  CHECK_THAT(problems_of({.multiplier = 0.5}),
             Catch::Contains("multiplier is 0.5; use a finite number of at "
                             "least 1"));
  CHECK_THAT(
      problems_of({.multiplier = std::numeric_limits<double>::quiet_NaN()}),
      Catch::Contains("multiplier is nan"));
  CHECK_THAT(
      problems_of({.multiplier = std::numeric_limits<double>::infinity()}),
      Catch::Contains("multiplier is inf"));
  CHECK_THAT(problems_of({.initial = 2s, .max = 1s}),
             Catch::Contains("max is 1000000000 ns, below initial"));
  CHECK_THAT(problems_of({.jitter = static_cast<Jitter>(9)}),
             Catch::Contains("jitter is not a Jitter value"));
  // Every problem at once, not only the first.
  const std::string all =
      problems_of({.initial = 0ns, .multiplier = -1, .max = -1ns});
  CHECK_THAT(all, Catch::Contains("initial") && Catch::Contains("multiplier") &&
                      Catch::Contains("max is"));
}

}  // namespace
