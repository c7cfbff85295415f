// Tests of fnbus::mesh::OutlierDetector, check(), max_ejected() and
// ejection_time(). Time comes from a ManualClock, so every case is
// deterministic; the last one is a bounded stress for TSan.

#include "fnbus/mesh/outlier_detector.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "fnbus/mesh/replica_mask.hpp"
#include "fnbus/random.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace {

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using fnbus::Duration;
using fnbus::mesh::all_replicas;
using fnbus::mesh::OutlierDetector;
using fnbus::mesh::OutlierOptions;
using fnbus::testing::ManualClock;

// 3 failures in a row eject for 10 s (up to 40 s); at most half ejected.
const OutlierOptions kSmall{.consecutive_failures = 3,
                            .base_ejection = 10s,
                            .max_ejection = 40s,
                            .max_ejected_share = 0.5};

std::unique_ptr<OutlierDetector> make(std::size_t replicas,
                                      OutlierOptions options = kSmall) {
  auto detector = OutlierDetector::Create(replicas, options);
  REQUIRE(detector.ok());
  return *std::move(detector);
}

void fail(OutlierDetector& detector, std::size_t replica, int n,
          const ManualClock& clock) {
  for (int i = 0; i < n; ++i) detector.record_failure(replica, clock.now());
}

std::string problem_with(OutlierOptions options) {
  const absl::Status status = fnbus::mesh::check(options);
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  return std::string(status.message());
}

TEST_CASE("outlier_detector: each bad option gives its own Status", "[mesh]") {
  CHECK(fnbus::mesh::check(OutlierOptions{}).ok());
  CHECK(fnbus::mesh::check(kSmall).ok());
  CHECK_THAT(problem_with({.consecutive_failures = 0}),
             Contains("consecutive_failures is 0"));
  CHECK_THAT(problem_with({.base_ejection = 0s}), Contains("base_ejection"));
  CHECK_THAT(problem_with({.base_ejection = -1s}), Contains("base_ejection"));
  CHECK_THAT(problem_with({.base_ejection = 30s, .max_ejection = 10s}),
             Contains("max_ejection"));
  CHECK_THAT(problem_with({.max_ejected_share = -0.1}),
             Contains("max_ejected_share"));
  CHECK_THAT(problem_with({.max_ejected_share = 1.5}),
             Contains("max_ejected_share"));
  CHECK_THAT(problem_with({.max_ejected_share = std::nan("")}),
             Contains("max_ejected_share"));
  // Every problem at once.
  const std::string all = problem_with({.consecutive_failures = 0,
                                        .base_ejection = 0s,
                                        .max_ejection = -1s,
                                        .max_ejected_share = 2.0});
  CHECK_THAT(all, Contains("consecutive_failures") &&
                      Contains("base_ejection") && Contains("max_ejection") &&
                      Contains("max_ejected_share"));
}

TEST_CASE("outlier_detector: zero or too many replicas are refused", "[mesh]") {
  for (std::size_t replicas : {std::size_t{0}, fnbus::mesh::kMaxReplicas + 1}) {
    auto detector = OutlierDetector::Create(replicas, kSmall);
    REQUIRE_FALSE(detector.ok());
    CHECK(detector.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(detector.status().message()),
               Contains("replicas is"));
  }
  CHECK(OutlierDetector::Create(fnbus::mesh::kMaxReplicas, kSmall).ok());
}

TEST_CASE("outlier_detector: max_ejected is the share, one always kept",
          "[mesh]") {
  using fnbus::mesh::max_ejected;
  CHECK(max_ejected(4, 0.5) == 2);
  CHECK(max_ejected(3, 0.5) == 1);
  CHECK(max_ejected(100, 0.29) == 29);  // not 28 from rounding
  CHECK(max_ejected(4, 0.0) == 0);
  CHECK(max_ejected(1, 1.0) == 0);
  CHECK(max_ejected(2, 1.0) == 1);
  CHECK(max_ejected(64, 1.0) == 63);
}

TEST_CASE("outlier_detector: each ejection in a row lasts longer, capped",
          "[mesh]") {
  using fnbus::mesh::ejection_time;
  CHECK(ejection_time(kSmall, 0) == 10s);
  CHECK(ejection_time(kSmall, 1) == 10s);
  CHECK(ejection_time(kSmall, 3) == 30s);
  CHECK(ejection_time(kSmall, 5) == 40s);
  const OutlierOptions huge{.base_ejection = Duration::max() / 2,
                            .max_ejection = Duration::max()};
  CHECK(ejection_time(huge, std::numeric_limits<std::uint32_t>::max()) ==
        Duration::max());
}

TEST_CASE(
    "outlier_detector: ejects after consecutive failures, and a success "
    "resets the streak",
    "[mesh]") {
  ManualClock clock;
  auto detector = make(4);
  fail(*detector, 1, 2, clock);
  detector->record_success(1);
  fail(*detector, 1, 2, clock);
  CHECK_FALSE(detector->ejected(1));  // 2, a success, 2: no streak of 3
  fail(*detector, 1, 1, clock);
  CHECK(detector->ejected(1));
  CHECK(detector->available() == 0b1101);
  const OutlierDetector::Stats stats = detector->stats();
  CHECK(stats.ejections == 1);
  CHECK(stats.ejected == 1);
  CHECK(stats.refused == 0);
}

