// Tests of fnbus::mesh::CanaryJudge: how fast it catches a bad canary and
// how rarely it rolls back a good one, over many seeds (synthetic outcomes
// from a seeded Random: no clock), then its window bookkeeping across
// version changes and a bounded concurrent test for TSan.
//
// The figures (calls to detection, false rollbacks) are printed by the
// hidden case "[mesh][.figures]":
//   build/me/tests/fnbus_tests "[mesh][.figures]"

#include "fnbus/mesh/canary_judge.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "fnbus/random.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::Duration;
using fnbus::Random;
using fnbus::mesh::CanaryJudge;
using fnbus::mesh::CanaryOptions;
using fnbus::mesh::Verdict;
using fnbus::mesh::VersionId;

constexpr VersionId kStable = 1;
constexpr VersionId kCanary = 2;

std::unique_ptr<CanaryJudge> make(CanaryOptions options = {}) {
  auto judge = CanaryJudge::Create(options);
  REQUIRE(judge.ok());
  (*judge)->set_versions(kStable, kCanary);
  return *std::move(judge);
}

// How one version behaves: a failure probability and exponential
// latencies with this mean.
struct Behaviour {
  double failure_rate = 0.0;
  Duration mean_latency = 10ms;
};

std::optional<Verdict> call(CanaryJudge& judge, VersionId version,
                            const Behaviour& behaviour, Random& random) {
  const bool ok = random.uniform01() >= behaviour.failure_rate;
  const auto latency = Duration(static_cast<Duration::rep>(
      random.exponential(static_cast<double>(behaviour.mean_latency.count()))));
  return judge.record(version, ok, latency);
}

// A canary deployed next to a stable version that has filled its window:
// one stable call, then one canary call, until the judge fires or
// `max_canary_calls` canary calls. (The judge keeps a window per version,
// so how the calls interleave does not change what it sees.) Returns the
// canary calls it took to fire, or 0 if it did not.
std::uint64_t canary_calls_to_rollback(std::uint64_t seed,
                                       const Behaviour& stable,
                                       const Behaviour& canary,
                                       std::uint64_t max_canary_calls,
                                       CanaryOptions options = {}) {
  auto judge = make(options);
  Random random(seed);
  for (std::uint32_t i = 0; i < options.window_calls; ++i) {
    (void)call(*judge, kStable, stable, random);
  }
  for (std::uint64_t n = 1; n <= max_canary_calls; ++n) {
    (void)call(*judge, kStable, stable, random);
    if (call(*judge, kCanary, canary, random)) return n;
  }
  return 0;
}

struct Detection {
  std::uint64_t missed = 0;  // seeds where it never fired
  std::uint64_t median = 0;  // canary calls to fire, over the other seeds
  std::uint64_t worst = 0;
  std::uint64_t over_200 = 0;  // seeds that took more than 200
};

Detection detect(std::uint64_t seeds, const Behaviour& stable,
                 const Behaviour& canary, std::uint64_t max_canary_calls,
                 CanaryOptions options = {}) {
  std::vector<std::uint64_t> calls;
  Detection detection;
  for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
    const std::uint64_t n = canary_calls_to_rollback(seed, stable, canary,
                                                     max_canary_calls, options);
    if (n == 0) {
      ++detection.missed;
    } else {
      calls.push_back(n);
      detection.over_200 += n > 200 ? 1 : 0;
    }
  }
  if (!calls.empty()) {
    std::sort(calls.begin(), calls.end());
    detection.median = calls[calls.size() / 2];
    detection.worst = calls.back();
  }
  return detection;
}

// False rollbacks of a canary that behaves exactly like the stable version.
std::uint64_t false_rollbacks(std::uint64_t seeds, const Behaviour& both,
                              std::uint64_t canary_calls,
                              CanaryOptions options = {}) {
  std::uint64_t rolled_back = 0;
  for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
    rolled_back +=
        canary_calls_to_rollback(seed, both, both, canary_calls, options) != 0
            ? 1
            : 0;
  }
  return rolled_back;
}

