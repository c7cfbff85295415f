// Tests of the policy lab's simulator (scaling/lab/simulator.hpp).

#include "fnbus/scaling/lab/simulator.hpp"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "fnbus/scaling/slo_policies.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::scaling::LoadSnapshot;
using fnbus::scaling::make_policy;
using fnbus::scaling::ScalingDecision;
using fnbus::scaling::lab::simulate;
using fnbus::scaling::lab::SimulationInput;
using fnbus::scaling::lab::SimulationOptions;
using fnbus::scaling::lab::SimulationResult;

constexpr std::int64_t kMs = 1'000'000;

// Arrivals every `gap_ms` from 0 to `until_ms`.
std::vector<std::int64_t> every(std::int64_t gap_ms, std::int64_t until_ms,
                                std::int64_t from_ms = 0) {
  std::vector<std::int64_t> out;
  for (std::int64_t t = from_ms; t < until_ms; t += gap_ms) {
    out.push_back(t * kMs);
  }
  return out;
}

SimulationInput constant_service(std::vector<std::int64_t> arrivals,
                                 std::int64_t service_ms,
                                 std::int64_t duration_ms) {
  return {std::move(arrivals),
          [service_ms](std::int64_t) { return service_ms * kMs; },
          duration_ms * kMs};
}

SimulationResult run(const SimulationInput& input,
                     fnbus::scaling::ScalingPolicy& policy,
                     const SimulationOptions& options) {
  auto result = simulate(input, policy, options);
  REQUIRE(result.ok());
  return *std::move(result);
}

auto fixed(double n) {
  return make_policy("fixed", [n](const LoadSnapshot&) -> ScalingDecision {
    return {n, "fixed"};
  });
}