TEST_CASE("outlier_detector: an ejected replica returns after its cool-down",
          "[mesh]") {
  ManualClock clock;
  auto detector = make(4);
  fail(*detector, 2, 3, clock);
  REQUIRE(detector->ejected(2));
  clock.advance(10s - 1ns);
  CHECK(detector->tick(clock.now()) == 0);
  CHECK(detector->ejected(2));
  clock.advance(1ns);
  CHECK(detector->tick(clock.now()) == 1);
  CHECK_FALSE(detector->ejected(2));
  CHECK(detector->available() == all_replicas(4));
  CHECK(detector->stats().returns == 1);
  CHECK(detector->stats().ejected == 0);
  // A returned replica needs a fresh streak: 2 failures keep it in.
  fail(*detector, 2, 2, clock);
  CHECK_FALSE(detector->ejected(2));
}

TEST_CASE(
    "outlier_detector: a replica failing again at once is ejected for "
    "longer, and a success in between starts over",
    "[mesh]") {
  ManualClock clock;
  auto detector = make(4);
  fail(*detector, 0, 3, clock);
  clock.advance(10s);
  detector->tick(clock.now());
  fail(*detector, 0, 3, clock);  // second in a row: 20 s
  clock.advance(20s - 1ns);
  CHECK(detector->tick(clock.now()) == 0);
  clock.advance(1ns);
  CHECK(detector->tick(clock.now()) == 1);
  detector->record_success(0);  // healthy again: the next one is the first
  fail(*detector, 0, 3, clock);
  clock.advance(10s);
  CHECK(detector->tick(clock.now()) == 1);
}

TEST_CASE(
    "outlier_detector: at most max_ejected_share is out, and one replica "
    "always stays",
    "[mesh]") {
  ManualClock clock;
  SECTION("half of 4") {
    auto detector = make(4);
    for (std::size_t r = 0; r < 4; ++r) fail(*detector, r, 3, clock);
    CHECK(detector->available() == 0b1100);  // 0 and 1 went first
    const OutlierDetector::Stats stats = detector->stats();
    CHECK(stats.ejected == 2);
    CHECK(stats.refused == 2);
  }
  SECTION("a share of 1 still keeps one") {
    OutlierOptions all = kSmall;
    all.max_ejected_share = 1.0;
    auto detector = make(3, all);
    for (std::size_t r = 0; r < 3; ++r) fail(*detector, r, 5, clock);
    CHECK(detector->available() == 0b100);
    CHECK(detector->stats().refused == 3);  // failures 3, 4, 5 of replica 2
  }
  SECTION("a single replica is never ejected") {
    OutlierOptions all = kSmall;
    all.max_ejected_share = 1.0;
    auto detector = make(1, all);
    fail(*detector, 0, 10, clock);
    CHECK_FALSE(detector->ejected(0));
  }
}

TEST_CASE(
    "outlier_detector: a refused ejection happens at the next failure once "
    "there is room",
    "[mesh]") {
  ManualClock clock;
  auto detector = make(2);  // at most 1 of 2
  fail(*detector, 0, 3, clock);
  fail(*detector, 1, 3, clock);
  REQUIRE(detector->ejected(0));
  REQUIRE_FALSE(detector->ejected(1));
  clock.advance(10s);
  detector->tick(clock.now());   // 0 returns
  fail(*detector, 1, 1, clock);  // 1's streak goes on: 4 failures
  CHECK(detector->ejected(1));
  CHECK_FALSE(detector->ejected(0));
}

TEST_CASE("outlier_detector: failures of an ejected replica count nothing",
          "[mesh]") {
  ManualClock clock;
  auto detector = make(4);
  fail(*detector, 3, 3, clock);
  fail(*detector, 3, 10, clock);  // calls picked before the ejection
  CHECK(detector->stats().ejections == 1);
  clock.advance(10s);
  detector->tick(clock.now());
  fail(*detector, 3, 2, clock);  // the streak starts afresh
  CHECK_FALSE(detector->ejected(3));
}

TEST_CASE("outlier_detector: concurrent outcomes never leave none available",
          "[mesh]") {
  constexpr std::size_t kReplicas = 4;
  constexpr int kThreads = 4;
  constexpr int kOutcomes = 20'000;
  auto detector = make(kReplicas, {.consecutive_failures = 2,
                                   .base_ejection = 1ms,
                                   .max_ejection = 4ms,
                                   .max_ejected_share = 1.0});
  ManualClock clock;
  std::atomic<int> none_available{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      fnbus::Random random(static_cast<std::uint64_t>(t) + 100);
      for (int i = 0; i < kOutcomes; ++i) {
        const std::size_t replica = random.uniform_to(kReplicas - 1);
        if (random.uniform01() < 0.6) {
          detector->record_failure(replica, clock.now());
        } else {
          detector->record_success(replica);
        }
        if (t == 0 && i % 16 == 0) clock.advance(1ms);
        detector->tick(clock.now());
        if (detector->available() == 0) {
          none_available.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(none_available.load() == 0);
  const OutlierDetector::Stats stats = detector->stats();
  CHECK(stats.ejections > 0);
  CHECK(stats.ejections - stats.returns == stats.ejected);
  CHECK(stats.ejected == kReplicas - fnbus::mesh::count(detector->available()));
}

}  // namespace