const Behaviour kHealthy{.failure_rate = 0.0, .mean_latency = 10ms};
const Behaviour kFailing20{.failure_rate = 0.2, .mean_latency = 10ms};
const Behaviour kSlow3x{.failure_rate = 0.0, .mean_latency = 30ms};

TEST_CASE(
    "canary_judge: a canary failing 20% of calls is rolled back within 200 "
    "of its calls",
    "[mesh][canary_judge]") {
  // 1000 seeds; the stable version fails none of its calls.
  const Detection detection = detect(1000, kHealthy, kFailing20, 200);
  CAPTURE(detection.median, detection.worst);
  CHECK(detection.missed == 0);
  CHECK(detection.worst <= 200);
}

TEST_CASE(
    "canary_judge: a canary as good as the stable version is not rolled "
    "back",
    "[mesh][canary_judge]") {
  // 200 seeds x 1000 canary calls at each failure rate, latencies from
  // the same exponential distribution (a heavy tail for p99).
  for (const double rate : {0.0, 0.01, 0.05, 0.2}) {
    CAPTURE(rate);
    CHECK(false_rollbacks(200, {.failure_rate = rate, .mean_latency = 10ms},
                          1000) == 0);
  }
}

TEST_CASE("canary_judge: a canary 3x slower is rolled back on its p99",
          "[mesh][canary_judge]") {
  const Detection detection = detect(200, kHealthy, kSlow3x, 1000);
  CAPTURE(detection.median, detection.worst);
  CHECK(detection.missed == 0);
  // Checked every kLatencyCheckEvery canary calls.
  CHECK(detection.median % CanaryJudge::kLatencyCheckEvery == 0);
}

