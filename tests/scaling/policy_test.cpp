// Tests of the scaling interface (scaling/policy.hpp): callable policies
// and the governor every decision passes through.

#include "fnbus/scaling/policy.hpp"

#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include <catch2/catch.hpp>

namespace {

using namespace std::chrono_literals;
using fnbus::TimePoint;
using fnbus::scaling::Governor;
using fnbus::scaling::GovernorOptions;
using fnbus::scaling::LoadSnapshot;
using fnbus::scaling::ScalingDecision;

LoadSnapshot load_at(std::chrono::seconds when, std::size_t workers) {
  LoadSnapshot load;
  load.now = TimePoint{} + when;
  load.workers_running = workers;
  return load;
}

// A decision for `target` workers of which the window may hold `hold`.
ScalingDecision holding(double target, double hold) {
  ScalingDecision decision{target, "p"};
  decision.hold = hold;
  return decision;
}

Governor make_governor(GovernorOptions options) {
  auto governor = Governor::Create(options);
  REQUIRE(governor.ok());
  return *std::move(governor);
}

TEST_CASE("policy: make_policy wraps a callable and keeps its name",
          "[policy]") {
  int calls = 0;
  auto policy = fnbus::scaling::make_policy(
      "little", [&calls](const LoadSnapshot& load) -> ScalingDecision {
        ++calls;
        return {load.arrival_rate_slow * load.service_time_mean, "little"};
      });
  LoadSnapshot load;
  load.arrival_rate_slow = 200;
  load.service_time_mean = 0.02;
  const ScalingDecision decision = policy->decide(load);
  CHECK(policy->name() == "little");
  CHECK(decision.target == Approx(4.0));
  CHECK(decision.reason == "little");
  CHECK(calls == 1);
}

TEST_CASE("policy: the governor rounds up and clamps to the bounds",
          "[policy]") {
  Governor governor =
      make_governor({.min_workers = 2, .max_workers = 8, .max_up_step = 100});
  auto in_range = governor.apply({3.2, "p"}, load_at(0s, 3));
  CHECK(in_range.workers == 4);
  CHECK_FALSE(in_range.clamped);
  CHECK(in_range.reason == "p");

  auto above = governor.apply({50, "p"}, load_at(1s, 4));
  CHECK(above.workers == 8);
  CHECK(above.clamped);
  auto infinite = governor.apply({std::numeric_limits<double>::infinity(), "p"},
                                 load_at(2s, 8));
  CHECK(infinite.workers == 8);
  CHECK(infinite.clamped);
  CHECK(governor.clamped_count() == 2);
}

TEST_CASE("policy: NaN and negative targets keep the size and are counted",
          "[policy]") {
  Governor governor = make_governor({.min_workers = 1, .max_workers = 8});
  for (const double bad : {std::nan(""), -1.0}) {
    auto verdict = governor.apply({bad, "p"}, load_at(0s, 3));
    CHECK(verdict.invalid);
    CHECK(verdict.workers == 3);
    CHECK(verdict.reason == "invalid-target");
  }
  CHECK(governor.invalid_count() == 2);
}

TEST_CASE("policy: growth per tick is rate-limited unless the policy panics",
          "[policy]") {
  Governor governor = make_governor({.min_workers = 1,
                                     .max_workers = 64,
                                     .max_up_factor = 2.0,
                                     .max_up_step = 4});
  // From 2: at most max(2 * 2, 2 + 4) = 6.
  auto limited = governor.apply({40, "p"}, load_at(0s, 2));
  CHECK(limited.workers == 6);
  CHECK(limited.rate_limited);
  // From 10: at most max(20, 14) = 20.
  CHECK(governor.apply({40, "p"}, load_at(1s, 10)).workers == 20);
  // A panic lifts the limit.
  auto panic = governor.apply({40, "p", /*panic=*/true}, load_at(2s, 2));
  CHECK(panic.workers == 40);
  CHECK_FALSE(panic.rate_limited);
}

TEST_CASE("policy: an unlimited max_up_step grows to the target in one tick",
          "[policy]") {
  // SIZE_MAX means "no step limit": current + step must not wrap round.
  constexpr std::size_t kUnlimited = std::numeric_limits<std::size_t>::max();
  for (const double factor : {1.0, 2.0}) {
    INFO("max_up_factor " << factor);
    Governor governor = make_governor({.min_workers = 1,
                                       .max_workers = 10,
                                       .max_up_factor = factor,
                                       .max_up_step = kUnlimited});
    auto verdict = governor.apply({10, "p"}, load_at(0s, 2));
    CHECK(verdict.workers == 10);
    CHECK_FALSE(verdict.rate_limited);
  }
  // Any step beyond max_workers - R is as good as unlimited.
  Governor near = make_governor({.min_workers = 1,
                                 .max_workers = 1024,
                                 .max_up_factor = 1.0,
                                 .max_up_step = kUnlimited - 1});
  CHECK(near.apply({1024, "p"}, load_at(0s, 1023)).workers == 1024);
  CHECK(near.apply({1024, "p"}, load_at(1s, 1)).workers == 1024);
}

TEST_CASE(
    "policy: a huge finite max_up_factor lifts the growth limit without "
    "overflow",
    "[policy]") {
  // R * factor far beyond SIZE_MAX (or +inf in doubles) saturates at
  // max_workers instead of being cast to an integer.
  for (const double factor :
       {1e300, std::numeric_limits<double>::max(), 1e19, 2e10}) {
    INFO("max_up_factor " << factor);
    Governor governor = make_governor({.min_workers = 1,
                                       .max_workers = 1024,
                                       .max_up_factor = factor,
                                       .max_up_step = 0});
    auto from_two = governor.apply({10, "p"}, load_at(0s, 2));
    CHECK(from_two.workers == 10);
    CHECK_FALSE(from_two.rate_limited);
    CHECK(governor.apply({1024, "p"}, load_at(1s, 1000)).workers == 1024);
  }
  // Ordinary factors still limit: from 2 by 1.5 (ceil 3), step 0.
  Governor modest = make_governor({.min_workers = 1,
                                   .max_workers = 1024,
                                   .max_up_factor = 1.5,
                                   .max_up_step = 0});
  auto limited = modest.apply({10, "p"}, load_at(0s, 2));
  CHECK(limited.workers == 3);
  CHECK(limited.rate_limited);
}

TEST_CASE("policy: max_up_factor must be a finite number of at least 1",
          "[policy]") {
  for (const double bad : {std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::quiet_NaN(), 0.5,
                           -std::numeric_limits<double>::infinity()}) {
    INFO("max_up_factor " << bad);
    auto governor = Governor::Create({.max_up_factor = bad});
    REQUIRE_FALSE(governor.ok());
    CHECK(governor.status().code() == absl::StatusCode::kInvalidArgument);
    const std::string message(governor.status().message());
    CHECK(message.find("max_up_factor is ") != std::string::npos);
    CHECK(message.find("use a finite number >= 1") != std::string::npos);
  }
  auto infinite = Governor::Create(
      {.max_up_factor = std::numeric_limits<double>::infinity()});
  CHECK(std::string(infinite.status().message()).find("max_up_factor is inf") !=
        std::string::npos);
  CHECK(Governor::Create({.max_up_factor = 1e300}).ok());
  CHECK(Governor::Create({.max_up_factor = 1.0}).ok());
}

TEST_CASE(
    "policy: a stabilisation window longer than the clock's range holds "
    "shrinks at the earliest instants",
    "[policy]") {
  // now - down_stabilisation overflows near TimePoint::min(): the window's
  // start must saturate, keeping every recommendation.
  Governor governor =
      make_governor({.min_workers = 1,
                     .max_workers = 64,
                     .max_up_step = 64,
                     .down_stabilisation = fnbus::Duration::max()});
  LoadSnapshot load;
  load.now = TimePoint::min();
  load.workers_running = 16;
  CHECK(governor.apply({16, "burst"}, load).workers == 16);
  load.now = TimePoint::min() + 10s;
  auto held = governor.apply({2, "quiet"}, load);
  CHECK(held.workers == 16);
  CHECK(held.stabilised);
}

TEST_CASE(
    "policy: shrinking waits for the stabilisation window and halves at most",
    "[policy]") {
  Governor governor = make_governor({.min_workers = 1,
                                     .max_workers = 64,
                                     .max_up_step = 64,
                                     .max_down_fraction = 0.5,
                                     .down_stabilisation = 30s});
  CHECK(governor.apply({16, "burst"}, load_at(0s, 16)).workers == 16);
  // Quiet ticks inside the window: held at the window's highest (16).
  auto held = governor.apply({2, "quiet"}, load_at(10s, 16));
  CHECK(held.workers == 16);
  CHECK(held.stabilised);
  CHECK(governor.apply({2, "quiet"}, load_at(29s, 16)).workers == 16);
  // After the window: down, but by at most half per tick.
  auto first_drop = governor.apply({2, "quiet"}, load_at(31s, 16));
  CHECK(first_drop.workers == 8);
  CHECK(first_drop.rate_limited);
  CHECK(governor.apply({2, "quiet"}, load_at(32s, 8)).workers == 4);
  CHECK(governor.apply({2, "quiet"}, load_at(33s, 4)).workers == 2);
  CHECK(governor.apply({2, "quiet"}, load_at(34s, 2)).workers == 2);
}

TEST_CASE("policy: the stabilisation window holds only what a decision lets it",
          "[policy]") {
  const GovernorOptions options{.min_workers = 1,
                                .max_workers = 64,
                                .max_up_step = 64,
                                .max_down_fraction = 0.5,
                                .down_stabilisation = 30s};
  Governor governor = make_governor(options);
  // 24 workers asked for, of which the load needs 10 (the rest drain a
  // backlog): the pool grows to 24, but the window remembers 10.
  CHECK(governor.apply(holding(24, 10), load_at(0s, 12)).workers == 24);
  const ScalingDecision steady = holding(10, 10);
  auto released = governor.apply(steady, load_at(1s, 24));
  CHECK(released.workers == 12);  // at most half per tick
  CHECK(released.rate_limited);
  CHECK_FALSE(released.stabilised);
  CHECK(governor.apply(steady, load_at(2s, 12)).workers == 10);
  // Below the part held: held by the window as before.
  auto held = governor.apply(holding(2, 2), load_at(3s, 10));
  CHECK(held.workers == 10);
  CHECK(held.stabilised);

  // The same decisions without a part to hold (NaN, the default): the
  // whole target is held for the window.
  Governor plain = make_governor(options);
  CHECK(plain.apply({24, "drain"}, load_at(0s, 12)).workers == 24);
  auto kept = plain.apply({10, "steady"}, load_at(1s, 24));
  CHECK(kept.workers == 24);
  CHECK(kept.stabilised);
}

TEST_CASE("policy: a part to hold above the target counts as the target",
          "[policy]") {
  Governor governor = make_governor({.min_workers = 1,
                                     .max_workers = 64,
                                     .max_up_step = 64,
                                     .down_stabilisation = 30s});
  CHECK(governor.apply(holding(4, 40), load_at(0s, 4)).workers == 4);
  // None of it is remembered.
  auto verdict = governor.apply(holding(2, -1), load_at(1s, 4));
  CHECK(verdict.workers == 4);  // held by the 4 remembered above
  CHECK(verdict.stabilised);
}

TEST_CASE("policy: with no stabilisation window a shrink applies at once",
          "[policy]") {
  Governor governor = make_governor({.min_workers = 1,
                                     .max_workers = 8,
                                     .max_down_fraction = 1.0,
                                     .down_stabilisation = 0s});
  CHECK(governor.apply({8, "p"}, load_at(0s, 8)).workers == 8);
  auto verdict = governor.apply({1, "p"}, load_at(1s, 8));
  CHECK(verdict.workers == 1);
  CHECK_FALSE(verdict.stabilised);
}

TEST_CASE("policy: bad governor options are InvalidArgument naming each",
          "[policy]") {
  auto governor = Governor::Create({.min_workers = 0,
                                    .max_workers = 5000,
                                    .max_up_factor = 0.5,
                                    .max_down_fraction = 0,
                                    .down_stabilisation = -1s});
  REQUIRE_FALSE(governor.ok());
  CHECK(governor.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(governor.status().message());
  for (const char* name : {"min_workers", "max_workers", "max_up_factor",
                           "max_down_fraction", "down_stabilisation"}) {
    INFO(name);
    CHECK(message.find(name) != std::string::npos);
  }
  auto inverted = Governor::Create({.min_workers = 4, .max_workers = 2});
  REQUIRE_FALSE(inverted.ok());
  CHECK(std::string(inverted.status().message()).find("max_workers") !=
        std::string::npos);
}

}  // namespace
