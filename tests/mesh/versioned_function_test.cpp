// Tests of fnbus::mesh::VersionedFunction: the judge follows the split,
// an automatic rollback is reported once, the counters by version, and a
// bounded concurrent test in which every routed call is counted once on
// the version it was routed to across deploys and rollbacks.

#include "fnbus/mesh/versioned_function.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "fnbus/random.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::Random;
using fnbus::mesh::CanaryOptions;
using fnbus::mesh::kNoVersion;
using fnbus::mesh::RollbackObserver;
using fnbus::mesh::RollbackReport;
using fnbus::mesh::Route;
using fnbus::mesh::VersionedFunction;
using fnbus::mesh::VersionId;

// Failures alone, judged over short windows.
const CanaryOptions kQuick{
    .max_failure_rate_margin = 0.05,
    .max_p99_ratio = std::numeric_limits<double>::infinity(),
    .window_calls = 50,
    .min_calls = 10,
    .evidence = 3.0};

std::unique_ptr<VersionedFunction> make(RollbackObserver observer = nullptr) {
  auto fn = VersionedFunction::Create("v1", kQuick, std::move(observer));
  REQUIRE(fn.ok());
  return *std::move(fn);
}

TEST_CASE("versioned_function: bad input is refused",
          "[mesh][versioned_function]") {
  CHECK(VersionedFunction::Create("", kQuick).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CanaryOptions nan_margin = kQuick;
  nan_margin.max_failure_rate_margin = std::numeric_limits<double>::quiet_NaN();
  auto bad = VersionedFunction::Create("v1", nan_margin);
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(bad.status().message()),
             Catch::Contains("max_failure_rate_margin is nan"));
  auto fn = make();
  CHECK(fn->deploy_canary("v2", 2.0).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(fn->promote().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(fn->rollback().code() == absl::StatusCode::kFailedPrecondition);
  const VersionedFunction::Stats stats = fn->stats();
  CHECK(stats.deploys == 0);
  CHECK(stats.promotions == 0);
  CHECK(stats.rollbacks == 0);
  CHECK(stats.table.generation == 1);
}

TEST_CASE(
    "versioned_function: a failing canary is rolled back by itself and "
    "reported once",
    "[mesh][versioned_function]") {
  std::vector<RollbackReport> reports;
  VersionedFunction* self = nullptr;
  std::uint64_t automatic_seen_by_observer = 0;
  auto fn = make([&](const RollbackReport& report) {
    reports.push_back(report);
    // Called with no lock held: it may read the function.
    automatic_seen_by_observer = self->stats().automatic_rollbacks;
  });
  self = fn.get();
  auto v2 = fn->deploy_canary("v2", 0.5);
  REQUIRE(v2.ok());
  Random random(3);
  int rolled_back_at = 0;
  for (int i = 1; i <= 400 && rolled_back_at == 0; ++i) {
    const Route route = fn->route(random.next());
    if (fn->record(route, !route.canary, 1ms)) rolled_back_at = i;
  }
  REQUIRE(rolled_back_at > 0);
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].canary == *v2);
  CHECK(reports[0].canary_label == "v2");
  CHECK(reports[0].stable == 1);
  CHECK(reports[0].stable_label == "v1");
  CHECK_THAT(reports[0].reason, Catch::StartsWith("failure rate 1.000"));
  CHECK(automatic_seen_by_observer == 1);
  // Everything goes to v1 now; a late outcome of v2 changes nothing.
  for (int i = 0; i < 100; ++i) CHECK(fn->route(random.next()).version == 1);
  CHECK_FALSE(fn->record(Route{.version = *v2, .canary = true, .generation = 2},
                         false, 1ms));
  const VersionedFunction::Stats stats = fn->stats();
  CHECK(stats.automatic_rollbacks == 1);
  CHECK(stats.rollbacks == 0);
  CHECK(stats.table.generation == reports[0].generation);
  REQUIRE(stats.versions.size() == 2);
  CHECK(stats.versions[0].label == "v1");
  CHECK(stats.versions[0].stable);
  CHECK(stats.versions[0].failures == 0);
  CHECK(stats.versions[1].label == "v2");
  CHECK_FALSE(stats.versions[1].canary);
  CHECK(stats.versions[1].failures == stats.versions[1].calls);
  CHECK(stats.versions[0].calls + stats.versions[1].calls ==
        static_cast<std::uint64_t>(rolled_back_at) + 1);
}

