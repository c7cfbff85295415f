// Tests of fnbus::mesh::RoundRobinBalancer and LeastOutstandingBalancer.
// Draws come from seeded Randoms, so every count below is deterministic;
// the bounds around expected shares are wide enough to hold for any
// seed a reasonable generator gives.

#include "fnbus/mesh/load_balancer.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include <catch2/catch.hpp>

#include "fnbus/mesh/replica_loads.hpp"
#include "fnbus/mesh/replica_mask.hpp"
#include "fnbus/random.hpp"

namespace {

using fnbus::Random;
using fnbus::mesh::all_replicas;
using fnbus::mesh::Balancing;
using fnbus::mesh::LeastOutstandingBalancer;
using fnbus::mesh::LoadBalancer;
using fnbus::mesh::make_balancer;
using fnbus::mesh::ReplicaLoads;
using fnbus::mesh::ReplicaMask;
using fnbus::mesh::RoundRobinBalancer;

// `n` picks over `available`; each must succeed.
std::vector<std::size_t> picks(LoadBalancer& balancer, ReplicaMask available,
                               const ReplicaLoads& loads, Random& random,
                               int n) {
  std::vector<std::size_t> out;
  for (int i = 0; i < n; ++i) {
    std::optional<std::size_t> replica = balancer.pick(
        {.available = available, .loads = loads, .random = random});
    REQUIRE(replica.has_value());
    out.push_back(*replica);
  }
  return out;
}

// Holds `n` calls in flight on `replica`.
std::vector<ReplicaLoads::InFlight> hold(ReplicaLoads& loads,
                                         std::size_t replica, int n) {
  std::vector<ReplicaLoads::InFlight> held;
  for (int i = 0; i < n; ++i) held.push_back(loads.begin(replica));
  return held;
}

TEST_CASE("load_balancer: a replica mask counts and finds its replicas",
          "[mesh]") {
  using fnbus::mesh::nth_replica;
  CHECK(all_replicas(1) == 0b1);
  CHECK(all_replicas(4) == 0b1111);
  CHECK(all_replicas(fnbus::mesh::kMaxReplicas) == ~ReplicaMask{0});
  CHECK(fnbus::mesh::count(0b1011'0000) == 3);
  CHECK(nth_replica(0b1011'0000, 0) == 4);
  CHECK(nth_replica(0b1011'0000, 1) == 5);
  CHECK(nth_replica(0b1011'0000, 2) == 7);
  CHECK(nth_replica(~ReplicaMask{0}, 63) == 63);
}

TEST_CASE("load_balancer: round-robin takes each replica in turn", "[mesh]") {
  RoundRobinBalancer balancer;
  ReplicaLoads loads(4);
  Random random(1);
  CHECK(picks(balancer, all_replicas(4), loads, random, 9) ==
        std::vector<std::size_t>{0, 1, 2, 3, 0, 1, 2, 3, 0});
  // Over 64 replicas, replica 0 ejected: each of the others once.
  RoundRobinBalancer wide;
  std::vector<std::size_t> expected(63);
  for (std::size_t i = 0; i < 63; ++i) expected[i] = i + 1;
  CHECK(picks(wide, ~ReplicaMask{1}, loads, random, 63) == expected);
}

TEST_CASE("load_balancer: round-robin skips replicas not available", "[mesh]") {
  RoundRobinBalancer balancer;
  ReplicaLoads loads(4);
  Random random(1);
  const ReplicaMask without_1 = 0b1101;
  CHECK(picks(balancer, without_1, loads, random, 6) ==
        std::vector<std::size_t>{0, 2, 3, 0, 2, 3});
  // Round-robin is blind to load: a busy replica still gets its turn.
  auto busy = hold(loads, 2, 10);
  CHECK(picks(balancer, without_1, loads, random, 3) ==
        std::vector<std::size_t>{0, 2, 3});
}

TEST_CASE("load_balancer: an empty set gives no replica", "[mesh]") {
  ReplicaLoads loads(2);
  Random random(1);
  for (Balancing kind :
       {Balancing::kRoundRobin, Balancing::kLeastOutstanding}) {
    auto balancer = make_balancer(kind);
    CHECK(balancer->balancing() == kind);
    CHECK_FALSE(
        balancer->pick({.available = 0, .loads = loads, .random = random})
            .has_value());
  }
}

TEST_CASE("load_balancer: least-outstanding picks the less loaded of two",
          "[mesh]") {
  LeastOutstandingBalancer balancer;
  ReplicaLoads loads(2);
  Random random(7);
  auto busy = hold(loads, 0, 3);
  auto light = hold(loads, 1, 1);
  for (std::size_t replica : picks(balancer, 0b11, loads, random, 100)) {
    CHECK(replica == 1);
  }
}

TEST_CASE(
    "load_balancer: least-outstanding never picks the busiest, and picks "
    "the idlest most",
    "[mesh]") {
  // Loads 0, 1, 2, 3: of the 6 pairs, replica 0 wins the 3 it is in,
  // replica 1 wins 2, replica 2 wins 1 and replica 3 none.
  LeastOutstandingBalancer balancer;
  ReplicaLoads loads(4);
  std::vector<ReplicaLoads::InFlight> held;
  for (std::size_t r = 1; r < 4; ++r) {
    for (auto& token : hold(loads, r, static_cast<int>(r))) {
      held.push_back(std::move(token));
    }
  }
  Random random(11);
  std::array<int, 4> counts{};
  for (std::size_t replica :
       picks(balancer, all_replicas(4), loads, random, 6000)) {
    ++counts[replica];
  }
  CHECK(counts[3] == 0);
  CHECK(counts[0] > 2700);  // 3000 expected
  CHECK(counts[0] < 3300);
  CHECK(counts[1] > 1800);  // 2000 expected
  CHECK(counts[1] < 2200);
  CHECK(counts[2] > 850);  // 1000 expected
  CHECK(counts[2] < 1150);
}

TEST_CASE(
    "load_balancer: least-outstanding spreads evenly over equal loads and "
    "only over available replicas",
    "[mesh]") {
  LeastOutstandingBalancer balancer;
  ReplicaLoads loads(5);
  Random random(3);
  const ReplicaMask without_2 = 0b11011;
  std::array<int, 5> counts{};
  for (std::size_t replica :
       picks(balancer, without_2, loads, random, 40'000)) {
    ++counts[replica];
  }
  CHECK(counts[2] == 0);
  for (std::size_t r : {0, 1, 3, 4}) {
    CHECK(counts[r] > 9500);  // 10000 expected
    CHECK(counts[r] < 10500);
  }
}

TEST_CASE("load_balancer: least-outstanding takes a lone replica, no draw",
          "[mesh]") {
  LeastOutstandingBalancer balancer;
  ReplicaLoads loads(8);
  Random random(5);
  Random same(5);
  CHECK(picks(balancer, 0b0100'0000, loads, random, 3) ==
        std::vector<std::size_t>{6, 6, 6});
  CHECK(random.next() == same.next());  // nothing was drawn
}

TEST_CASE("load_balancer: the same seed gives the same picks", "[mesh]") {
  LeastOutstandingBalancer balancer;
  ReplicaLoads loads(6);
  auto busy = hold(loads, 4, 1);
  Random first(42);
  Random second(42);
  const std::vector<std::size_t> a =
      picks(balancer, all_replicas(6), loads, first, 200);
  const std::vector<std::size_t> b =
      picks(balancer, all_replicas(6), loads, second, 200);
  CHECK(a == b);
}

TEST_CASE("load_balancer: to_string names each kind", "[mesh]") {
  CHECK(fnbus::mesh::to_string(Balancing::kRoundRobin) == "round_robin");
  CHECK(fnbus::mesh::to_string(Balancing::kLeastOutstanding) ==
        "least_outstanding");
}

}  // namespace
