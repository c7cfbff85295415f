// Tests of the model-free policies (scaling/policies.hpp): each formula on
// hand-made snapshots, the state machines (KPA panic, AdaptiveCap's limit)
// driven by hand-advanced LoadSnapshot::now, every factory's bad input, and
// determinism. No threads, sleeps or clocks.

#include "fnbus/scaling/policies.hpp"

#include <chrono>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace {

using namespace std::chrono_literals;
using fnbus::TimePoint;
using fnbus::scaling::AdaptiveCap;
using fnbus::scaling::AdaptiveCapAlgorithm;
using fnbus::scaling::Fixed;
using fnbus::scaling::LoadSnapshot;
using fnbus::scaling::ScalingDecision;
using fnbus::scaling::ScalingPolicy;
using fnbus::scaling::TargetConcurrency;
using fnbus::scaling::UtilizationRatio;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// R workers, `in_flight` busy, `queued` waiting.
LoadSnapshot occupancy(std::size_t workers, std::uint64_t in_flight,
                       std::uint64_t queued) {
  LoadSnapshot load;
  load.workers_running = workers;
  load.in_flight = in_flight;
  load.queue_depth = queued;
  load.min_workers = 1;
  load.max_workers = 64;
  return load;
}

// R workers, arrivals at `slow`/`fast` per second, service time `service_s`,
// at `at` since the epoch.
LoadSnapshot arrivals(std::size_t workers, double slow, double fast,
                      double service_s, std::chrono::seconds at) {
  LoadSnapshot load = occupancy(workers, 0, 0);
  load.now = TimePoint(at);
  load.tick = 2s;
  load.arrival_rate_slow = slow;
  load.arrival_rate_fast = fast;
  load.service_time_mean = service_s;
  return load;
}

// R workers with `in_flight` busy and `queued` waiting, service time
// `service_s`.
LoadSnapshot contention(std::size_t workers, std::uint64_t in_flight,
                        std::uint64_t queued, double service_s) {
  LoadSnapshot load = occupancy(workers, in_flight, queued);
  load.service_time_mean = service_s;
  return load;
}

bool mentions(const absl::Status& status, const std::string& word) {
  return std::string(status.message()).find(word) != std::string::npos;
}

// ------------------------------------------------------------------ Fixed

