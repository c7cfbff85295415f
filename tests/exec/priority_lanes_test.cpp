// Tests of fnbus::PriorityLanes alone: the lane order and the starvation
// bound single-threaded (exact positions), lanes opened lazily and full
// independently, then a bounded many-producer, many-consumer stress (run
// it under TSan): every element taken exactly once, FIFO per producer
// within a lane.

#include "fnbus/exec/priority_lanes.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "../support/test_support.hpp"
#include <catch2/catch.hpp>

namespace {

using fnbus::LaneCursor;
using fnbus::Priority;
using fnbus::PriorityLanes;
using fnbus::testing_support::longest_wait;

struct Item {
  Priority priority = Priority::kNormal;
  int id = 0;
};

using Lanes = PriorityLanes<Item>;

void fill(Lanes& lanes, Priority priority, int count) {
  REQUIRE(lanes.open(priority));
  for (int i = 0; i < count; ++i) {
    REQUIRE(lanes.try_emplace(priority, Item{priority, i}));
  }
}

// Pops until empty; the priorities in the order taken.
std::vector<Priority> drain(Lanes& lanes, LaneCursor& cursor) {
  std::vector<Priority> taken;
  Item item;
  while (lanes.try_pop(item, cursor)) taken.push_back(item.priority);
  return taken;
}

TEST_CASE("PriorityLanes: the normal lane alone is a FIFO", "[lanes]") {
  Lanes lanes(8);
  LaneCursor cursor;
  for (int i = 0; i < 8; ++i) {
    REQUIRE(lanes.try_emplace(Priority::kNormal, Item{Priority::kNormal, i}));
  }
  CHECK_FALSE(lanes.try_emplace(Priority::kNormal, Item{}));  // full
  CHECK(lanes.size() == 8);
  Item item;
  for (int i = 0; i < 8; ++i) {
    REQUIRE(lanes.try_pop(item, cursor));
    CHECK(item.id == i);
  }
  CHECK_FALSE(lanes.try_pop(item, cursor));
  CHECK(lanes.empty());
}

TEST_CASE("PriorityLanes: high before normal before low when few wait",
          "[lanes]") {
  Lanes lanes(8);
  LaneCursor cursor;
  fill(lanes, Priority::kLow, 1);
  fill(lanes, Priority::kNormal, 1);
  fill(lanes, Priority::kHigh, 2);
  CHECK(lanes.size() == 4);
  CHECK(lanes.size(Priority::kHigh) == 2);
  const std::vector<Priority> taken = drain(lanes, cursor);
  CHECK(taken == std::vector<Priority>{Priority::kHigh, Priority::kHigh,
                                       Priority::kNormal, Priority::kLow});
}

TEST_CASE("PriorityLanes: saturating high events never starve the others",
          "[lanes]") {
  Lanes lanes(1024);
  LaneCursor cursor;
  fill(lanes, Priority::kHigh, 1000);
  fill(lanes, Priority::kNormal, 40);
  fill(lanes, Priority::kLow, 20);
  const std::vector<Priority> taken = drain(lanes, cursor);
  REQUIRE(taken.size() == 1060);
  CHECK(longest_wait(taken, Priority::kNormal) <= Lanes::kNormalBound);
  CHECK(longest_wait(taken, Priority::kLow) <= Lanes::kLowBound);
  // While all three wait, each cycle of 16 takes is 12 / 3 / 1.
  std::array<int, 3> first_cycle{};
  for (std::size_t i = 0; i < 16; ++i) {
    ++first_cycle[static_cast<std::size_t>(taken[i])];
  }
  CHECK(first_cycle == std::array<int, 3>{12, 3, 1});
}

TEST_CASE("PriorityLanes: a lower lane's turn with nothing there goes on",
          "[lanes]") {
  Lanes lanes(64);
  LaneCursor cursor;
  fill(lanes, Priority::kHigh, 20);
  const std::vector<Priority> taken = drain(lanes, cursor);
  CHECK(taken.size() == 20);  // no turn was lost to the empty lanes
  // And low events published later are still bounded.
  fill(lanes, Priority::kHigh, 40);
  fill(lanes, Priority::kLow, 2);
  const std::vector<Priority> later = drain(lanes, cursor);
  CHECK(longest_wait(later, Priority::kLow) <= Lanes::kLowBound);
}

TEST_CASE("PriorityLanes: lanes open on first use and fill up on their own",
          "[lanes]") {
  Lanes lanes(4);
  CHECK(lanes.size(Priority::kHigh) == 0);
  CHECK(lanes.capacity() == 4);
  fill(lanes, Priority::kNormal, 4);
  CHECK_FALSE(lanes.try_emplace(Priority::kNormal, Item{}));
  // A full normal lane refuses nobody else.
  fill(lanes, Priority::kHigh, 4);
  CHECK_FALSE(lanes.try_emplace(Priority::kHigh, Item{}));
  CHECK(lanes.open(Priority::kHigh));  // idempotent
  fill(lanes, Priority::kLow, 4);
  CHECK(lanes.size() == 12);
  CHECK(lanes.front_ready());
}

TEST_CASE("PriorityLanes: many producers and consumers take each item once",
          "[lanes][stress]") {
  constexpr int kProducers = 3;
  constexpr int kConsumers = 2;
  constexpr int kPerProducer = 20000;
  Lanes lanes(256);
  for (Priority p : {Priority::kHigh, Priority::kLow}) REQUIRE(lanes.open(p));
  std::vector<std::atomic<int>> seen(kProducers * kPerProducer);
  std::atomic<int> taken{0};
  std::atomic<bool> out_of_order{false};
  std::vector<std::thread> threads;
  for (int producer = 0; producer < kProducers; ++producer) {
    // Each producer has one lane, so its items must come out in order.
    threads.emplace_back([&, producer] {
      const auto priority = static_cast<Priority>(producer);
      for (int i = 0; i < kPerProducer; ++i) {
        const Item item{priority, producer * kPerProducer + i};
        while (!lanes.try_emplace(priority, item)) std::this_thread::yield();
      }
    });
  }
  for (int consumer = 0; consumer < kConsumers; ++consumer) {
    threads.emplace_back([&] {
      LaneCursor cursor;
      std::array<int, 3> last{-1, -1, -1};
      Item item;
      while (taken.load() < kProducers * kPerProducer) {
        if (!lanes.try_pop(item, cursor)) {
          std::this_thread::yield();
          continue;
        }
        int& previous = last[static_cast<std::size_t>(item.priority)];
        if (item.id <= previous) out_of_order = true;
        previous = item.id;
        seen[static_cast<std::size_t>(item.id)].fetch_add(1);
        taken.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK_FALSE(out_of_order.load());
  int once = 0;
  for (const std::atomic<int>& count : seen) once += count.load() == 1 ? 1 : 0;
  CHECK(once == kProducers * kPerProducer);
  CHECK(lanes.empty());
}

}  // namespace