TEST_CASE("simulator: a worker that keeps up makes nobody wait",
          "[simulator]") {
  auto policy = fixed(1);
  const SimulationInput input = constant_service(every(10, 1'000), 5, 1'000);
  const SimulationResult result = run(
      input, *policy,
      {.governor = {.min_workers = 1, .max_workers = 4}, .initial_workers = 1});
  CHECK(result.events == 100);
  CHECK(result.slo_violations == 0);
  CHECK(result.wait.max_nanos() == 0);
  CHECK(result.response.max_nanos() == 5 * kMs);
  CHECK(result.worker_seconds == Approx(1.0).epsilon(0.01));
  CHECK(result.scaling_actions == 0);
  CHECK(result.timeline.size() == 10);  // one row per 100 ms tick
}

TEST_CASE("simulator: an overloaded fixed pool queues, handles every event",
          "[simulator]") {
  auto policy = fixed(1);
  // 1 event per ms, 2 ms each: the queue grows by 1 every 2 ms.
  const SimulationInput input = constant_service(every(1, 200), 2, 200);
  const SimulationResult result =
      run(input, *policy,
          {.wait_slo = 20ms,
           .governor = {.min_workers = 1, .max_workers = 1},
           .initial_workers = 1});
  CHECK(result.events == 200);  // the run drains after the last arrival
  // Event k waits k ms; those past 20 ms violate the SLO.
  CHECK(result.wait.max_nanos() == 199 * kMs);
  CHECK(result.slo_violations == 179);
  CHECK(result.violation_fraction() == Approx(179.0 / 200));
}

TEST_CASE("simulator: the same input gives the same result", "[simulator]") {
  std::uint64_t state = 42;
  auto service = [&state](std::int64_t) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    return static_cast<std::int64_t>(1 + (state >> 40) % (4 * kMs));
  };
  const SimulationOptions options{.governor = {.min_workers = 1,
                                               .max_workers = 8,
                                               .down_stabilisation = 1s}};
  auto policy = make_policy("little", [](const LoadSnapshot& load) {
    return ScalingDecision{
        load.arrival_rate_fast * load.service_time_mean / 0.7, "little"};
  });
  std::vector<SimulationResult> results;
  for (int i = 0; i < 2; ++i) {
    state = 42;
    const SimulationInput input{every(1, 3'000), service, 3'000 * kMs};
    results.push_back(run(input, *policy, options));
  }
  CHECK(results[0].events == results[1].events);
  CHECK(results[0].slo_violations == results[1].slo_violations);
  CHECK(results[0].worker_seconds == results[1].worker_seconds);
  CHECK(results[0].scaling_actions == results[1].scaling_actions);
  REQUIRE(results[0].timeline.size() == results[1].timeline.size());
  for (std::size_t i = 0; i < results[0].timeline.size(); ++i) {
    INFO("tick " << i);
    CHECK(results[0].timeline[i].workers == results[1].timeline[i].workers);
  }
}

TEST_CASE("simulator: a load-following policy grows with a step, then shrinks",
          "[simulator]") {
  // 0-2 s: 1 event per 4 ms; 2-4 s: 1 per 0.5 ms (x8); then nothing.
  std::vector<std::int64_t> arrivals;
  for (std::int64_t t = 0; t < 2'000 * kMs; t += 4 * kMs) arrivals.push_back(t);
  for (std::int64_t t = 2'000 * kMs; t < 4'000 * kMs; t += kMs / 2) {
    arrivals.push_back(t);
  }
  const SimulationInput input{arrivals, [](std::int64_t) { return 2 * kMs; },
                              6'000 * kMs};
  auto policy = make_policy("little", [](const LoadSnapshot& load) {
    return ScalingDecision{
        load.arrival_rate_fast * load.service_time_mean / 0.7, "little"};
  });
  const SimulationResult result = run(input, *policy,
                                      {.thread_start_delay = 5ms,
                                       .governor = {.min_workers = 1,
                                                    .max_workers = 16,
                                                    .down_stabilisation = 0s},
                                       .fast_window = 200ms,
                                       .initial_workers = 1});
  std::size_t before_step = 0;
  std::size_t during_step = 0;
  std::size_t at_end = 0;
  for (const auto& row : result.timeline) {
    if (row.time_s < 2.0) before_step = std::max(before_step, row.workers);
    if (row.time_s > 3.0 && row.time_s < 4.0) {
      during_step = std::max(during_step, row.workers);
    }
    at_end = row.workers;
  }
  CHECK(before_step <= 2);
  CHECK(during_step >= 6);  // 2000/s x 2 ms / 0.7 = 5.7
  CHECK(at_end == 1);       // back to the minimum after the load stops
  CHECK(result.events == arrivals.size());
  CHECK(result.scaling_actions > 2);
}

TEST_CASE("simulator: a policy that throws keeps the size and is counted",
          "[simulator]") {
  auto policy =
      make_policy("broken", [](const LoadSnapshot&) -> ScalingDecision {
        throw std::runtime_error("bug in the policy");
      });
  const SimulationInput input = constant_service(every(10, 500), 1, 500);
  const SimulationResult result = run(
      input, *policy,
      {.governor = {.min_workers = 1, .max_workers = 4}, .initial_workers = 3});
  CHECK(result.policy_errors == 5);  // one per tick
  CHECK(result.events == 50);
  for (const auto& row : result.timeline) CHECK(row.workers == 3);
}

TEST_CASE("simulator: NaN and out-of-range targets go through the governor",
          "[simulator]") {
  auto nan_policy = fixed(std::nan(""));
  auto huge_policy = fixed(1e9);
  const SimulationInput input = constant_service(every(10, 300), 1, 300);
  const SimulationOptions options{
      .governor = {.min_workers = 1, .max_workers = 4, .max_up_step = 8}};
  const SimulationResult nan_result = run(input, *nan_policy, options);
  CHECK(nan_result.invalid_targets == 3);
  CHECK(nan_result.timeline.back().workers == 1);
  const SimulationResult huge_result = run(input, *huge_policy, options);
  CHECK(huge_result.clamped_targets == 3);
  CHECK(huge_result.timeline.back().workers == 4);
}

TEST_CASE("simulator: bad input is InvalidArgument", "[simulator]") {
  auto policy = fixed(1);
  SimulationInput unsorted = constant_service({5 * kMs, 1 * kMs}, 1, 100);
  auto result = simulate(unsorted, *policy, {});
  REQUIRE_FALSE(result.ok());
  CHECK(std::string(result.status().message()).find("sorted") !=
        std::string::npos);
  SimulationInput no_service{{}, nullptr, 100 * kMs};
  CHECK(simulate(no_service, *policy, {}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  const SimulationInput fine = constant_service({}, 1, 100);
  CHECK_FALSE(simulate(fine, *policy, {.tick = 0ms}).ok());
  CHECK_FALSE(simulate(fine, *policy, {.governor = {.min_workers = 0}}).ok());
}

// 1 event per ms for 10 s, 0.5 ms each, on one worker: it keeps up
// with half its time spare, so every wait comes from a stall.
SimulationInput half_busy() {
  return {every(1, 10'000), [](std::int64_t) { return kMs / 2; }, 10'000 * kMs};
}

TEST_CASE(
    "simulator: machine stalls pause every worker, and when off change "
    "nothing",
    "[simulator]") {
  const SimulationInput input = half_busy();
  auto policy = fixed(1);
  SimulationOptions options{.governor = {.min_workers = 1, .max_workers = 1}};
  const SimulationResult ideal = run(input, *policy, options);
  CHECK(ideal.stalls == 0);
  CHECK(ideal.slo_violations == 0);

  // Off (rate 0) whatever the other fields say: the same run.
  options.stalls = {.per_second = 0, .length = 1s, .seed = 99};
  const SimulationResult off = run(input, *policy, options);
  CHECK(off.slo_violations == ideal.slo_violations);
  CHECK(off.worker_seconds == ideal.worker_seconds);
  CHECK(off.response.max_nanos() == ideal.response.max_nanos());

  options.stalls = {.per_second = 0.2, .length = 100ms, .seed = 7};
  const SimulationResult stalled = run(input, *policy, options);
  INFO("stalls " << stalled.stalls << ", late " << stalled.slo_violations);
  REQUIRE(stalled.stalls >= 1);
  CHECK(stalled.events == ideal.events);  // the same arrivals, all handled
  // Events that came during a stall waited for its end (the first almost
  // all of it), and those just after it queued behind them: about 160
  // late per stall (100 during it; the spare half-worker then drains the
  // backlog while 60 more wait past 20 ms).
  CHECK(stalled.slo_violations >= 100 * stalled.stalls);
  CHECK(stalled.slo_violations <= 200 * stalled.stalls);
  CHECK(stalled.wait.max_nanos() >= 99 * kMs);
  // The event being handled when a stall began took 100 ms longer.
  CHECK(stalled.response.max_nanos() >= 100 * kMs);
  // Reproducible: the same seed, the same stalls.
  CHECK(run(input, *policy, options).slo_violations == stalled.slo_violations);
}

TEST_CASE("simulator: the controller sees a stall's stretch in service times",
          "[simulator]") {
  const SimulationInput input = half_busy();
  double longest = 0;
  auto policy = make_policy("watch", [&](const LoadSnapshot& load) {
    longest = std::max(longest, load.service_time_mean);
    return ScalingDecision{1, "watch"};
  });
  SimulationOptions options{.governor = {.min_workers = 1, .max_workers = 1}};
  (void)run(input, *policy, options);
  CHECK(longest == Approx(0.0005));
  longest = 0;
  options.stalls = {.per_second = 0.2, .length = 100ms, .seed = 7};
  (void)run(input, *policy, options);
  CHECK(longest > 0.0005);
}

TEST_CASE("simulator: service overshoot multiplies every service time",
          "[simulator]") {
  auto policy = fixed(1);
  const SimulationInput input = constant_service(every(10, 1'000), 5, 1'000);
  const SimulationResult result =
      run(input, *policy,
          {.governor = {.min_workers = 1, .max_workers = 1},
           .service_overshoot = 1.2});
  CHECK(result.events == 100);
  CHECK(result.wait.max_nanos() == 0);
  CHECK(result.response.max_nanos() == 6 * kMs);  // 5 ms drawn, 6 taken
  CHECK(result.response.sum_nanos() == 100 * 6 * kMs);
}

TEST_CASE("simulator: bad stall and overshoot options are InvalidArgument",
          "[simulator]") {
  auto policy = fixed(1);
  const SimulationInput fine = constant_service({}, 1, 100);
  SimulationOptions options;
  options.stalls = {.per_second = -1};
  options.service_overshoot = 0.9;
  auto result = simulate(fine, *policy, options);
  REQUIRE_FALSE(result.ok());
  const std::string message(result.status().message());
  CHECK(message.find("stalls.per_second") != std::string::npos);
  CHECK(message.find("service_overshoot") != std::string::npos);
  options = {};
  options.stalls = {.per_second = 1, .length = 0ms};
  CHECK(std::string(simulate(fine, *policy, options).status().message())
            .find("stalls.length") != std::string::npos);
  options = {};
  options.stalls = {.per_second = std::nan("")};
  CHECK_FALSE(simulate(fine, *policy, options).ok());
  options = {};
  options.service_overshoot = std::numeric_limits<double>::infinity();
  CHECK_FALSE(simulate(fine, *policy, options).ok());
}

// 1 event per 10 ms, 5 ms each, until 1 s; then a burst of 1 per ms, 4 ms
// each (4 workers busy on average), until 2 s.
SimulationInput burst_input(std::vector<fnbus::scaling::lab::Burst> bursts) {
  std::vector<std::int64_t> arrivals = every(10, 1'000);
  for (std::int64_t t : every(1, 2'000, 1'000)) arrivals.push_back(t);
  return {arrivals,
          [](std::int64_t start) {
            return start < 1'000 * kMs ? 5 * kMs : 4 * kMs;
          },
          2'000 * kMs, std::move(bursts)};
}

// One worker until the tick at 1.2 s asks for 16 (panic: no rate limit).
auto late_scaler() {
  return make_policy("late", [](const LoadSnapshot& load) -> ScalingDecision {
    const bool scaled = load.now.time_since_epoch() >= 1'200ms;
    return {scaled ? 16.0 : 1.0, "scripted", /*panic=*/true};
  });
}

TEST_CASE("simulator: recovery from a burst, by capacity and by SLO",
          "[simulator]") {
  // The 16 workers asked for at 1.2 s are ready at 1.205 s. Meanwhile one
  // worker takes the j-th burst event (arrived at 1 s + j ms) at
  // 1 s + 4j ms: it waits 3j ms, over the 20 ms SLO from j = 7, so the
  // ticks ending 1.1, 1.2 and 1.3 s (when the backlog of ~150 events is
  // drained by 16 workers, net 3 per ms) are out of the SLO; from 1.3 s
  // every event is taken at once.
  auto policy = late_scaler();
  const SimulationInput input = burst_input({
      {.start_ns = 1'000 * kMs, .end_ns = 2'000 * kMs, .workers = 16},
      {.start_ns = 1'000 * kMs, .end_ns = 2'000 * kMs, .workers = 17},
      {.start_ns = 500 * kMs, .end_ns = 900 * kMs, .workers = 1},
  });
  const SimulationOptions options{
      .thread_start_delay = 5ms,
      .wait_slo = 20ms,
      .governor = {.min_workers = 1, .max_workers = 16},
      .initial_workers = 1,
      .recovery_ticks = 3};
  const SimulationResult result = run(input, *policy, options);
  REQUIRE(result.recoveries.size() == 3);
  // Capacity: 16 running at 1.205 s; 17 never (the maximum is 16).
  CHECK(result.recoveries[0].capacity_ns == 205 * kMs);
  CHECK_FALSE(result.recoveries[1].capacity_ns.has_value());
  // SLO: the run of in-SLO ticks 1.3-1.4, 1.4-1.5, 1.5-1.6 s begins at
  // 1.3 s, whatever the burst needs in workers.
  CHECK(result.recoveries[0].slo_ns == 300 * kMs);
  CHECK(result.recoveries[1].slo_ns == 300 * kMs);
  // Before the burst one worker is enough and the SLO holds: 0 for both.
  CHECK(result.recoveries[2].capacity_ns == 0);
  CHECK(result.recoveries[2].slo_ns == 0);
}

TEST_CASE("simulator: recovery needs recovery_ticks in a row, inside the burst",
          "[simulator]") {
  auto policy = late_scaler();
  const SimulationInput input = burst_input(
      {{.start_ns = 1'000 * kMs, .end_ns = 2'000 * kMs, .workers = 16}});
  SimulationOptions options{.thread_start_delay = 5ms,
                            .wait_slo = 20ms,
                            .governor = {.min_workers = 1, .max_workers = 16},
                            .initial_workers = 1,
                            .recovery_ticks = 1};
  // One in-SLO tick is enough: still 1.3 s (the tick before is out).
  CHECK(run(input, *policy, options).recoveries[0].slo_ns == 300 * kMs);
  // A run that cannot fit in the burst: 1.3 s + 8 ticks > 2 s.
  options.recovery_ticks = 8;
  CHECK_FALSE(
      run(input, *late_scaler(), options).recoveries[0].slo_ns.has_value());
  // A pool that never grows never recovers.
  options.recovery_ticks = 3;
  auto one = fixed(1);
  const SimulationResult stuck = run(input, *one, options);
  CHECK_FALSE(stuck.recoveries[0].capacity_ns.has_value());
  CHECK_FALSE(stuck.recoveries[0].slo_ns.has_value());
}

TEST_CASE("simulator: bad bursts are InvalidArgument", "[simulator]") {
  auto policy = fixed(1);
  using fnbus::scaling::lab::Burst;
  for (const Burst& burst :
       {Burst{.start_ns = -1, .end_ns = 10},
        Burst{.start_ns = 10, .end_ns = 10},
        Burst{.start_ns = 0, .end_ns = 10, .workers = 0}}) {
    SimulationInput input = constant_service({}, 1, 100);
    input.bursts = {burst};
    auto result = simulate(input, *policy, {});
    REQUIRE_FALSE(result.ok());
    CHECK(std::string(result.status().message()).find("burst") !=
          std::string::npos);
  }
  const SimulationInput fine = constant_service({}, 1, 100);
  CHECK_FALSE(simulate(fine, *policy, {.recovery_ticks = 0}).ok());
}

TEST_CASE("simulator: SloGuard meets the wait SLO through a step",
          "[simulator]") {
  // 0-3 s: 1 event per 2 ms; 3-8 s: 1 per 0.25 ms (x8); 3 ms each.
  std::vector<std::int64_t> arrivals;
  for (std::int64_t t = 0; t < 3'000 * kMs; t += 2 * kMs) arrivals.push_back(t);
  for (std::int64_t t = 3'000 * kMs; t < 8'000 * kMs; t += kMs / 4) {
    arrivals.push_back(t);
  }
  const SimulationInput input{arrivals, [](std::int64_t) { return 3 * kMs; },
                              8'000 * kMs};
  auto guard = fnbus::scaling::SloGuard::Create(
      {.slo = {.wait_slo = 20ms, .epsilon = 0.01}});
  REQUIRE(guard.ok());
  const SimulationOptions options{
      .thread_start_delay = 2ms,
      .wait_slo = 20ms,
      .governor = {.min_workers = 1, .max_workers = 32},
      .initial_workers = 2};
  const SimulationResult result = run(input, **guard, options);
  CHECK(result.events == arrivals.size());
  // Only the first tick of the step waits too long.
  CHECK(result.violation_fraction() < 0.05);
  // Before the step it stays small.
  for (const auto& row : result.timeline) {
    if (row.time_s < 3.0) CHECK(row.workers <= 3);
  }
  // A fixed minimal pool fails the same load badly.
  auto minimal = fixed(2);
  CHECK(run(input, *minimal, options).violation_fraction() > 0.5);
}

}  // namespace
