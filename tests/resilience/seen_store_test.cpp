// Tests of fnbus::resilience::InMemorySeenStore: first sights and
// duplicates, the TTL from the first sight, the capacity bound, forget(),
// bad options, and a bounded concurrent run for TSan.

#include "fnbus/resilience/seen_store.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

namespace {

using namespace std::chrono_literals;
using fnbus::TimePoint;
using fnbus::resilience::InMemorySeenStore;
using fnbus::resilience::SeenStoreOptions;

const TimePoint kStart = TimePoint(1h);

std::unique_ptr<InMemorySeenStore> make(SeenStoreOptions options) {
  auto store = InMemorySeenStore::Create(options);
  REQUIRE(store.ok());
  return *std::move(store);
}

TEST_CASE("seen_store: a key is handled once within its TTL", "[seen_store]") {
  auto store = make({.capacity = 10, .ttl = 1h});
  CHECK(store->first_sight("order-1", kStart));
  CHECK_FALSE(store->first_sight("order-1", kStart + 1s));
  CHECK(store->first_sight("order-2", kStart + 1s));
  CHECK_FALSE(store->first_sight("order-2", kStart + 59min));
  CHECK(store->size() == 2);
  const InMemorySeenStore::Stats stats = store->stats();
  CHECK(stats.first_sights == 2);
  CHECK(stats.duplicates == 2);
}

TEST_CASE("seen_store: the TTL runs from the first sight", "[seen_store]") {
  auto store = make({.capacity = 10, .ttl = 10min});
  CHECK(store->first_sight("a", kStart));
  CHECK(store->first_sight("b", kStart + 5min));
  // Repeating "a" does not extend it.
  CHECK_FALSE(store->first_sight("a", kStart + 9min));
  CHECK(store->first_sight("a", kStart + 10min));  // expired: new again
  CHECK_FALSE(store->first_sight("b", kStart + 10min));
  CHECK(store->first_sight("b", kStart + 15min));
  CHECK(store->stats().expired == 2);
}

TEST_CASE("seen_store: when full the oldest key is forgotten", "[seen_store]") {
  auto store = make({.capacity = 3, .ttl = 1h});
  for (const char* key : {"a", "b", "c"})
    CHECK(store->first_sight(key, kStart));
  CHECK(store->first_sight("d", kStart + 1s));  // evicts "a"
  CHECK(store->size() == 3);
  CHECK(store->stats().evicted == 1);
  CHECK_FALSE(store->first_sight("b", kStart + 2s));
  CHECK_FALSE(store->first_sight("d", kStart + 2s));
  CHECK(store->first_sight("a", kStart + 2s));  // a duplicate let through:
                                                // the documented cost
}

TEST_CASE("seen_store: forget makes the next sight a first one",
          "[seen_store]") {
  auto store = make({});
  CHECK(store->first_sight("payment-7", kStart));
  store->forget("payment-7");  // the charge failed: let a retry through
  store->forget("never-seen");
  CHECK(store->first_sight("payment-7", kStart + 1s));
  CHECK(store->size() == 1);
}

TEST_CASE("seen_store: a clock at either end of its range", "[seen_store]") {
  auto store = make({.capacity = 4, .ttl = 1h});
  CHECK(store->first_sight("early", TimePoint::min()));
  // From the most negative time to the most positive: the age does not
  // fit in the signed rep and must not overflow.
  CHECK(store->first_sight("early", TimePoint::max()));
  CHECK_FALSE(store->first_sight("early", TimePoint::max()));
  // A clock that went back keeps the key.
  CHECK_FALSE(store->first_sight("early", kStart));
}

TEST_CASE("seen_store: bad options are InvalidArgument naming each one",
          "[seen_store]") {
  auto bad = InMemorySeenStore::Create({.capacity = 0, .ttl = 0s});
  REQUIRE(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(bad.status().message()),
             Catch::Contains("capacity is 0; use 1 to 2^32 keys") &&
                 Catch::Contains("ttl is 0 ns; use more than 0"));
  CHECK_FALSE(
      InMemorySeenStore::Create({.capacity = (std::size_t{1} << 32) + 1}).ok());
}

// Bounded: 4 threads offer the same 1,000 keys; each is a first sight
// exactly once.
TEST_CASE("seen_store: concurrent sights of one key let one through",
          "[seen_store]") {
  auto store = make({.capacity = 2'000, .ttl = 1h});
  std::atomic<int> first{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&store, &first] {
      for (int i = 0; i < 1'000; ++i) {
        if (store->first_sight("key-" + std::to_string(i), kStart)) {
          first.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(first.load() == 1'000);
  CHECK(store->stats().duplicates == 3'000);
}

}  // namespace
