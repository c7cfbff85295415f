// Tests of fnbus::mesh::check(CanaryOptions), judge() and p99(): each bad
// option named, each test of the rule on hand-made windows (the
// statistical behaviour over many seeds is in canary_judge_test.cpp).

#include "fnbus/mesh/canary_rule.hpp"

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace {

using namespace std::chrono_literals;
using fnbus::Duration;
using fnbus::mesh::CanaryOptions;
using fnbus::mesh::check;
using fnbus::mesh::judge;
using fnbus::mesh::Verdict;
using fnbus::mesh::WindowView;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::string problems_of(CanaryOptions options) {
  const absl::Status status = check(options);
  REQUIRE(status.code() == absl::StatusCode::kInvalidArgument);
  return std::string(status.message());
}

TEST_CASE("canary_rule: the defaults pass check()", "[mesh][canary_rule]") {
  CHECK(check(CanaryOptions{}).ok());
  // Latency judging off: a short window is fine.
  CHECK(
      check({.max_p99_ratio = kInf, .window_calls = 10, .min_calls = 5}).ok());
}

TEST_CASE("canary_rule: check() names each bad option", "[mesh][canary_rule]") {
  CHECK_THAT(problems_of({.max_failure_rate_margin = kNaN}),
             Catch::Contains("max_failure_rate_margin is nan"));
  CHECK_THAT(problems_of({.max_failure_rate_margin = -0.01}),
             Catch::Contains("max_failure_rate_margin is -0.01"));
  CHECK_THAT(problems_of({.max_failure_rate_margin = 1.5}),
             Catch::Contains("in [0, 1]"));
  CHECK_THAT(problems_of({.max_p99_ratio = kNaN}),
             Catch::Contains("max_p99_ratio is nan"));
  CHECK_THAT(problems_of({.max_p99_ratio = 0.9}),
             Catch::Contains("use at least 1"));
  CHECK_THAT(problems_of({.window_calls = 0}),
             Catch::Contains("window_calls is 0; use 1 to 1000000"));
  CHECK_THAT(problems_of({.window_calls = 50, .min_calls = 20}),
             Catch::Contains("too few for a p99"));
  CHECK_THAT(problems_of({.min_calls = 0}), Catch::Contains("min_calls is 0"));
  CHECK_THAT(problems_of({.window_calls = 100, .min_calls = 101}),
             Catch::Contains("min_calls is 101; use 1 to window_calls (100)"));
  CHECK_THAT(problems_of({.evidence = 0.0}), Catch::Contains("evidence is 0"));
  CHECK_THAT(problems_of({.evidence = kNaN}),
             Catch::Contains("evidence is nan"));
  CHECK_THAT(problems_of({.evidence = kInf}),
             Catch::Contains("evidence is inf"));
  // All at once.
  const std::string all = problems_of({.max_failure_rate_margin = kNaN,
                                       .max_p99_ratio = 0.0,
                                       .window_calls = 0,
                                       .min_calls = 0,
                                       .evidence = -1.0});
  for (const char* field : {"max_failure_rate_margin", "max_p99_ratio",
                            "window_calls", "min_calls", "evidence"}) {
    CHECK_THAT(all, Catch::Contains(field));
  }
}

TEST_CASE("canary_rule: p99 is the ceil(0.99 n)-th smallest",
          "[mesh][canary_rule]") {
  CHECK(fnbus::mesh::p99({}) == Duration::zero());
  std::vector<Duration> latencies;
  for (int i = 200; i >= 1; --i) latencies.push_back(Duration(i));
  CHECK(fnbus::mesh::p99(latencies) == Duration(198));
  latencies.resize(100);  // 200 down to 101
  CHECK(fnbus::mesh::p99(latencies) == Duration(199));
  const std::vector<Duration> one{5ms};
  CHECK(fnbus::mesh::p99(one) == 5ms);
}

TEST_CASE("canary_rule: no verdict before min_calls", "[mesh][canary_rule]") {
  const WindowView stable{.calls = 200, .failures = 0, .latencies = {}};
  const WindowView canary{.calls = 49, .failures = 49, .latencies = {}};
  CHECK(judge(stable, canary, {}).kind == Verdict::kTooFewCalls);
}

TEST_CASE("canary_rule: a failure rate above the margin rolls back",
          "[mesh][canary_rule]") {
  const WindowView stable{.calls = 200, .failures = 0, .latencies = {}};
  const Verdict verdict =
      judge(stable, {.calls = 100, .failures = 21, .latencies = {}}, {});
  CHECK(verdict.kind == Verdict::kRollback);
  CHECK(verdict.reason ==
        "failure rate 0.210 > stable 0.000 + margin 0.050 over 100 canary "
        "and 200 stable calls");
  // 12% over 50 calls is not evidence enough of more than 5%.
  CHECK(judge(stable, {.calls = 50, .failures = 6, .latencies = {}}, {}).kind ==
        Verdict::kHealthy);
  CHECK(judge(stable, {.calls = 50, .failures = 8, .latencies = {}}, {}).kind ==
        Verdict::kRollback);
}

TEST_CASE("canary_rule: within the margin is healthy however many calls",
          "[mesh][canary_rule]") {
  // Stable 5%, canary 9%: 4 points worse, margin 5.
  const WindowView stable{
      .calls = 1'000'000, .failures = 50'000, .latencies = {}};
  const WindowView canary{
      .calls = 1'000'000, .failures = 90'000, .latencies = {}};
  CHECK(judge(stable, canary, {}).kind == Verdict::kHealthy);
  // 6 points worse: rolled back.
  const WindowView worse{
      .calls = 1'000'000, .failures = 110'000, .latencies = {}};
  CHECK(judge(stable, worse, {}).kind == Verdict::kRollback);
  // Margin 1: never on failures.
  const WindowView all_failed{
      .calls = 1'000'000, .failures = 1'000'000, .latencies = {}};
  CHECK(judge(stable, all_failed, {.max_failure_rate_margin = 1.0}).kind ==
        Verdict::kHealthy);
}

TEST_CASE("canary_rule: a stable version without calls is no baseline",
          "[mesh][canary_rule]") {
  const WindowView none{.calls = 0, .failures = 0, .latencies = {}};
  CHECK(judge(none, {.calls = 200, .failures = 60, .latencies = {}}, {}).kind ==
        Verdict::kHealthy);
}

TEST_CASE("canary_rule: a p99 above the ratio rolls back",
          "[mesh][canary_rule]") {
  // Stable: 1..200 ms, p99 198 ms; bound 1.5 x = 297 ms.
  std::vector<Duration> stable_latencies;
  for (int i = 1; i <= 200; ++i) stable_latencies.push_back(i * 1ms);
  const WindowView stable{
      .calls = 200, .failures = 0, .latencies = stable_latencies};
  // Canary: 100 calls, 8 of them at 400 ms.
  std::vector<Duration> canary_latencies(92, 10ms);
  canary_latencies.insert(canary_latencies.end(), 8, 400ms);
  const Verdict verdict = judge(
      stable, {.calls = 100, .failures = 0, .latencies = canary_latencies}, {});
  CHECK(verdict.kind == Verdict::kRollback);
  CHECK(verdict.reason ==
        "p99 latency 400.00 ms > 1.5 x stable p99 198.00 ms: 8 of 100 canary "
        "calls slower than 297.00 ms");
  // 2 of 100 slow: a p99 above the bound, but not by enough evidence.
  std::vector<Duration> two_slow(98, 10ms);
  two_slow.insert(two_slow.end(), 2, 400ms);
  CHECK(judge(stable, {.calls = 100, .failures = 0, .latencies = two_slow}, {})
            .kind == Verdict::kHealthy);
  // Latency judging off.
  CHECK(judge(stable,
              {.calls = 100, .failures = 0, .latencies = canary_latencies},
              {.max_p99_ratio = kInf})
            .kind == Verdict::kHealthy);
  // Fewer than 100 stable successes: no p99 to compare with.
  const WindowView thin{.calls = 99,
                        .failures = 0,
                        .latencies = std::span(stable_latencies).first(99)};
  CHECK(judge(thin,
              {.calls = 100, .failures = 0, .latencies = canary_latencies}, {})
            .kind == Verdict::kHealthy);
}

}  // namespace