TEST_CASE("policies: Fixed recommends n whatever the load", "[policies]") {
  auto policy = Fixed::Create(3);
  REQUIRE(policy.ok());
  CHECK((*policy)->name() == "fixed");
  for (const LoadSnapshot& load :
       {occupancy(1, 0, 0), occupancy(8, 8, 1'000), occupancy(0, 0, 5)}) {
    const ScalingDecision decision = (*policy)->decide(load);
    CHECK(decision.target == 3);
    CHECK(decision.reason == "fixed");
    CHECK_FALSE(decision.panic);
  }
}

TEST_CASE("policies: Fixed rejects 0 and more than 1024 workers",
          "[policies]") {
  for (const std::size_t n :
       {std::size_t{0}, std::size_t{1025}, static_cast<std::size_t>(-1)}) {
    INFO(n);
    auto policy = Fixed::Create(n);
    REQUIRE_FALSE(policy.ok());
    CHECK(policy.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(mentions(policy.status(), "workers"));
  }
  CHECK(Fixed::Create(1).ok());
  CHECK(Fixed::Create(1024).ok());
}

// ------------------------------------------------------- UtilizationRatio

TEST_CASE("policies: UtilizationRatio is ceil(R * m / u*)", "[policies]") {
  auto policy = UtilizationRatio::Create({.target_utilisation = 0.7});
  REQUIRE(policy.ok());
  CHECK((*policy)->name() == "utilization-ratio");
  struct Case {
    std::size_t workers;
    std::uint64_t in_flight, queued;
    double expected;
  };
  for (const Case& c : {
           Case{4, 4, 3, 10},     // m = 1.75: ceil(4 * 1.75 / 0.7) = 10
           Case{10, 2, 0, 3},     // m = 0.2:  ceil(2.86) = 3
           Case{10, 10, 11, 30},  // 21 / 0.7 is 30.000000000000004 in doubles
           Case{20, 12, 0, 18},   // ratio 0.857, just outside the band
           Case{20, 16, 0, 23},   // ratio 1.143, just outside the band
           Case{5, 0, 0, 0},      // idle: as few as the governor allows
       }) {
    INFO(c.workers << " workers, " << c.in_flight << " in flight, " << c.queued
                   << " queued");
    const ScalingDecision decision =
        (*policy)->decide(occupancy(c.workers, c.in_flight, c.queued));
    CHECK(decision.target == c.expected);
    CHECK(decision.reason == "utilization-ratio");
    CHECK_FALSE(decision.panic);
  }
}

TEST_CASE("policies: UtilizationRatio holds inside the tolerance band",
          "[policies]") {
  auto policy = UtilizationRatio::Create();  // u* = 0.7, tolerance 0.1
  REQUIRE(policy.ok());
  // 20 workers: 13 busy is ratio 0.929, 14 is 1.0, 15 is 1.071.
  for (const std::uint64_t busy : {13, 14, 15}) {
    INFO(busy << " busy");
    const ScalingDecision decision = (*policy)->decide(occupancy(20, busy, 0));
    CHECK(decision.target == 20);
    CHECK(decision.reason == "utilization-hold");
  }
  // A zero tolerance holds only on the target itself.
  auto strict =
      UtilizationRatio::Create({.target_utilisation = 1.0, .tolerance = 0});
  REQUIRE(strict.ok());
  CHECK((*strict)->decide(occupancy(4, 4, 0)).target == 4);
  CHECK((*strict)->decide(occupancy(4, 4, 0)).reason == "utilization-hold");
  CHECK((*strict)->decide(occupancy(4, 4, 1)).target == 5);
  CHECK((*strict)->decide(occupancy(4, 3, 0)).target == 3);
}

TEST_CASE("policies: UtilizationRatio counts an empty pool as one worker",
          "[policies]") {
  auto policy =
      UtilizationRatio::Create({.target_utilisation = 1.0, .tolerance = 0});
  REQUIRE(policy.ok());
  // R = max(1, 0): one queued event is exactly on target, held at 1.
  const ScalingDecision decision = (*policy)->decide(occupancy(0, 0, 1));
  CHECK(decision.target == 1);
  CHECK(decision.reason == "utilization-hold");
  CHECK((*policy)->decide(occupancy(0, 0, 3)).target == 3);
}

TEST_CASE("policies: UtilizationRatio rejects bad options", "[policies]") {
  auto bad =
      UtilizationRatio::Create({.target_utilisation = 0, .tolerance = 1.0});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(mentions(bad.status(), "target_utilisation"));
  CHECK(mentions(bad.status(), "tolerance"));
  for (const double u : {-0.5, 1.01, kNaN}) {
    INFO(u);
    auto policy = UtilizationRatio::Create({.target_utilisation = u});
    REQUIRE_FALSE(policy.ok());
    CHECK(mentions(policy.status(), "target_utilisation"));
  }
  for (const double tolerance : {-0.1, kNaN}) {
    INFO(tolerance);
    auto policy = UtilizationRatio::Create({.tolerance = tolerance});
    REQUIRE_FALSE(policy.ok());
    CHECK(mentions(policy.status(), "tolerance"));
  }
  CHECK(UtilizationRatio::Create({.target_utilisation = 1.0}).ok());
}

// ------------------------------------------------------ TargetConcurrency

TEST_CASE("policies: TargetConcurrency is ceil(lambda S / (t u*))",
          "[policies]") {
  auto policy = TargetConcurrency::Create();  // t = 1, u* = 0.7
  REQUIRE(policy.ok());
  CHECK((*policy)->name() == "target-concurrency");
  // L = 70/s x 0.1 s = 7 busy workers: 7 / 0.7 = 10.
  ScalingDecision decision = (*policy)->decide(arrivals(10, 70, 70, 0.1, 0s));
  CHECK(decision.target == 10);
  CHECK(decision.reason == "kpa-stable");
  CHECK_FALSE(decision.panic);
  // Scale-down follows the slow rate: L = 8 -> ceil(11.43) = 12 from 30.
  decision = (*policy)->decide(arrivals(30, 80, 80, 0.1, 2s));
  CHECK(decision.target == 12);
  // t = 2 events per worker, u* = 1: L = 7 -> ceil(3.5) = 4.
  auto wide =
      TargetConcurrency::Create({.target = 2, .target_utilisation = 1.0});
  REQUIRE(wide.ok());
  CHECK((*wide)->decide(arrivals(4, 70, 70, 0.1, 0s)).target == 4);
}

TEST_CASE("policies: TargetConcurrency keeps the size without estimates",
          "[policies]") {
  auto policy = TargetConcurrency::Create();
  REQUIRE(policy.ok());
  for (const LoadSnapshot& load :
       {arrivals(3, 70, 70, 0, 0s), arrivals(3, 70, 70, kNaN, 0s),
        arrivals(3, kNaN, 70, 0.1, 0s), arrivals(3, 70, -1, 0.1, 0s)}) {
    const ScalingDecision decision = (*policy)->decide(load);
    CHECK(decision.target == 3);
    CHECK(decision.reason == "no-service-estimate");
    CHECK_FALSE(decision.panic);
  }
}

TEST_CASE("policies: TargetConcurrency panics on a burst", "[policies]") {
  auto policy = TargetConcurrency::Create();
  REQUIRE(policy.ok());
  REQUIRE_FALSE((*policy)->decide(arrivals(10, 70, 70, 0.1, 0s)).panic);

  // The fast rate triples: panic desired = 21 / 0.7 = 30 = 3 R >= 2 R.
  ScalingDecision decision = (*policy)->decide(arrivals(10, 70, 210, 0.1, 2s));
  CHECK(decision.panic);
  CHECK(decision.reason == "kpa-panic");
  CHECK(decision.target == 30);
  CHECK((*policy)->in_panic());

  // The threshold is inclusive: panic desired = 20 = 2 R.
  auto fresh = TargetConcurrency::Create();
  REQUIRE(fresh.ok());
  decision = (*fresh)->decide(arrivals(10, 70, 140, 0.1, 0s));
  CHECK(decision.panic);
  CHECK(decision.target == 20);
  // Just below it: panic desired = 19 < 2 R.
  auto calm = TargetConcurrency::Create();
  REQUIRE(calm.ok());
  decision = (*calm)->decide(arrivals(10, 70, 133, 0.1, 0s));
  CHECK_FALSE(decision.panic);
  CHECK(decision.target == 10);
}

TEST_CASE(
    "policies: TargetConcurrency does not shrink in panic and leaves "
    "after the stable window",
    "[policies]") {
  auto policy = TargetConcurrency::Create({.stable_window = 60s});
  REQUIRE(policy.ok());
  // Burst at t = 100 s: over the threshold.
  REQUIRE((*policy)->decide(arrivals(10, 70, 210, 0.1, 100s)).panic);

  // The governor grew the pool to 30; the burst is over (fast 70/s, slow
  // 80/s, stable desired 12) but the panic holds the size.
  for (const auto at : {102s, 130s, 160s}) {
    INFO(at.count() << " s");
    const ScalingDecision decision =
        (*policy)->decide(arrivals(30, 80, 70, 0.1, at));
    CHECK(decision.panic);
    CHECK(decision.reason == "kpa-panic");
    CHECK(decision.target == 30);
  }
  // A larger stable recommendation still wins in panic: 28 / 0.7 = 40.
  CHECK((*policy)->decide(arrivals(30, 280, 70, 0.1, 160s)).target == 40);

  // 60 s after the last tick over the threshold (160 s inclusive), the panic
  // ends and the stable recommendation applies.
  const ScalingDecision after =
      (*policy)->decide(arrivals(30, 80, 70, 0.1, 161s));
  CHECK_FALSE(after.panic);
  CHECK(after.reason == "kpa-stable");
  CHECK(after.target == 12);
  CHECK_FALSE((*policy)->in_panic());
}

TEST_CASE("policies: TargetConcurrency extends the panic on each burst tick",
          "[policies]") {
  auto policy = TargetConcurrency::Create({.stable_window = 60s});
  REQUIRE(policy.ok());
  REQUIRE((*policy)->decide(arrivals(10, 70, 210, 0.1, 0s)).panic);
  // Still over the threshold at 40 s (60 / 30 = 2): panic until 100 s.
  REQUIRE((*policy)->decide(arrivals(30, 70, 420, 0.1, 40s)).panic);
  CHECK((*policy)->decide(arrivals(60, 70, 70, 0.1, 100s)).panic);
  CHECK((*policy)->decide(arrivals(60, 70, 70, 0.1, 100s)).target == 60);
  CHECK_FALSE((*policy)->decide(arrivals(60, 70, 70, 0.1, 101s)).panic);
}

TEST_CASE("policies: TargetConcurrency rejects bad options", "[policies]") {
  auto bad = TargetConcurrency::Create({.target = 0,
                                        .target_utilisation = 1.5,
                                        .panic_threshold = 1.0,
                                        .stable_window = 0s});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  for (const char* name : {"target is", "target_utilisation", "panic_threshold",
                           "stable_window"}) {
    INFO(name);
    CHECK(mentions(bad.status(), name));
  }
  for (const double target :
       {-1.0, kNaN, std::numeric_limits<double>::infinity()}) {
    INFO(target);
    CHECK_FALSE(TargetConcurrency::Create({.target = target}).ok());
  }
  CHECK_FALSE(TargetConcurrency::Create({.target_utilisation = kNaN}).ok());
  CHECK_FALSE(TargetConcurrency::Create({.panic_threshold = kNaN}).ok());
  CHECK_FALSE(TargetConcurrency::Create({.stable_window = -1s}).ok());
}

// ------------------------------------------------------------ AdaptiveCap

TEST_CASE("policies: AdaptiveCap Gradient2 grows while service time holds",
          "[policies]") {
  auto policy = AdaptiveCap::Create();  // Gradient2, tolerance 1.5
  REQUIRE(policy.ok());
  CHECK((*policy)->name() == "adaptive-cap");
  // Starts at R = 10; g = 1: new = 10 + 4, limit = 0.8 * 10 + 0.2 * 14.
  ScalingDecision decision = (*policy)->decide(contention(10, 10, 20, 0.01));
  CHECK((*policy)->limit() == Approx(10.8));
  CHECK(decision.target == 10);
  CHECK(decision.reason == "adaptive-cap-limit");
  CHECK_FALSE(decision.panic);
  decision = (*policy)->decide(contention(10, 10, 20, 0.01));
  CHECK((*policy)->limit() == Approx(11.6));
  CHECK(decision.target == 11);
  // +0.8 per tick while the pool is busy (in_flight >= limit / 2).
  for (int tick = 3; tick <= 20; ++tick) {
    decision = (*policy)->decide(contention(20, 20, 40, 0.01));
    CHECK((*policy)->limit() == Approx(10 + 0.8 * tick));
    CHECK(decision.target == std::floor((*policy)->limit()));
  }
  CHECK((*policy)->long_service_time() == Approx(0.01));
}

TEST_CASE(
    "policies: AdaptiveCap Gradient2 backs off when service time "
    "triples",
    "[policies]") {
  auto policy = AdaptiveCap::Create();
  REQUIRE(policy.ok());
  for (int tick = 0; tick < 20; ++tick) {
    (void)(*policy)->decide(contention(20, 20, 40, 0.01));
  }
  double before = (*policy)->limit();
  REQUIRE(before == Approx(36));  // 20 + 0.8 per tick

  // short = 0.03, long barely moves: g = max(0.5, 1.5 long / short) ~ 0.5.
  ScalingDecision decision = (*policy)->decide(contention(20, 20, 40, 0.03));
  const double long_s = (*policy)->long_service_time();
  CHECK(long_s == Approx(0.01 + 0.02 * 2.0 / 601));
  const double g = std::max(0.5, 1.5 * long_s / 0.03);
  CHECK((*policy)->limit() == Approx(0.8 * before + 0.2 * (before * g + 4)));
  CHECK((*policy)->limit() < before);
  CHECK(decision.target == std::floor((*policy)->limit()));
  CHECK(decision.target < 36);
  // It keeps backing off towards the fixed point of L = 0.9 L + 0.8 (8).
  for (int tick = 0; tick < 30; ++tick) {
    before = (*policy)->limit();
    decision = (*policy)->decide(contention(20, 20, 40, 0.03));
    CHECK((*policy)->limit() < before);
  }
  CHECK(decision.target < 12);
  CHECK(decision.target >= 8);
}

TEST_CASE("policies: AdaptiveCap Gradient2 does not move while app-limited",
          "[policies]") {
  auto policy = AdaptiveCap::Create();
  REQUIRE(policy.ok());
  // 4 busy of a limit of 10: no evidence either way, even if slow.
  for (const double service : {0.01, 0.01, 0.05}) {
    (void)(*policy)->decide(contention(10, 4, 0, service));
    CHECK((*policy)->limit() == 10);
  }
}

TEST_CASE("policies: AdaptiveCap follows demand below its limit",
          "[policies]") {
  auto policy = AdaptiveCap::Create();
  REQUIRE(policy.ok());
  ScalingDecision decision = (*policy)->decide(contention(10, 6, 0, 0.01));
  CHECK(decision.target == 6);  // not the limit of 10.8: no idle threads
  CHECK(decision.reason == "adaptive-cap-demand");
  // Idle: min_workers, not 0.
  LoadSnapshot idle = contention(10, 0, 0, 0.01);
  idle.min_workers = 2;
  decision = (*policy)->decide(idle);
  CHECK(decision.target == 2);
  CHECK(decision.reason == "adaptive-cap-demand");
}

TEST_CASE("policies: AdaptiveCap keeps its limit within the governor bounds",
          "[policies]") {
  auto policy = AdaptiveCap::Create();
  REQUIRE(policy.ok());
  LoadSnapshot load = contention(10, 12, 100, 0.01);
  load.max_workers = 12;
  for (int tick = 0; tick < 50; ++tick) (void)(*policy)->decide(load);
  CHECK((*policy)->limit() == 12);
  CHECK((*policy)->decide(load).target == 12);
  // A first snapshot below min_workers starts the limit at min_workers.
  auto fresh = AdaptiveCap::Create({.algorithm = AdaptiveCapAlgorithm::kAimd});
  REQUIRE(fresh.ok());
  LoadSnapshot empty = contention(0, 0, 10, 0);  // no service time yet
  empty.min_workers = 3;
  const ScalingDecision decision = (*fresh)->decide(empty);
  CHECK((*fresh)->limit() == 3);
  CHECK(decision.target == 3);
  CHECK(decision.reason == "adaptive-cap-limit");
}

TEST_CASE("policies: AdaptiveCap AIMD adds one and cuts by 10 percent",
          "[policies]") {
  auto policy = AdaptiveCap::Create({.algorithm = AdaptiveCapAlgorithm::kAimd});
  REQUIRE(policy.ok());
  // Busy (in_flight * 2 >= limit) at a steady service time: +1 per tick.
  for (int tick = 1; tick <= 10; ++tick) {
    const ScalingDecision decision =
        (*policy)->decide(contention(10, 10, 30, 0.01));
    CHECK((*policy)->limit() == 10 + tick);
    CHECK(decision.target == 10 + tick);
  }
  // Half idle: in_flight * 2 = 18 < 20, no growth.
  (void)(*policy)->decide(contention(10, 9, 30, 0.01));
  CHECK((*policy)->limit() == 20);
  // Service time triples (0.03 > 1.5 long): floor(0.9 L).
  ScalingDecision decision = (*policy)->decide(contention(20, 20, 30, 0.03));
  CHECK((*policy)->limit() == 18);
  CHECK(decision.target == 18);
  decision = (*policy)->decide(contention(20, 20, 30, 0.03));
  CHECK((*policy)->limit() == 16);
  CHECK(decision.target == 16);
  // Back to normal: grows again.
  (void)(*policy)->decide(contention(16, 16, 30, 0.01));
  CHECK((*policy)->limit() == 17);
}

TEST_CASE("policies: AdaptiveCap rejects bad options", "[policies]") {
  auto bad =
      AdaptiveCap::Create({.algorithm = static_cast<AdaptiveCapAlgorithm>(7),
                           .tolerance = 0.9,
                           .long_window = 0,
                           .queue_size_allowance = -1,
                           .smoothing = 0,
                           .backoff_ratio = 1.0});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  for (const char* name :
       {"algorithm", "tolerance", "long_window", "queue_size_allowance",
        "smoothing", "backoff_ratio"}) {
    INFO(name);
    CHECK(mentions(bad.status(), name));
  }
  CHECK_FALSE(AdaptiveCap::Create({.tolerance = kNaN}).ok());
  CHECK_FALSE(AdaptiveCap::Create({.queue_size_allowance = kNaN}).ok());
  CHECK_FALSE(AdaptiveCap::Create({.smoothing = 1.5}).ok());
  CHECK_FALSE(AdaptiveCap::Create({.backoff_ratio = 0.4}).ok());
  CHECK(AdaptiveCap::Create({.tolerance = 1.0, .smoothing = 1.0}).ok());
}

// ----------------------------------------------------------- determinism

// A varied, deterministic run of snapshots: ramps, a burst, a slowdown.
std::vector<LoadSnapshot> scripted_run() {
  std::vector<LoadSnapshot> run;
  for (int i = 0; i < 200; ++i) {
    const double rate = i < 50 ? 10.0 * i : (i < 80 ? 900 : 300 - i);
    const double service = i >= 120 && i < 140 ? 0.03 : 0.01;
    LoadSnapshot load = arrivals(static_cast<std::size_t>(1 + (i * 7) % 40),
                                 rate * 0.8, rate, service, i * 2s);
    load.in_flight = static_cast<std::uint64_t>((i * 13) % 37);
    load.queue_depth = static_cast<std::uint64_t>((i * 29) % 101);
    run.push_back(load);
  }
  return run;
}

std::vector<ScalingDecision> run_fresh(
    const std::function<std::unique_ptr<ScalingPolicy>()>& make) {
  std::unique_ptr<ScalingPolicy> policy = make();
  std::vector<ScalingDecision> decisions;
  for (const LoadSnapshot& load : scripted_run()) {
    decisions.push_back(policy->decide(load));
  }
  return decisions;
}

TEST_CASE("policies: every policy is a pure function of inputs and state",
          "[policies]") {
  const std::vector<
      std::pair<std::string, std::function<std::unique_ptr<ScalingPolicy>()>>>
      factories = {
          {"fixed", [] { return *Fixed::Create(4); }},
          {"utilization-ratio", [] { return *UtilizationRatio::Create(); }},
          {"target-concurrency", [] { return *TargetConcurrency::Create(); }},
          {"gradient2", [] { return *AdaptiveCap::Create(); }},
          {"aimd",
           [] {
             return *AdaptiveCap::Create(
                 {.algorithm = AdaptiveCapAlgorithm::kAimd});
           }},
      };
  for (const auto& [name, make] : factories) {
    INFO(name);
    const std::vector<ScalingDecision> first = run_fresh(make);
    const std::vector<ScalingDecision> second = run_fresh(make);
    REQUIRE(first.size() == second.size());
    bool panicked = false;
    for (std::size_t i = 0; i < first.size(); ++i) {
      INFO("tick " << i);
      CHECK(first[i].target == second[i].target);
      CHECK(first[i].reason == second[i].reason);
      CHECK(first[i].panic == second[i].panic);
      CHECK(std::isfinite(first[i].target));
      CHECK(first[i].target >= 0);
      panicked = panicked || first[i].panic;
    }
    // The run has a burst, and only the KPA panics on it.
    CHECK(panicked == (name == "target-concurrency"));
  }
}

}  // namespace