TEST_CASE(
    "versioned_function: a promoted canary is judged no more, a late "
    "verdict changes nothing",
    "[mesh][versioned_function]") {
  int reports = 0;
  auto fn = make([&](const RollbackReport&) { ++reports; });
  auto v2 = fn->deploy_canary("v2", 0.1);
  REQUIRE(v2.ok());
  REQUIRE(fn->promote().ok());
  // v2 is stable now: its failures are a baseline, not a canary's.
  for (int i = 0; i < 100; ++i) {
    CHECK_FALSE(fn->record(
        Route{.version = *v2, .canary = true, .generation = 2}, false, 1ms));
  }
  CHECK(reports == 0);
  const VersionedFunction::Stats stats = fn->stats();
  CHECK(stats.deploys == 1);
  CHECK(stats.promotions == 1);
  CHECK(stats.table.stable == *v2);
  CHECK(stats.versions[1].stable);
  CHECK_FALSE(stats.versions[0].stable);
}

TEST_CASE("versioned_function: a manual rollback, then a new canary",
          "[mesh][versioned_function]") {
  auto fn = make();
  REQUIRE(fn->deploy_canary("v2", 0.2).ok());
  REQUIRE(fn->set_weight(0.4).ok());
  CHECK(fn->stats().table.weight() == Approx(0.4));
  REQUIRE(fn->rollback().ok());
  auto v3 = fn->deploy_canary("v3", 0.2);
  REQUIRE(v3.ok());
  CHECK(*v3 == 3);
  // The baseline: v1 fails none of its calls.
  for (int i = 0; i < 50; ++i) {
    CHECK_FALSE(fn->record(Route{.version = 1, .canary = false}, true, 1ms));
  }
  // A canary refused while one is live keeps the live one's window.
  for (int i = 0; i < 9; ++i) {
    CHECK_FALSE(fn->record(Route{.version = 3, .canary = true}, false, 1ms));
  }
  CHECK(fn->deploy_canary("v4", 0.1).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  // The 10th failure reaches min_calls: the window kept the other 9.
  CHECK(fn->record(Route{.version = 3, .canary = true}, false, 1ms));
  const VersionedFunction::Stats stats = fn->stats();
  CHECK(stats.deploys == 2);
  CHECK(stats.rollbacks == 1);
  CHECK(stats.automatic_rollbacks == 1);
}

TEST_CASE(
    "versioned_function: every routed call is counted once, on its "
    "version, across deploys and rollbacks",
    "[mesh][versioned_function]") {
  std::atomic<std::uint64_t> reported{0};
  auto fn = make([&](const RollbackReport&) {
    reported.fetch_add(1, std::memory_order_relaxed);
  });
  constexpr int kCallers = 2;
  constexpr int kCallsPerCaller = 30'000;
  std::atomic<int> callers_done{0};
  std::atomic<bool> deployed{false};
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      // Start once a canary is live (or after 10 s: then deploys fails
      // below), so that calls overlap changes.
      const auto give_up =
          std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!deployed.load(std::memory_order_acquire) &&
             std::chrono::steady_clock::now() < give_up) {
        std::this_thread::yield();
      }
      Random random(static_cast<std::uint64_t>(c) + 11);
      for (int i = 0; i < kCallsPerCaller; ++i) {
        const Route route = fn->route(random.next());
        // Canaries fail 30% of their calls: some are rolled back by the
        // judge, the rest by the writer below.
        const bool ok = !route.canary || random.uniform01() >= 0.3;
        fn->record(route, ok, std::chrono::microseconds(1));
      }
      callers_done.fetch_add(1, std::memory_order_release);
    });
  }
  Random random(5);
  std::uint64_t deploys = 0;
  for (int change = 0; change < 5'000 &&
                       callers_done.load(std::memory_order_acquire) < kCallers;
       ++change) {
    if (fn->stats().table.canary == kNoVersion) {
      deploys += fn->deploy_canary("v" + std::to_string(change + 2),
                                   random.uniform01())
                         .ok()
                     ? 1
                     : 0;
      deployed.store(deploys > 0, std::memory_order_release);
    } else if (change % 4 == 0) {
      (void)fn->promote();  // may find the judge was first
    } else {
      (void)fn->rollback();
    }
  }
  for (std::thread& caller : callers) caller.join();

  const VersionedFunction::Stats stats = fn->stats();
  std::uint64_t calls = 0;
  for (const VersionedFunction::VersionStats& version : stats.versions) {
    calls += version.calls;
  }
  CHECK(deploys > 1);
  CHECK(calls == std::uint64_t{kCallers} * kCallsPerCaller);
  CHECK(stats.deploys == deploys);
  CHECK(stats.automatic_rollbacks == reported.load());
  CHECK(stats.versions.size() == deploys + 1);
  // Each canary left the table once at most: by promotion, rollback or
  // the judge.
  CHECK(stats.promotions + stats.rollbacks + stats.automatic_rollbacks <=
        deploys);
}

}  // namespace
