// Tests of fnbus::mesh::ReplicaLoads and its InFlight token; the last
// case is a bounded stress for TSan.

#include "fnbus/mesh/replica_loads.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "fnbus/random.hpp"

namespace {

using fnbus::mesh::ReplicaLoads;

TEST_CASE("replica_loads: a call counts from begin until its token ends",
          "[mesh]") {
  ReplicaLoads loads(3);
  CHECK(loads.size() == 3);
  ReplicaLoads::InFlight first = loads.begin(1);
  ReplicaLoads::InFlight second = loads.begin(1);
  CHECK(loads.in_flight(0) == 0);
  CHECK(loads.in_flight(1) == 2);
  CHECK(first.replica() == 1);
  first.end();
  CHECK_FALSE(first);
  CHECK(loads.in_flight(1) == 1);
  first.end();  // a second end does nothing
  CHECK(loads.in_flight(1) == 1);
  {
    ReplicaLoads::InFlight third = loads.begin(2);
    CHECK(loads.in_flight(2) == 1);
  }  // destroyed: ended
  CHECK(loads.in_flight(2) == 0);
  CHECK(second);
}

TEST_CASE("replica_loads: a moved token ends its call once", "[mesh]") {
  ReplicaLoads loads(2);
  ReplicaLoads::InFlight token = loads.begin(0);
  ReplicaLoads::InFlight moved = std::move(token);
  CHECK_FALSE(token);  // NOLINT(bugprone-use-after-move): tested on purpose
  CHECK(loads.in_flight(0) == 1);
  ReplicaLoads::InFlight other = loads.begin(1);
  other = std::move(moved);  // ends the call on 1, takes the one on 0
  CHECK(loads.in_flight(1) == 0);
  CHECK(loads.in_flight(0) == 1);
  CHECK(other.replica() == 0);
  other.end();
  CHECK(loads.in_flight(0) == 0);
}

TEST_CASE("replica_loads: gauges return to 0 after concurrent calls",
          "[mesh]") {
  constexpr std::size_t kReplicas = 4;
  constexpr int kThreads = 4;
  constexpr int kCalls = 20'000;
  ReplicaLoads loads(kReplicas);
  std::atomic<int> negative{0};  // a gauge seen below 0 (never)
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      fnbus::Random random(static_cast<std::uint64_t>(t) + 1);
      std::vector<ReplicaLoads::InFlight> held;
      for (int i = 0; i < kCalls; ++i) {
        held.push_back(loads.begin(random.uniform_to(kReplicas - 1)));
        if (held.size() > 3) held.erase(held.begin());  // ends the oldest
        if (loads.in_flight(held.back().replica()) < 1) {
          negative.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(negative.load() == 0);
  for (std::size_t i = 0; i < kReplicas; ++i) CHECK(loads.in_flight(i) == 0);
}

}  // namespace
