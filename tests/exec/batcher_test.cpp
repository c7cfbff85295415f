// Batcher: size cuts, age cuts on a ManualClock, flushes, option checks,
// and a bounded many-producer run checking that every item comes out once.

#include "fnbus/exec/batcher.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include <catch2/catch.hpp>

#include "fnbus/exec/batch_result.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace fnbus_batcher_test {

using fnbus::Batcher;
using fnbus::BatchOptions;
using fnbus::BatchResult;
using fnbus::testing::ManualClock;
using namespace std::chrono_literals;

std::unique_ptr<Batcher<int>> make_batcher(BatchOptions options) {
  auto batcher = Batcher<int>::Create(options);
  REQUIRE(batcher.ok());
  return *std::move(batcher);
}

TEST_CASE("batcher: the item that fills a batch cuts it", "[batcher]") {
  ManualClock clock;
  auto batcher = make_batcher({.max_items = 3, .max_wait = 1s});
  auto first = batcher->add(1, clock.now());
  CHECK(first.opened);
  CHECK(first.due == clock.now() + 1s);
  CHECK(first.full.empty());
  auto second = batcher->add(2, clock.now());
  CHECK_FALSE(second.opened);
  CHECK(second.full.empty());
  auto third = batcher->add(3, clock.now());
  CHECK(third.full == std::vector<int>{1, 2, 3});
  CHECK_FALSE(third.opened);
  CHECK(batcher->size() == 0);
  // The next item opens the next batch.
  CHECK(batcher->add(4, clock.now()).opened);
  CHECK(batcher->size() == 1);
}

TEST_CASE("batcher: a batch is cut by age once its first item waited max_wait",
          "[batcher]") {
  ManualClock clock;
  auto batcher = make_batcher({.max_items = 10, .max_wait = 100ms});
  (void)batcher->add(1, clock.now());
  clock.advance(60ms);
  (void)batcher->add(2, clock.now());
  CHECK(batcher->take_due(clock.now()).empty());  // 60 ms: not yet
  clock.advance(39ms);
  CHECK(batcher->take_due(clock.now()).empty());  // 99 ms
  clock.advance(1ms);
  CHECK(batcher->take_due(clock.now()) == std::vector<int>{1, 2});
  CHECK(batcher->take_due(clock.now()).empty());  // nothing left
}

TEST_CASE("batcher: a stale age timer does not cut the next batch early",
          "[batcher]") {
  ManualClock clock;
  auto batcher = make_batcher({.max_items = 2, .max_wait = 100ms});
  (void)batcher->add(1, clock.now());  // opens batch A, due at 100 ms
  clock.advance(50ms);
  CHECK(batcher->add(2, clock.now()).full.size() == 2);  // A cut by size
  auto opened = batcher->add(3, clock.now());  // batch B, due at 150 ms
  REQUIRE(opened.opened);
  clock.advance(50ms);  // A's timer fires at 100 ms
  CHECK(batcher->take_due(clock.now()).empty());
  clock.advance(50ms);  // B's at 150 ms
  CHECK(batcher->take_due(clock.now()) == std::vector<int>{3});
}

TEST_CASE("batcher: take_all flushes the open batch, due or not", "[batcher]") {
  ManualClock clock;
  auto batcher = make_batcher({.max_items = 5, .max_wait = 1h});
  (void)batcher->add(7, clock.now());
  (void)batcher->add(8, clock.now());
  CHECK(batcher->take_all() == std::vector<int>{7, 8});
  CHECK(batcher->take_all().empty());
}

TEST_CASE("batcher: max_items = 1 cuts every item alone and opens nothing",
          "[batcher]") {
  ManualClock clock;
  auto batcher = make_batcher({.max_items = 1, .max_wait = 1s});
  auto added = batcher->add(5, clock.now());
  CHECK(added.full == std::vector<int>{5});
  CHECK_FALSE(added.opened);
}

TEST_CASE("batcher: bad options are InvalidArgument naming each field",
          "[batcher]") {
  auto zero = Batcher<int>::Create({.max_items = 0, .max_wait = -1ms});
  REQUIRE(zero.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(zero.status().message());
  CHECK_THAT(message, Catch::Contains("max_items is 0; use 1 to 10000"));
  CHECK_THAT(message, Catch::Contains("max_wait is -1000000 ns"));
  auto huge = Batcher<int>::Create(
      {.max_items = fnbus::kMaxBatchItems + 1, .max_wait = 2h});
  REQUIRE(huge.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string huge_message(huge.status().message());
  CHECK_THAT(huge_message, Catch::Contains("max_items is 10001"));
  CHECK_THAT(huge_message, Catch::Contains("at most 1 hour"));
  CHECK(fnbus::check(BatchOptions{.max_items = 1, .max_wait = 0ns}).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(fnbus::check(BatchOptions{}).ok());
}

TEST_CASE("batch result: fail marks items, an index out of range is misuse",
          "[batcher]") {
  BatchResult result(3, 2);
  CHECK(result.attempt() == 2);
  result.fail(1, absl::UnavailableError("db"));
  result.fail(1, absl::InternalError("again"));  // the last status counts
  result.fail(2, absl::OkStatus());              // OK becomes Unknown
  CHECK(result.failed_count() == 2);
  CHECK(result.status(0).ok());
  CHECK(result.status(1).code() == absl::StatusCode::kInternal);
  CHECK(result.status(2).code() == absl::StatusCode::kUnknown);
  CHECK(result.misuse().ok());
  result.fail(3);
  CHECK(result.misuse().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(result.misuse().message()),
             Catch::Contains("fail(3) on a batch of 3 items"));
}

TEST_CASE("batcher: many producers and a cutter see every item once",
          "[batcher]") {
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 5000;
  ManualClock clock;
  auto batcher = make_batcher({.max_items = 7, .max_wait = 1ms});
  std::atomic<std::int64_t> sum{0};
  std::atomic<std::int64_t> count{0};
  std::atomic<bool> oversized{false};
  auto account = [&](const std::vector<int>& batch) {
    if (batch.size() > 7) oversized.store(true, std::memory_order_relaxed);
    for (int item : batch) {
      // relaxed: totals read after the joins below.
      sum.fetch_add(item, std::memory_order_relaxed);
      count.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::atomic<int> producing{kProducers};
  {
    std::vector<std::jthread> threads;
    for (int p = 0; p < kProducers; ++p) {
      threads.emplace_back([&, p] {
        for (int i = 1; i <= kPerProducer; ++i) {
          account(batcher->add(p * kPerProducer + i, clock.now()).full);
        }
        producing.fetch_sub(1, std::memory_order_release);
      });
    }
    threads.emplace_back([&] {  // the age cutter
      while (producing.load(std::memory_order_acquire) > 0) {
        clock.advance(1ms);
        account(batcher->take_due(clock.now()));
      }
    });
  }
  account(batcher->take_all());
  constexpr std::int64_t kItems = std::int64_t{kProducers} * kPerProducer;
  CHECK(count.load() == kItems);
  CHECK(sum.load() == kItems * (kItems + 1) / 2);
  CHECK_FALSE(oversized.load());
}

}  // namespace fnbus_batcher_test
