// Tests of the predictive policy (scaling/predictive.hpp).

#include "fnbus/scaling/predictive.hpp"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "fnbus/testing/manual_clock.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::Duration;
using fnbus::TimePoint;
using fnbus::scaling::ErlangSlo;
using fnbus::scaling::LoadSnapshot;
using fnbus::scaling::Predictive;
using fnbus::scaling::PredictiveOptions;
using fnbus::scaling::SloGuard;

constexpr Duration kDay = 10min;
constexpr Duration kTick = 100ms;

// A compressed day of 10 minutes in 10 s buckets, no weekly shape.
PredictiveOptions options() {
  PredictiveOptions options;
  options.forecast.name = "checkout";
  options.forecast.day = kDay;
  options.forecast.days_per_week = 1;
  options.forecast.bucket = 10s;
  return options;
}

std::unique_ptr<Predictive> make(const PredictiveOptions& options) {
  auto policy = Predictive::Create(options);
  REQUIRE(policy.ok());
  return *std::move(policy);
}

// A steady tick at `rate` events/s of 2 ms events on 8 workers.
LoadSnapshot at(TimePoint now, double rate) {
  LoadSnapshot load;
  load.now = now;
  load.tick = kTick;
  load.arrival_rate_fast = rate;
  load.arrival_rate_slow = rate;
  load.service_time_mean = 0.002;
  load.service_time_scv = 1;
  load.workers_running = 8;
  load.min_workers = 1;
  load.max_workers = 64;
  return load;
}

// Decides every tick for `length` from the clock's time, advancing it.
void run(Predictive& policy, fnbus::testing::ManualClock& clock,
         Duration length, const std::function<double(TimePoint)>& rate) {
  const TimePoint end = clock.now() + length;
  while (clock.now() < end) {
    clock.advance(kTick);
    (void)policy.decide(at(clock.now(), rate(clock.now())));
  }
}

// The ErlangSlo staffing for `rate` at the snapshot `load`.
double staffing(const LoadSnapshot& load, double rate) {
  auto model = ErlangSlo::Create(options().guard.slo);
  REQUIRE(model.ok());
  return (*model)->target_for(load, rate);
}

// 1000 events/s in the first half of each day, 5000/s in the second.
double half_day_shape(TimePoint t) {
  return (t.time_since_epoch() % kDay) < kDay / 2 ? 1000.0 : 5000.0;
}