TEST_CASE("canary_judge: detection figures over many seeds",
          "[mesh_figures][.]") {
  const Detection failing = detect(10'000, kHealthy, kFailing20, 1000);
  WARN("20% failing canary vs 0% stable, 10000 seeds: median "
       << failing.median << ", worst " << failing.worst << " canary calls; "
       << failing.over_200 << " seeds over 200, " << failing.missed
       << " missed");
  const Detection failing_vs_2 = detect(
      10'000, {.failure_rate = 0.02, .mean_latency = 10ms}, kFailing20, 1000);
  WARN("20% failing canary vs 2% stable, 10000 seeds: median "
       << failing_vs_2.median << ", worst " << failing_vs_2.worst
       << " canary calls; " << failing_vs_2.over_200 << " seeds over 200, "
       << failing_vs_2.missed << " missed");
  const Detection slow = detect(10'000, kHealthy, kSlow3x, 2000);
  WARN("3x slower canary (exponential latencies), 10000 seeds: median "
       << slow.median << ", worst " << slow.worst << " canary calls; "
       << slow.over_200 << " seeds over 200, " << slow.missed << " missed");
  for (const double rate : {0.0, 0.01, 0.05, 0.2}) {
    WARN("equal canary at failure rate "
         << rate << ": "
         << false_rollbacks(2000, {.failure_rate = rate, .mean_latency = 10ms},
                            5000)
         << " false rollbacks in 2000 seeds x 5000 canary calls");
  }
}

TEST_CASE("canary_judge: fires once per canary, again for a new one",
          "[mesh][canary_judge]") {
  auto judge = make({.max_p99_ratio = std::numeric_limits<double>::infinity(),
                     .window_calls = 50,
                     .min_calls = 10});
  for (int i = 0; i < 50; ++i) CHECK_FALSE(judge->record(kStable, true, 1ms));
  int fired = 0;
  for (int i = 0; i < 30; ++i) {
    if (auto verdict = judge->record(kCanary, false, 1ms)) {
      ++fired;
      CHECK(verdict->kind == Verdict::kRollback);
      CHECK(i + 1 == 10);  // at min_calls: 10 of 10 failed
    }
  }
  CHECK(fired == 1);
  CHECK(judge->verdict().kind == Verdict::kRollback);  // still true
  // The same canary named again keeps its latch; a new one starts afresh.
  judge->set_versions(kStable, kCanary);
  CHECK_FALSE(judge->record(kCanary, false, 1ms));
  judge->set_versions(kStable, 3);
  CHECK(judge->verdict().kind == Verdict::kTooFewCalls);
  int fired_new = 0;
  for (int i = 0; i < 10; ++i)
    fired_new += judge->record(3, false, 1ms) ? 1 : 0;
  CHECK(fired_new == 1);
}

TEST_CASE(
    "canary_judge: a promoted canary keeps its window, a version that left "
    "counts in totals only",
    "[mesh][canary_judge]") {
  auto judge = make({.max_p99_ratio = std::numeric_limits<double>::infinity(),
                     .window_calls = 50,
                     .min_calls = 10});
  for (int i = 0; i < 20; ++i) (void)judge->record(kCanary, i % 2 == 0, 1ms);
  judge->set_versions(kCanary, fnbus::mesh::kNoVersion);
  // v2 is stable now, with its 20 calls (10 failed) as the baseline: a new
  // canary failing as often is healthy.
  judge->set_versions(kCanary, 3);
  for (int i = 0; i < 20; ++i) (void)judge->record(3, i % 2 == 0, 1ms);
  CHECK(judge->verdict().kind == Verdict::kHealthy);
  // Calls of v1, which left, still count.
  CHECK_FALSE(judge->record(kStable, false, 1ms));
  CHECK(judge->totals(kStable).calls == 1);
  CHECK(judge->totals(kStable).failures == 1);
  CHECK(judge->totals(kCanary).calls == 20);
  CHECK(judge->totals(kCanary).failures == 10);
  CHECK(judge->totals(7).calls == 0);
}

TEST_CASE("canary_judge: the latency baseline follows the stable version",
          "[mesh][canary_judge]") {
  auto judge = make();
  Random random(8);
  // v1 fast (10 ms mean), canary v2 as fast: healthy; the judge now holds
  // v1's p99 as the baseline.
  for (int i = 0; i < 1000; ++i) {
    CHECK_FALSE(call(*judge, kStable, kHealthy, random));
  }
  for (int i = 0; i < 200; ++i) {
    CHECK_FALSE(call(*judge, kCanary, kHealthy, random));
  }
  // A slow v3 becomes stable with only 100 calls: fewer than a quarter of
  // its window, so only its being another version makes the judge find
  // the baseline again. Canary v4 is as slow: healthy.
  judge->set_versions(3, 4);
  for (int i = 0; i < 100; ++i) CHECK_FALSE(call(*judge, 3, kSlow3x, random));
  int fired = 0;
  for (int i = 0; i < 1000; ++i)
    fired += call(*judge, 4, kSlow3x, random) ? 1 : 0;
  CHECK(fired == 0);
  // Against a fast stable version it is rolled back.
  judge->set_versions(kStable, 5);  // v1's window starts again
  for (int i = 0; i < 1000; ++i) (void)call(*judge, kStable, kHealthy, random);
  for (int i = 0; i < 1000; ++i)
    fired += call(*judge, 5, kSlow3x, random) ? 1 : 0;
  CHECK(fired == 1);
}

TEST_CASE("canary_judge: concurrent records are all counted, fired once",
          "[mesh][canary_judge]") {
  auto judge =
      make({.max_p99_ratio = 1.5, .window_calls = 100, .min_calls = 20});
  constexpr int kThreads = 4;
  constexpr int kCallsPerThread = 20'000;
  std::atomic<int> fired{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Random random(static_cast<std::uint64_t>(t) + 7);
      for (int i = 0; i < kCallsPerThread; ++i) {
        const VersionId version = i % 2 == 0 ? kStable : kCanary;
        const bool ok = version == kStable || random.uniform01() >= 0.5;
        if (judge->record(version, ok, Duration(random.uniform_to(1000)))) {
          fired.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(fired.load() == 1);
  CHECK(judge->totals(kStable).calls == kThreads * kCallsPerThread / 2);
  CHECK(judge->totals(kStable).failures == 0);
  CHECK(judge->totals(kCanary).calls == kThreads * kCallsPerThread / 2);
}

}  // namespace
