// Tests of fnbus::mesh::ReplicaSet: validation, leases, failover away from
// an ejected replica and back after its cool-down; the last case is a
// bounded stress for TSan.

#include "fnbus/mesh/replica_set.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "fnbus/random.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace {

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using fnbus::Random;
using fnbus::mesh::Balancing;
using fnbus::mesh::OutlierOptions;
using fnbus::mesh::ReplicaSet;
using fnbus::mesh::ReplicaSetOptions;
using fnbus::testing::ManualClock;

std::unique_ptr<ReplicaSet> make(std::size_t replicas,
                                 ReplicaSetOptions options) {
  auto set = ReplicaSet::Create(replicas, options);
  REQUIRE(set.ok());
  return *std::move(set);
}

std::string problem_with(std::size_t replicas, ReplicaSetOptions options) {
  auto set = ReplicaSet::Create(replicas, options);
  REQUIRE_FALSE(set.ok());
  CHECK(set.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(set.status().message());
}

ReplicaSet::Lease pick(ReplicaSet& set, fnbus::TimePoint now, Random& random,
                       std::optional<std::size_t> avoid = std::nullopt) {
  auto lease = set.pick(now, random, avoid);
  REQUIRE(lease.ok());
  return *std::move(lease);
}

TEST_CASE("replica_set: bad input gives a clear Status", "[mesh]") {
  CHECK_THAT(problem_with(0, {}), Contains("replicas must be >= 1"));
  CHECK_THAT(problem_with(fnbus::mesh::kMaxReplicas + 1, {}),
             Contains("got 65"));
  CHECK_THAT(problem_with(2, {.balancing = static_cast<Balancing>(9)}),
             Contains("balancing is not a Balancing value"));
  CHECK_THAT(
      problem_with(2, {.outlier = OutlierOptions{.consecutive_failures = 0}}),
      Contains("consecutive_failures is 0"));
  // Every problem at once.
  CHECK_THAT(problem_with(0, {.outlier = OutlierOptions{.base_ejection = 0s}}),
             Contains("replicas") && Contains("base_ejection"));
  auto set = make(3, {.outlier = std::nullopt});
  CHECK(set->size() == 3);
  CHECK(set->detector() == nullptr);
  CHECK(set->balancing() == Balancing::kLeastOutstanding);
}

TEST_CASE("replica_set: a lease counts its call until it reports", "[mesh]") {
  ManualClock clock;
  Random random(1);
  auto set = make(2, {.balancing = Balancing::kRoundRobin});
  ReplicaSet::Lease first = pick(*set, clock.now(), random);
  ReplicaSet::Lease second = pick(*set, clock.now(), random);
  CHECK(first.replica() == 0);
  CHECK(second.replica() == 1);
  CHECK(set->loads().in_flight(0) == 1);
  first.on_success();
  first.on_failure(clock.now());  // a second report changes nothing
  CHECK(set->loads().in_flight(0) == 0);
  {
    ReplicaSet::Lease dropped = std::move(second);
  }  // abandoned: no outcome, not in flight
  CHECK(set->loads().in_flight(1) == 0);
}

TEST_CASE(
    "replica_set: a failing replica's events fail over to the others, and "
    "it is back after the cool-down",
    "[mesh]") {
  ManualClock clock;
  Random random(9);
  auto set = make(3, {.balancing = Balancing::kRoundRobin,
                      .outlier = OutlierOptions{.consecutive_failures = 2,
                                                .base_ejection = 30s}});
  // Replica 1 fails every call; 0 and 2 succeed.
  std::array<int, 3> calls{};
  const auto run = [&](int n) {
    for (int i = 0; i < n; ++i) {
      ReplicaSet::Lease lease = pick(*set, clock.now(), random);
      ++calls[lease.replica()];
      if (lease.replica() == 1) {
        lease.on_failure(clock.now());
      } else {
        lease.on_success();
      }
    }
  };
  run(6);  // 0 1 2 0 1 2: the second failure of 1 ejects it
  CHECK(calls == std::array<int, 3>{2, 2, 2});
  CHECK(set->detector()->ejected(1));
  run(100);
  CHECK(calls[1] == 2);  // no pick while ejected
  CHECK(calls[0] + calls[2] == 104);
  clock.advance(30s);
  run(3);
  CHECK(calls[1] == 3);  // back in turn
  CHECK(set->detector()->stats().returns == 1);
}

TEST_CASE("replica_set: a retry avoids the replica it failed on", "[mesh]") {
  Random random(4);
  ManualClock clock;
  auto set = make(2, {});
  for (int i = 0; i < 20; ++i) {
    CHECK(pick(*set, clock.now(), random, 0).replica() == 1);
  }
  // With the other ejected, the avoided one is all there is.
  auto lone = make(2, {.outlier = OutlierOptions{.consecutive_failures = 1}});
  pick(*lone, clock.now(), random, 0).on_failure(clock.now());
  REQUIRE(lone->detector()->ejected(1));
  CHECK(pick(*lone, clock.now(), random, 0).replica() == 0);
}

TEST_CASE("replica_set: without outlier options nothing is ejected", "[mesh]") {
  Random random(2);
  ManualClock clock;
  auto set =
      make(2, {.balancing = Balancing::kRoundRobin, .outlier = std::nullopt});
  for (int i = 0; i < 50; ++i) {
    pick(*set, clock.now(), random).on_failure(clock.now());
  }
  CHECK(set->available() == 0b11);
}

TEST_CASE("replica_set: concurrent picks leave every gauge at 0", "[mesh]") {
  constexpr std::size_t kReplicas = 4;
  constexpr int kThreads = 4;
  constexpr int kCalls = 10'000;
  ManualClock clock;
  for (Balancing balancing :
       {Balancing::kRoundRobin, Balancing::kLeastOutstanding}) {
    auto set =
        make(kReplicas, {.balancing = balancing,
                         .outlier = OutlierOptions{.consecutive_failures = 3,
                                                   .base_ejection = 1ms,
                                                   .max_ejected_share = 0.5}});
    std::atomic<int> failed_picks{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        Random random(static_cast<std::uint64_t>(t) + 1);
        std::vector<ReplicaSet::Lease> held;
        for (int i = 0; i < kCalls; ++i) {
          if (t == 0 && i % 64 == 0) clock.advance(1ms);
          auto lease = set->pick(clock.now(), random);
          if (!lease.ok()) {
            failed_picks.fetch_add(1, std::memory_order_relaxed);
            continue;
          }
          held.push_back(*std::move(lease));
          if (held.size() < 3) continue;
          ReplicaSet::Lease& oldest = held.front();
          // Replica 3 fails 9 calls in 10; the others 1 in 10.
          const bool fails =
              random.uniform01() < (oldest.replica() == 3 ? 0.9 : 0.1);
          fails ? oldest.on_failure(clock.now()) : oldest.on_success();
          held.erase(held.begin());
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    CHECK(failed_picks.load() == 0);
    for (std::size_t r = 0; r < kReplicas; ++r) {
      CHECK(set->loads().in_flight(r) == 0);
    }
    CHECK(set->detector()->stats().ejections > 0);
  }
}

}  // namespace