TEST_CASE("predictive: Create names every bad option", "[predictive]") {
  PredictiveOptions bad = options();
  bad.horizon = -1s;
  bad.lead = -2s;
  bad.min_periods = 0;
  bad.forecast.day = 0s;
  bad.guard.panic_ratio = 0.5;
  auto policy = Predictive::Create(bad);
  REQUIRE(policy.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(policy.status().message());
  CHECK_THAT(message, Catch::Contains("horizon is -1s"));
  CHECK_THAT(message, Catch::Contains("lead is -2s"));
  CHECK_THAT(message, Catch::Contains("min_periods is 0"));
  CHECK_THAT(message, Catch::Contains("day is 0s"));
  CHECK_THAT(message, Catch::Contains("panic_ratio is 0.5"));
}

TEST_CASE("predictive: with nothing learnt or announced it is SloGuard",
          "[predictive]") {
  auto policy = make(options());
  auto guard = SloGuard::Create(options().guard);
  REQUIRE(guard.ok());
  fnbus::testing::ManualClock clock(TimePoint{});
  for (const double rate : {1000.0, 3000.0, 500.0}) {
    clock.advance(kTick);
    LoadSnapshot load = at(clock.now(), rate);
    load.arrival_rate_fast = 3 * rate;  // a burst: SloGuard panics
    const auto expected = (*guard)->decide(load);
    const auto decision = policy->decide(load);
    CHECK(decision.target == expected.target);
    CHECK(decision.reason == expected.reason);
    CHECK(decision.panic == expected.panic);
    CHECK(policy->planned_rate() == 0);
  }
}

TEST_CASE("predictive: staffs for tomorrow's peak before it comes",
          "[predictive]") {
  auto policy = make(options());
  fnbus::testing::ManualClock clock(TimePoint{});
  run(*policy, clock, kDay + 2min, half_day_shape);

  // Day 2, 2:00: the forecast (1000/s) is what SloGuard measures.
  CHECK(policy->decide(at(clock.now(), 1000)).reason == "slo-guard");
  // 4:55, 5 s before the busy half, still at 1000/s: staffed for 5000/s.
  run(*policy, clock, 2min + 55s - kTick, half_day_shape);
  const LoadSnapshot before = at(clock.now(), 1000);
  const auto decision = policy->decide(before);
  CHECK(decision.reason == "forecast");
  CHECK(policy->planned_rate() == Approx(5000));
  CHECK(decision.target == Approx(staffing(before, 5000)));
  CHECK(decision.target > staffing(before, 1000));
  // More than forecast: SloGuard's measured staffing wins.
  const auto busier = policy->decide(at(clock.now(), 8000));
  CHECK(busier.reason == "slo-guard");
  CHECK(busier.target == Approx(staffing(before, 8000)));
}

TEST_CASE("predictive: pre-warms for an announced surge and then forgets it",
          "[predictive]") {
  PredictiveOptions lead_1s = options();
  lead_1s.lead = 1s;
  auto policy = make(lead_1s);
  fnbus::testing::ManualClock clock(TimePoint{});
  run(*policy, clock, 1min, [](TimePoint) { return 1000.0; });
  const TimePoint sale = clock.now() + 1min;
  REQUIRE(policy->announce({sale, 30s, 4.0}, clock.now()).ok());
  CHECK(policy->announce({clock.now() - 1s, 30s, 4.0}, clock.now()).code() ==
        absl::StatusCode::kInvalidArgument);

  run(*policy, clock, 1min - 2s, [](TimePoint) { return 1000.0; });
  CHECK(policy->decide(at(clock.now(), 1000)).reason == "slo-guard");
  // Within the lead: the normal rate (1000/s) x 4.
  clock.advance(1s + kTick);
  const LoadSnapshot before = at(clock.now(), 1000);
  const auto decision = policy->decide(before);
  CHECK(decision.reason == "announced-surge");
  CHECK(policy->planned_rate() == Approx(4000));
  CHECK(decision.target == Approx(staffing(before, 4000)));
  // During the sale the measured rate rises; the plan does not compound.
  run(*policy, clock, 10s, [](TimePoint) { return 4000.0; });
  CHECK(policy->planned_rate() == Approx(4000));
  // Once it is over the plan is gone and so is the announcement.
  run(*policy, clock, 21s, [](TimePoint) { return 1000.0; });
  CHECK(policy->planned_rate() == 0);
  CHECK(policy->cancel(sale).code() == absl::StatusCode::kNotFound);
}

TEST_CASE("predictive: an announced surge is not learnt as the usual shape",
          "[predictive]") {
  auto policy = make(options());
  fnbus::testing::ManualClock clock(TimePoint{});
  const TimePoint sale = clock.now() + 2min;
  REQUIRE(policy->announce({sale, 1min, 5.0}, clock.now()).ok());
  const auto with_sale = [sale](TimePoint t) {
    return t > sale && t <= sale + 1min ? 5000.0 : 1000.0;
  };
  run(*policy, clock, kDay + 2min + 20s, with_sale);
  // Day 2, 2:20: the sale's buckets were not learnt, so no forecast.
  (void)policy->decide(at(clock.now(), 1000));
  CHECK(policy->planned_rate() == 0);
  // 3:10: learnt from day 1 at the normal rate.
  run(*policy, clock, 50s, with_sale);
  CHECK(policy->planned_rate() == Approx(1000));
}

TEST_CASE("predictive: announcements from another thread while it decides",
          "[predictive]") {
  PredictiveOptions roomy = options();
  roomy.surges.max_surges = 256;
  auto policy = make(roomy);
  constexpr int kSurges = 200;
  const TimePoint far = TimePoint{} + 24h;
  // Assertions stay on this thread (Catch2 is not thread-safe): the
  // announcer counts its failures.
  int failed = 0;
  std::thread announcer([&] {
    for (int i = 0; i < kSurges; ++i) {
      if (!policy->announce({far + i * 1min, 30s, 2.0}, TimePoint{}).ok()) {
        ++failed;
      }
    }
  });
  fnbus::testing::ManualClock clock(TimePoint{});
  run(*policy, clock, 2min, [](TimePoint) { return 1000.0; });
  announcer.join();
  CHECK(failed == 0);
  int cancelled = 0;
  for (int i = 0; i < kSurges; ++i) {
    cancelled += policy->cancel(far + i * 1min).ok() ? 1 : 0;
  }
  CHECK(cancelled == kSurges);
}

TEST_CASE("predictive: a saved forecast is used after a restart",
          "[predictive]") {
  std::string dir =
      (std::filesystem::temp_directory_path() / "fnbus-predictive-XXXXXX")
          .string();
  REQUIRE(::mkdtemp(dir.data()) != nullptr);
  const std::string path = dir + "/checkout.forecast";
  {
    auto learnt = make(options());
    fnbus::testing::ManualClock clock(TimePoint{});
    run(*learnt, clock, kDay + 10s, half_day_shape);
    REQUIRE(learnt->save_forecast(path).ok());
  }
  auto restarted = make(options());
  REQUIRE(restarted->load_forecast(path).ok());
  (void)restarted->decide(at(TimePoint{} + 3 * kDay + 4min + 55s, 1000));
  CHECK(restarted->planned_rate() == Approx(5000));
  PredictiveOptions other_bus = options();
  other_bus.forecast.name = "payments";
  CHECK(make(other_bus)->load_forecast(path).code() ==
        absl::StatusCode::kFailedPrecondition);
  std::filesystem::remove_all(dir);
}

}  // namespace
