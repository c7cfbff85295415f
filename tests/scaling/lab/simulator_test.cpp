// Tests of the policy lab's simulator (scaling/lab/simulator.hpp).

#include "fnbus/scaling/lab/simulator.hpp"

#include <chrono>
#include <cmath>
#include <cstdint>
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
