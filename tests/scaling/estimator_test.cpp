// Tests of the load estimator (scaling/estimator.hpp).

#include "fnbus/scaling/estimator.hpp"

#include <chrono>
#include <cmath>
#include <string>

#include <catch2/catch.hpp>

namespace {

using namespace std::chrono_literals;
using fnbus::TimePoint;
using fnbus::scaling::EstimatorOptions;
using fnbus::scaling::LoadEstimator;
using fnbus::scaling::LoadSnapshot;
using fnbus::scaling::TickObservation;

LoadEstimator make_estimator(EstimatorOptions options = {.fast_window = 6s,
                                                         .slow_window = 60s,
                                                         .min_workers = 1,
                                                         .max_workers = 8}) {
  auto estimator = LoadEstimator::Create(options);
  REQUIRE(estimator.ok());
  return *std::move(estimator);
}

// Feeds `rate` events/s for `duration` in ticks of 100 ms, starting at
// `start` with `total` events so far; returns the last snapshot.
LoadSnapshot feed(LoadEstimator& estimator, std::chrono::milliseconds& clock,
                  std::uint64_t& total, double rate,
                  std::chrono::milliseconds duration) {
  LoadSnapshot last;
  for (auto t = 0ms; t < duration; t += 100ms) {
    clock += 100ms;
    total += static_cast<std::uint64_t>(std::llround(rate / 10));
    TickObservation tick;
    tick.now = TimePoint{} + clock;
    tick.arrivals_total = total;
    tick.completions_total = total;
    last = estimator.update(tick);
  }
  return last;
}

TEST_CASE("estimator: the first tick sets the baseline, the second the rates",
          "[estimator]") {
  LoadEstimator estimator = make_estimator();
  TickObservation first;
  first.now = TimePoint{} + 10s;
  first.arrivals_total = 5'000;  // since the bus started: not a rate
  first.queue_depth = 3;
  first.workers_running = 2;
  const LoadSnapshot at_start = estimator.update(first);
  CHECK(at_start.arrival_rate_fast == 0);
  CHECK(at_start.tick == fnbus::Duration::zero());
  CHECK(at_start.queue_depth == 3);
  CHECK(at_start.workers() == 2);
  CHECK(at_start.max_workers == 8);

  TickObservation second = first;
  second.now += 500ms;
  second.arrivals_total += 100;  // 200 events/s
  second.completions_total = 50;
  const LoadSnapshot next = estimator.update(second);
  CHECK(next.tick == 500ms);
  CHECK(next.arrival_rate_fast == Approx(200));
  CHECK(next.arrival_rate_slow == Approx(200));
  CHECK(next.completion_rate == Approx(100));
}

TEST_CASE("estimator: the fast average follows a step sooner than the slow",
          "[estimator]") {
  LoadEstimator estimator = make_estimator();
  auto clock = 0ms;
  std::uint64_t total = 0;
  (void)feed(estimator, clock, total, 100, 100ms);  // baseline
  // Longer than the slow window, so that both averages are past their
  // warm-up (the plain mean of the ticks so far).
  LoadSnapshot steady = feed(estimator, clock, total, 100, 70s);
  CHECK(steady.arrival_rate_fast == Approx(100));
  CHECK(steady.arrival_rate_slow == Approx(100));
  // 6 s at 300/s: the fast EWMA (tau 6 s) covers 1 - e^-1 of the step,
  // the slow one (tau 60 s) 1 - e^-0.1.
  LoadSnapshot after = feed(estimator, clock, total, 300, 6s);
  CHECK(after.arrival_rate_fast ==
        Approx(100 + 200 * (1 - std::exp(-1.0))).epsilon(1e-6));
  CHECK(after.arrival_rate_slow ==
        Approx(100 + 200 * (1 - std::exp(-0.1))).epsilon(1e-6));
}

TEST_CASE("estimator: a tick that does not move time changes no average",
          "[estimator]") {
  LoadEstimator estimator = make_estimator();
  auto clock = 0ms;
  std::uint64_t total = 0;
  (void)feed(estimator, clock, total, 100, 100ms);
  const LoadSnapshot before = feed(estimator, clock, total, 100, 1s);
  TickObservation same;
  same.now = TimePoint{} + clock;  // no time passed
  same.arrivals_total = total + 1'000'000;
  same.completions_total = total;
  const LoadSnapshot again = estimator.update(same);
  CHECK(again.tick == fnbus::Duration::zero());
  CHECK(again.arrival_rate_fast == before.arrival_rate_fast);
}

TEST_CASE("estimator: service time starts at the first sample, then smooths",
          "[estimator]") {
  LoadEstimator estimator = make_estimator();
  TickObservation tick;
  tick.now = TimePoint{} + 1s;
  (void)estimator.update(tick);
  tick.now += 100ms;
  tick.service_samples = 10;
  tick.service_time_mean = 0.002;
  tick.service_time_scv = 0.5;
  const LoadSnapshot first = estimator.update(tick);
  CHECK(first.service_time_mean == Approx(0.002));
  CHECK(first.service_time_scv == Approx(0.5));
  // A tick without completions keeps the estimate.
  tick.now += 100ms;
  tick.service_samples = 0;
  tick.service_time_mean = 0;
  CHECK(estimator.update(tick).service_time_mean == Approx(0.002));
  // A slower tick moves it by 1 - e^(-0.1 / 6) of the way.
  tick.now += 100ms;
  tick.service_samples = 10;
  tick.service_time_mean = 0.003;
  const double alpha = 1 - std::exp(-0.1 / 6);
  CHECK(estimator.update(tick).service_time_mean ==
        Approx(0.002 + alpha * 0.001).epsilon(1e-9));
}

TEST_CASE(
    "estimator: a tick's outlier service time counts as at most twice the "
    "estimate, a lasting slowdown still comes through",
    "[estimator]") {
  LoadEstimator estimator = make_estimator();  // fast window 6 s
  TickObservation tick;
  tick.now = TimePoint{} + 1s;
  (void)estimator.update(tick);
  tick.service_samples = 100;
  tick.service_time_mean = 0.002;
  tick.now += 100ms;
  REQUIRE(estimator.update(tick).service_time_mean == Approx(0.002));
  // A machine stall stretched the events in flight: one tick's mean is
  // ten times the usual. It moves the estimate as a tick at twice would.
  tick.now += 100ms;
  tick.service_time_mean = 0.020;
  const double alpha = 1 - std::exp(-0.1 / 6);
  const LoadSnapshot stalled = estimator.update(tick);
  CHECK(stalled.service_time_mean ==
        Approx(0.002 + alpha * 0.002).epsilon(1e-9));
  CHECK(stalled.service_time_mean < 0.0021);
  // A lasting tenfold slowdown: past 90 % of it within 30 s (5 windows).
  for (int i = 0; i < 300; ++i) {
    tick.now += 100ms;
    (void)estimator.update(tick);
  }
  tick.now += 100ms;
  CHECK(estimator.update(tick).service_time_mean > 0.018);
}

TEST_CASE(
    "estimator: a burst in a bus's first ticks counts for its ticks, not "
    "for a whole window",
    "[estimator]") {
  LoadEstimator estimator = make_estimator();  // windows 6 s and 60 s
  auto clock = 0ms;
  std::uint64_t total = 0;
  (void)feed(estimator, clock, total, 0, 100ms);  // baseline
  // 2000 events in the first tick (20 000/s), then nothing.
  const LoadSnapshot burst = feed(estimator, clock, total, 20'000, 100ms);
  CHECK(burst.arrival_rate_slow == Approx(20'000));
  CHECK(burst.arrival_rate_last == Approx(20'000));
  const LoadSnapshot later = feed(estimator, clock, total, 0, 9'900ms);
  // Younger than the slow window: the mean over the 10 s so far, where an
  // EWMA started at the first tick would still be at 20 000 e^(-9.9/60).
  CHECK(later.arrival_rate_slow == Approx(2'000 / 10.0).epsilon(1e-6));
  CHECK(later.arrival_rate_fast <= later.arrival_rate_slow);
  CHECK(later.arrival_rate_last == 0);
}

TEST_CASE("estimator: observe differences two metrics snapshots",
          "[estimator]") {
  fnbus::metrics::MetricsSnapshot before;
  before.taken_at = TimePoint{} + 1s;
  auto& b = before.events.emplace_back();
  b.event = "E";
  b.published = 10;
  b.dispatched = 8;
  b.end_to_end.add(3'000'000, 8);  // 3 ms each
  b.queue_wait.add(1'000'000, 8);  // 1 ms each
  auto& bf = before.functions.emplace_back();
  bf.event = "E";
  bf.function = "f";
  bf.run_time.add(2'000'000, 8);

  fnbus::metrics::MetricsSnapshot after = before;
  after.taken_at = TimePoint{} + 2s;
  auto& a = after.events[0];
  a.published = 30;
  a.dispatched = 28;
  a.dead_lettered = 1;
  a.end_to_end.add(5'000'000, 20);  // 5 ms each
  a.queue_wait.add(1'000'000, 20);
  after.functions[0].run_time.add(4'000'000, 20);
  after.gauges.queue_depth = 1;
  after.gauges.workers = 4;
  after.gauges.workers_busy = 3;

  const TickObservation tick = fnbus::scaling::observe(before, after);
  CHECK(tick.now == after.taken_at);
  CHECK(tick.arrivals_total == 30);
  CHECK(tick.completions_total == 29);
  CHECK(tick.queue_depth == 1);
  CHECK(tick.workers_running == 4);
  CHECK(tick.busy_fraction == Approx(0.75));
  CHECK(tick.service_samples == 20);
  // 20 events of 5 ms end to end, 1 ms of it waiting: 4 ms of service.
  CHECK(tick.service_time_mean == Approx(0.004));
  // All new run times are 4 ms: no spread (midpoint error < 1/128).
  CHECK(tick.service_time_scv == Approx(0).margin(1e-6));
  CHECK(tick.service_time_p99 == Approx(0.004).epsilon(0.01));
  CHECK(tick.wait_p99 == Approx(0.001).epsilon(0.01));
  // 20 arrivals in 1 s and 1 queued: the oldest came 1/20 s ago.
  CHECK(tick.oldest_wait == Approx(0.05));
  CHECK(tick.workers_starting == 0);
}

TEST_CASE("estimator: observe estimates the oldest queued event's wait",
          "[estimator]") {
  fnbus::metrics::MetricsSnapshot before;
  before.taken_at = TimePoint{} + 1s;
  before.events.emplace_back().event = "E";
  fnbus::metrics::MetricsSnapshot after = before;
  after.taken_at = TimePoint{} + 1100ms;  // a 100 ms tick
  after.events[0].published = 50;
  after.gauges.workers = 3;
  after.gauges.workers_starting = 1;

  CHECK(fnbus::scaling::observe(before, after).oldest_wait == 0);  // empty
  after.gauges.queue_depth = 10;  // the last 10 of 50: 1/5 of the tick
  CHECK(fnbus::scaling::observe(before, after).oldest_wait == Approx(0.02));
  after.gauges.queue_depth = 100;  // more than arrived: older than the tick
  CHECK(fnbus::scaling::observe(before, after).oldest_wait == Approx(0.2));
  after.events[0].published = 0;  // nothing arrived, the queue stood still
  after.gauges.queue_depth = 3;
  CHECK(fnbus::scaling::observe(before, after).oldest_wait == Approx(0.3));
  const TickObservation tick = fnbus::scaling::observe(before, after);
  CHECK(tick.workers_starting == 1);
  CHECK(tick.workers_running == 2);
}

TEST_CASE("estimator: bad options are InvalidArgument naming each",
          "[estimator]") {
  auto estimator = LoadEstimator::Create({.fast_window = 0s,
                                          .slow_window = -1s,
                                          .min_workers = 3,
                                          .max_workers = 2});
  REQUIRE_FALSE(estimator.ok());
  const std::string message(estimator.status().message());
  CHECK(message.find("fast_window") != std::string::npos);
  CHECK(message.find("slow_window") != std::string::npos);
  CHECK(message.find("min_workers") != std::string::npos);
}

}  // namespace
