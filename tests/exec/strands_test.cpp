// Tests of fnbus::Strands alone: the turn protocol single-threaded (turns
// kept in a std::deque standing in for the bus's queue), then a bounded
// many-producer, many-worker stress over a real MpmcQueue of turns (run it
// under TSan).

#include "fnbus/exec/strands.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../support/test_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/queue/mpmc_queue.hpp"
#include "fnbus/random.hpp"

namespace {

using fnbus::OrderingKey;
using fnbus::StrandPush;
using fnbus::Strands;
using fnbus::StrandsOptions;
using fnbus::testing_support::Counted;
using fnbus::testing_support::counts;

std::string message_of(const absl::Status& status) {
  return std::string(status.message());
}

template <typename T>
std::unique_ptr<Strands<T>> make(StrandsOptions options) {
  auto strands = Strands<T>::Create(options);
  REQUIRE(strands.ok());
  return *std::move(strands);
}

// A single-threaded stand-in for the work queue: the posted turns, in
// order, each naming its strand.
struct TurnQueue {
  std::deque<std::size_t> turns;
  std::size_t room = 1000;  // post() refuses past this many

  auto post(std::size_t strand) {
    return [this, strand]() noexcept {
      if (turns.size() >= room) return false;
      turns.push_back(strand);
      return true;
    };
  }
};

TEST_CASE("Strands::Create names a bad size and the range to use",
          "[strands]") {
  for (std::size_t bad : {std::size_t{0}, std::size_t{3}, std::size_t{1000},
                          std::size_t{1} << 17}) {
    auto strands = Strands<int>::Create({.strands = bad});
    REQUIRE_FALSE(strands.ok());
    CHECK(strands.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(fnbus::testing_support::contains(
        message_of(strands.status()),
        "StrandsOptions::strands is " + std::to_string(bad)));
    CHECK(fnbus::testing_support::contains(message_of(strands.status()),
                                           "power of two from 1 to 65536"));
  }
  auto no_room = Strands<int>::Create({.capacity_per_strand = 0});
  REQUIRE_FALSE(no_room.ok());
  CHECK(fnbus::testing_support::contains(
      message_of(no_room.status()),
      "StrandsOptions::capacity_per_strand is 0"));
  CHECK(Strands<int>::Create({.strands = 1}).ok());
  CHECK(Strands<int>::Create({.strands = 65536}).ok());
}

TEST_CASE("Strands: one key always picks one strand, keys spread",
          "[strands]") {
  auto strands = make<int>({.strands = 64});
  CHECK(strands->index_of(OrderingKey(42)) ==
        strands->index_of(OrderingKey(42)));
  CHECK(strands->index_of(OrderingKey("order-7")) ==
        strands->index_of(OrderingKey(std::string("order-7"))));
  std::set<std::size_t> used;
  for (int key = 0; key < 1024; ++key) {
    const std::size_t index = strands->index_of(OrderingKey(key));
    REQUIRE(index < 64);
    used.insert(index);
  }
  CHECK(used.size() == 64);  // 1024 consecutive ids reach every strand
  auto one = make<int>({.strands = 1});
  CHECK(one->index_of(OrderingKey(1)) == 0);
  CHECK(one->index_of(OrderingKey("x")) == 0);
}

TEST_CASE("Strands: each turn runs the strand's oldest item, in push order",
          "[strands]") {
  counts = {};
  {
    auto strands = make<Counted>({.strands = 4});
    TurnQueue queue;
    for (int i = 0; i < 10; ++i) {
      const std::size_t strand = static_cast<std::size_t>(i % 2);
      REQUIRE(strands->push(strand, queue.post(strand), [i]() noexcept {
        return Counted(i);
      }) == StrandPush::kPushed);
    }
    CHECK(queue.turns.size() == 10);  // one turn per item
    CHECK(strands->held(0) == 5);
    std::vector<int> ran;
    while (!queue.turns.empty()) {
      const std::size_t strand = queue.turns.front();
      queue.turns.pop_front();
      CHECK(strands->run_turn(strand, [&](Counted& item) noexcept {
        ran.push_back(item.value());
      }) == 1);
    }
    CHECK(ran == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    CHECK(strands->held(0) == 0);
    CHECK(strands->held(1) == 0);
    // Items left behind are destroyed with the table.
    REQUIRE(strands->push(3, queue.post(3), []() noexcept {
      return Counted(99);
    }) == StrandPush::kPushed);
  }
  CHECK(counts.constructed == counts.destroyed);
  CHECK(counts.bad_destroys == 0);
  CHECK(counts.bad_moves == 0);
}

TEST_CASE(
    "Strands: an item pushed after the inline oldest ran, with others "
    "waiting, queues behind them",
    "[strands]") {
  auto strands = make<int>({.strands = 1});
  TurnQueue queue;
  auto push = [&](int item) {
    REQUIRE(strands->push(0, queue.post(0), [item]() noexcept {
      return item;
    }) == StrandPush::kPushed);
  };
  std::vector<int> ran;
  auto record = [&](int item) noexcept { ran.push_back(item); };
  push(1);  // inline
  push(2);  // the ring
  push(3);
  CHECK(strands->run_turn(0, record) == 1);
  push(4);  // the inline slot is free, but 2 and 3 wait: the ring
  CHECK(strands->held(0) == 3);
  while (strands->held(0) > 0) (void)strands->run_turn(0, record);
  push(5);  // empty again: inline
  (void)strands->run_turn(0, record);
  CHECK(ran == std::vector<int>{1, 2, 3, 4, 5});
}

TEST_CASE(
    "Strands: a hold stops the strand after its item, the last release "
    "posts its turn and the rest run in order",
    "[strands]") {
  auto strands = make<int>({.strands = 2});
  TurnQueue queue;
  for (int item = 1; item <= 3; ++item) {
    REQUIRE(strands->push(1, queue.post(1), [item]() noexcept {
      return item;
    }) == StrandPush::kPushed);
  }
  std::vector<int> ran;
  auto run = [&](int item) noexcept {
    ran.push_back(item);
    if (item == 1) {
      strands->hold(1);  // two holds (say two functions' retries)
      strands->hold(1);
    }
  };
  auto take_turn = [&] {
    const std::size_t strand = queue.turns.front();
    queue.turns.pop_front();
    return strands->run_turn(strand, run);
  };
  CHECK(take_turn() == 1);
  CHECK(take_turn() == 0);  // held: left as credit
  CHECK(take_turn() == 0);
  CHECK(queue.turns.empty());
  CHECK(strands->holds(1) == 2);
  CHECK(strands->held(1) == 2);
  CHECK(strands->release(1, queue.post(1)) == fnbus::StrandRelease::kStillHeld);
  CHECK(queue.turns.empty());
  CHECK(strands->release(1, queue.post(1)) == fnbus::StrandRelease::kPosted);
  REQUIRE(queue.turns.size() == 1);
  CHECK(take_turn() == 2);  // the posted turn runs the credit
  CHECK(ran == std::vector<int>{1, 2, 3});
  CHECK(strands->holds(1) == 0);
}

TEST_CASE(
    "Strands: a hold released while its item still runs lets the runner "
    "go on, a release with turns still queued posts none",
    "[strands]") {
  auto strands = make<int>({.strands = 1});
  TurnQueue queue;
  for (int item = 1; item <= 3; ++item) {
    REQUIRE(strands->push(0, queue.post(0), [item]() noexcept {
      return item;
    }) == StrandPush::kPushed);
  }
  std::vector<int> ran;
  std::vector<fnbus::StrandRelease> releases;
  queue.turns.clear();  // taken: one below, two while 1 runs (credit)
  CHECK(strands->run_turn(0, [&](int item) noexcept {
    ran.push_back(item);
    if (item != 1) return;
    CHECK(strands->run_turn(0, [](int) noexcept {}) == 0);
    CHECK(strands->run_turn(0, [](int) noexcept {}) == 0);
    strands->hold(0);
    releases.push_back(strands->release(0, queue.post(0)));
  }) == 3);
  CHECK(ran == std::vector<int>{1, 2, 3});
  // Held after its item, the next item's turn still queued: the release
  // posts nothing; that turn runs the item.
  REQUIRE(strands->push(0, queue.post(0), []() noexcept { return 4; }) ==
          StrandPush::kPushed);
  queue.turns.clear();
  CHECK(strands->run_turn(0, [&](int item) noexcept {
    ran.push_back(item);
    strands->hold(0);
  }) == 1);
  REQUIRE(strands->push(0, queue.post(0), []() noexcept { return 5; }) ==
          StrandPush::kPushed);
  releases.push_back(strands->release(0, queue.post(0)));
  CHECK(queue.turns.size() == 1);  // 5's
  queue.turns.clear();
  CHECK(strands->run_turn(0, [&](int item) noexcept { ran.push_back(item); }) ==
        1);
  CHECK(ran == std::vector<int>{1, 2, 3, 4, 5});
  CHECK(releases ==
        std::vector<fnbus::StrandRelease>{fnbus::StrandRelease::kGoesOn,
                                          fnbus::StrandRelease::kGoesOn});
}

TEST_CASE(
    "Strands: a release that finds no room owes the turn, repay_owed posts "
    "it once there is room, a push's runner runs it too",
    "[strands]") {
  auto strands = make<int>({.strands = 4});
  TurnQueue queue;
  std::vector<int> ran;
  auto record = [&](int item) noexcept { ran.push_back(item); };
  auto push = [&](std::size_t strand, int item) {
    REQUIRE(strands->push(strand, queue.post(strand), [item]() noexcept {
      return item;
    }) == StrandPush::kPushed);
  };
  auto repay = [&] {
    return strands->repay_owed(
        [&](std::size_t strand) noexcept { return queue.post(strand)(); });
  };
  // Strand 2: 1 runs and holds, 2 waits as credit.
  push(2, 1);
  push(2, 2);
  queue.turns.clear();
  CHECK(strands->run_turn(2, [&](int item) noexcept {
    record(item);
    strands->hold(2);
  }) == 1);
  CHECK(strands->run_turn(2, record) == 0);
  CHECK_FALSE(strands->owes_turns());
  CHECK_FALSE(repay());  // nothing owed: nothing posted
  queue.room = 0;
  CHECK(strands->release(2, queue.post(2)) == fnbus::StrandRelease::kOwed);
  CHECK(strands->owes_turns());
  CHECK_FALSE(repay());  // still no room
  CHECK(strands->owes_turns());
  queue.room = 1000;
  CHECK(repay());
  CHECK_FALSE(strands->owes_turns());
  REQUIRE(queue.turns == std::deque<std::size_t>{2});
  queue.turns.clear();
  CHECK(strands->run_turn(2, record) == 1);
  CHECK(ran == std::vector<int>{1, 2});
  // Owed again; a push to the strand posts its own turn, whose runner
  // runs the owed item first and clears the debt.
  push(2, 3);
  push(2, 4);
  queue.turns.clear();
  CHECK(strands->run_turn(2, [&](int item) noexcept {
    record(item);
    strands->hold(2);
  }) == 1);
  CHECK(strands->run_turn(2, record) == 0);
  queue.room = 0;
  CHECK(strands->release(2, queue.post(2)) == fnbus::StrandRelease::kOwed);
  queue.room = 1000;
  push(2, 5);
  CHECK(strands->run_turn(2, record) == 2);
  CHECK_FALSE(strands->owes_turns());
  CHECK(ran == std::vector<int>{1, 2, 3, 4, 5});
}

TEST_CASE("Strands: a refused turn, a full strand or no room append nothing",
          "[strands]") {
  auto strands = make<int>({.strands = 2, .capacity_per_strand = 3});
  TurnQueue queue;
  queue.room = 2;
  bool made = false;
  auto make_item = [&]() noexcept {
    made = true;
    return 1;
  };
  CHECK(strands->push(0, queue.post(0), make_item) == StrandPush::kPushed);
  CHECK(strands->push(0, queue.post(0), make_item) == StrandPush::kPushed);
  made = false;
  CHECK(strands->push(0, queue.post(0), make_item) == StrandPush::kNotPosted);
  CHECK_FALSE(made);
  CHECK(strands->held(0) == 2);
  queue.room = 10;
  CHECK(strands->push(0, queue.post(0), make_item) == StrandPush::kPushed);
  made = false;
  CHECK(strands->push(0, queue.post(0), make_item) == StrandPush::kFull);
  CHECK_FALSE(made);
  CHECK(queue.turns.size() == 3);
  // The other strand has room of its own.
  CHECK(strands->push(1, queue.post(1), make_item) == StrandPush::kPushed);
}

TEST_CASE(
    "Strands: a turn taken while the strand runs is left with its runner, "
    "which runs that item next",
    "[strands]") {
  auto strands = make<int>({.strands = 1});
  TurnQueue queue;
  for (int i = 1; i <= 3; ++i) {
    REQUIRE(strands->push(0, queue.post(0), [i]() noexcept { return i; }) ==
            StrandPush::kPushed);
  }
  std::vector<int> ran;
  std::size_t absorbed = 99;
  // The runner of item 1 takes the other turns meanwhile (as other workers
  // would): neither runs anything, and the runner runs items 2 and 3.
  const std::size_t run = strands->run_turn(0, [&](int item) noexcept {
    ran.push_back(item);
    if (item == 1) {
      absorbed = strands->run_turn(0, [&](int other) noexcept {
        ran.push_back(-other);  // must not happen
      });
      absorbed += strands->run_turn(
          0, [&](int other) noexcept { ran.push_back(-other); });
    }
  });
  CHECK(absorbed == 0);
  CHECK(run == 3);
  CHECK(ran == std::vector<int>{1, 2, 3});
  // A run() may push to its own strand: that item waits for its turn.
  queue.turns.clear();
  REQUIRE(strands->push(0, queue.post(0), []() noexcept { return 4; }) ==
          StrandPush::kPushed);
  CHECK(strands->run_turn(0, [&](int item) noexcept {
    ran.push_back(item);
    REQUIRE(strands->push(0, queue.post(0), [] { return 5; }) ==
            StrandPush::kPushed);
  }) == 1);
  CHECK(queue.turns.size() == 2);
  CHECK(strands->run_turn(0, [&](int item) noexcept { ran.push_back(item); }) ==
        1);
  CHECK(ran == std::vector<int>{1, 2, 3, 4, 5});
}

TEST_CASE(
    "Strands: a runner past its budget hands one turn back and leaves the "
    "rest as credit",
    "[strands]") {
  auto strands = make<int>({.strands = 1});
  TurnQueue queue;
  constexpr int kItems = static_cast<int>(Strands<int>::kTurnBudget) + 8;
  for (int i = 0; i < kItems; ++i) {
    REQUIRE(strands->push(0, queue.post(0), [i]() noexcept { return i; }) ==
            StrandPush::kPushed);
  }
  queue.turns.clear();  // the test plays the queue by hand below
  std::vector<int> ran;
  int reposts = 0;
  auto record = [&](int item) noexcept { ran.push_back(item); };
  const std::size_t first = strands->run_turn(
      0,
      [&](int item) noexcept {
        ran.push_back(item);
        if (item == 0) {  // every other turn is taken while item 0 runs
          for (int i = 1; i < kItems; ++i) {
            (void)strands->run_turn(0, record);
          }
        }
      },
      [&]() noexcept {
        ++reposts;
        return true;
      });
  CHECK(first == Strands<int>::kTurnBudget);
  CHECK(reposts == 1);
  // The reposted turn's runner runs the rest: its own item and the credit.
  CHECK(strands->run_turn(0, record) == 8);
  std::vector<int> expected(kItems);
  for (int i = 0; i < kItems; ++i) expected[static_cast<std::size_t>(i)] = i;
  CHECK(ran == expected);
  CHECK(strands->held(0) == 0);
}

TEST_CASE(
    "Strands stress: many producers and workers over a shared queue, each "
    "key's items run in push order, never concurrently, each once",
    "[strands]") {
  constexpr std::size_t kProducers = 3;
  constexpr std::size_t kWorkers = 3;
  constexpr std::uint32_t kKeys = 64;
  constexpr std::uint32_t kPerProducer = 6000;
  struct Item {
    std::uint32_t producer = 0;
    std::uint32_t key = 0;
    std::uint32_t seq = 0;  // per (producer, key), from 1
  };
  // 16 strands for 64 keys: collisions are exercised too.
  auto strands = make<Item>({.strands = 16, .capacity_per_strand = 1 << 16});
  fnbus::MpmcQueue<std::uint32_t> turns(256);
  // Per (producer, key): the last seq run. Per strand: threads inside.
  // relaxed everywhere: the strand's lock orders a key's runs; these
  // only record what happened, read after the threads are joined.
  std::vector<std::atomic<std::uint32_t>> last(kProducers * kKeys);
  std::vector<std::atomic<int>> inside(strands->size());
  std::atomic<std::uint64_t> out_of_order{0};
  std::atomic<std::uint64_t> overlapping{0};
  std::atomic<std::uint64_t> ran{0};
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::size_t> producers_done{0};

  auto run_item = [&](std::size_t strand, std::uint64_t seed) {
    return [&, strand, seed](Item& item) noexcept {
      if (inside[strand].fetch_add(1, std::memory_order_relaxed) != 0) {
        overlapping.fetch_add(1, std::memory_order_relaxed);
      }
      // A seeded, shuffled handler duration.
      fnbus::Random random(seed ^ item.seq);
      const std::uint64_t spins = random.next() % 64;
      for (std::uint64_t i = 0; i < spins; ++i) fnbus::detail::cpu_relax();
      auto& seen = last[item.producer * kKeys + item.key];
      if (seen.load(std::memory_order_relaxed) + 1 != item.seq) {
        out_of_order.fetch_add(1, std::memory_order_relaxed);
      }
      seen.store(item.seq, std::memory_order_relaxed);
      inside[strand].fetch_sub(1, std::memory_order_relaxed);
      ran.fetch_add(1, std::memory_order_relaxed);
    };
  };
  std::vector<std::thread> threads;
  for (std::size_t p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      fnbus::Random random(0x5eed + p);
      std::vector<std::uint32_t> next(kKeys, 1);
      for (std::uint32_t i = 0; i < kPerProducer; ++i) {
        const auto key = static_cast<std::uint32_t>(random.next() % kKeys);
        const Item item{static_cast<std::uint32_t>(p), key, next[key]};
        const std::size_t strand = strands->index_of(OrderingKey(key));
        auto post = [&]() noexcept {
          return turns.try_push(static_cast<std::uint32_t>(strand));
        };
        // A full queue refuses: retry (the item's seq is not used up).
        while (strands->push(strand, post, [&]() noexcept { return item; }) !=
               StrandPush::kPushed) {
          refused.fetch_add(1, std::memory_order_relaxed);
          std::this_thread::yield();
        }
        ++next[key];
      }
      producers_done.fetch_add(1, std::memory_order_release);
    });
  }
  for (std::size_t w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      std::uint64_t turn_count = 0;
      for (;;) {
        std::uint32_t strand = 0;
        if (turns.try_pop(strand)) {
          auto repost = [&]() noexcept {
            return turns.try_push(std::uint32_t{strand});
          };
          (void)strands->run_turn(
              strand, run_item(strand, w * 7919 + ++turn_count), repost);
          continue;
        }
        // acquire: pairs with the producers' release; their turns are in.
        if (producers_done.load(std::memory_order_acquire) == kProducers &&
            turns.empty()) {
          return;
        }
        std::this_thread::yield();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(out_of_order.load() == 0);
  CHECK(overlapping.load() == 0);
  CHECK(ran.load() == kProducers * kPerProducer);
  std::uint64_t held = 0;
  for (std::size_t s = 0; s < strands->size(); ++s) held += strands->held(s);
  CHECK(held == 0);
  // Every (producer, key) sequence ran to its end.
  std::uint64_t total = 0;
  for (auto& seen : last) total += seen.load();
  CHECK(total == kProducers * kPerProducer);
}

}  // namespace
