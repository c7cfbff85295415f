// resilience::ConcurrencyLimit on its own: slots taken and given back,
// waiting values handed a slot in arrival order, no newcomer overtaking a
// waiting value, and the slot count under contention.

#include "fnbus/resilience/concurrency_limit.hpp"

#include <atomic>
#include <cstddef>
#include <optional>
#include <thread>
#include <vector>

#include "../support/test_support.hpp"
#include <catch2/catch.hpp>

namespace fnbus_concurrency_limit_test {

using Limit = fnbus::resilience::ConcurrencyLimit<int>;

TEST_CASE("concurrency limit: slots up to the limit, then none",
          "[concurrency_limit]") {
  Limit limit(2);
  CHECK(limit.limit() == 2);
  CHECK(limit.try_enter());
  CHECK(limit.try_enter());
  CHECK_FALSE(limit.try_enter());
  CHECK(limit.held() == 2);
  CHECK_FALSE(limit.leave().has_value());  // nothing waits: freed
  CHECK(limit.held() == 1);
  CHECK(limit.try_enter());
  CHECK(limit.held() == 2);
}

TEST_CASE("concurrency limit: a slot given back goes to the oldest waiting",
          "[concurrency_limit]") {
  Limit limit(1);
  REQUIRE(limit.try_enter());
  CHECK_FALSE(limit.wait(1).has_value());
  CHECK_FALSE(limit.wait(2).has_value());
  CHECK_FALSE(limit.wait(3).has_value());
  CHECK(limit.waiting() == 3);
  std::optional<int> next = limit.leave();
  REQUIRE(next.has_value());
  CHECK(*next == 1);
  CHECK(limit.held() == 1);  // handed over, not freed
  // A newcomer does not overtake the values still waiting.
  CHECK_FALSE(limit.try_enter());
  next = limit.leave();
  REQUIRE(next.has_value());
  CHECK(*next == 2);
  next = limit.leave();
  REQUIRE(next.has_value());
  CHECK(*next == 3);
  CHECK(limit.waiting() == 0);
  CHECK_FALSE(limit.leave().has_value());
  CHECK(limit.held() == 0);
}

TEST_CASE(
    "concurrency limit: wait() after a slot came free takes it and gives "
    "the value back",
    "[concurrency_limit]") {
  Limit limit(1);
  REQUIRE(limit.try_enter());
  // The caller saw no slot; the call that held it left meanwhile.
  CHECK_FALSE(limit.leave().has_value());
  const std::optional<int> now = limit.wait(7);
  REQUIRE(now.has_value());
  CHECK(*now == 7);
  CHECK(limit.held() == 1);
  CHECK(limit.waiting() == 0);
}

TEST_CASE(
    "concurrency limit: under contention the slots held never pass the "
    "limit and every waiting value is handed a slot",
    "[concurrency_limit]") {
  constexpr int kLimit = 3;
  constexpr int kThreads = 4;
  constexpr int kCallsEach = 2'000;
  Limit limit(kLimit);
  fnbus::testing_support::HighWater high_water;
  std::atomic<int> ran{0};
  auto run = [&] {
    high_water.enter();
    // relaxed: read after the threads are joined.
    ran.fetch_add(1, std::memory_order_relaxed);
    high_water.leave();
  };
  // A value handed a slot is run by whoever was handed it, and so on.
  auto run_and_pass = [&] {
    run();
    while (limit.leave().has_value()) run();
  };
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < kCallsEach; ++i) {
          if (limit.try_enter() || limit.wait(i).has_value()) run_and_pass();
        }
      });
    }
  }
  CHECK(high_water.most() <= kLimit);
  CHECK(ran.load() == kThreads * kCallsEach);  // none stranded
  CHECK(limit.held() == 0);
  CHECK(limit.waiting() == 0);
}

}  // namespace fnbus_concurrency_limit_test
