// Follow-up publishes from handlers survive a saturated queue
// (BusConfig::follow_up_headroom), and try_publish() hands a refused event
// back to the caller.
//
// Before the headroom, a handler publishing to a queue that external
// producers kept full got ResourceExhausted: a program like the first test
// broke 4,000-4,650 of 5,000 chains, and a 1,000-deep chain stopped at its
// first follow-up.

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"

namespace fnbus_follow_up_test {

using fnbus::BusConfig;
using fnbus::EventBus;
using fnbus::OverflowPolicy;
using fnbus::PublishOptions;
using fnbus::testing_support::Gate;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::wait_until;

struct Order {
  int id = 0;
};
struct PaymentRequested {
  int id = 0;
};
struct StockReserved {
  int id = 0;
};
struct Step {
  int depth = 0;
};
struct Filler {
  int n = 0;
};

constexpr int kOrders = 3000;

// Producers keep a small kBlock queue full of orders; each order's handler
// publishes two follow-ups. Every chain must complete.
void run_saturated_orders(std::size_t workers) {
  std::vector<std::atomic<int>> paid(kOrders);
  std::vector<std::atomic<int>> reserved(kOrders);
  std::atomic<int> refused_follow_ups{0};
  std::atomic<int> refused_orders{0};
  auto bus = make_bus({.queue_capacity = 64,
                       .workers = workers,
                       .overflow = OverflowPolicy::kBlock,
                       .block_timeout = std::chrono::minutes(1)});
  EventBus* raw = bus.get();
  auto on_order = bus->subscribe<Order>([&, raw](const Order& order) {
    // relaxed, all counters here: read after shutdown() joined the workers.
    if (!raw->publish(PaymentRequested{order.id}).ok()) {
      refused_follow_ups.fetch_add(1, std::memory_order_relaxed);
    }
    if (!raw->publish(StockReserved{order.id}).ok()) {
      refused_follow_ups.fetch_add(1, std::memory_order_relaxed);
    }
  });
  auto on_paid =
      bus->subscribe<PaymentRequested>([&](const PaymentRequested& p) {
        paid[static_cast<std::size_t>(p.id)].fetch_add(
            1, std::memory_order_relaxed);
      });
  auto on_reserved = bus->subscribe<StockReserved>([&](const StockReserved& s) {
    reserved[static_cast<std::size_t>(s.id)].fetch_add(
        1, std::memory_order_relaxed);
  });
  std::array<std::thread, 2> producers;
  for (std::size_t p = 0; p < producers.size(); ++p) {
    producers[p] = std::thread([&, p] {
      for (std::size_t id = p; id < kOrders; id += producers.size()) {
        if (!raw->publish(Order{static_cast<int>(id)}).ok()) {
          refused_orders.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (auto& producer : producers) producer.join();
  REQUIRE(bus->shutdown().ok());

  int broken = 0;
  for (std::size_t id = 0; id < kOrders; ++id) {
    if (paid[id].load() != 1 || reserved[id].load() != 1) ++broken;
  }
  CHECK(refused_orders.load() == 0);
  CHECK(refused_follow_ups.load() == 0);
  CHECK(broken == 0);
  const fnbus::BusStats stats = bus->stats();
  CHECK(stats.published == 3 * kOrders);
  CHECK(stats.published == stats.dispatched + stats.dead_lettered);
  CHECK(stats.queue_depth == 0);
}

TEST_CASE(
    "follow_up: chains survive producers saturating the queue, on 1 worker",
    "[follow_up]") {
  run_saturated_orders(1);
}
TEST_CASE(
    "follow_up: chains survive producers saturating the queue, on 2 workers",
    "[follow_up]") {
  run_saturated_orders(2);
}
TEST_CASE(
    "follow_up: chains survive producers saturating the queue, on 8 workers",
    "[follow_up]") {
  run_saturated_orders(8);
}

TEST_CASE(
    "follow_up: a chain 1000 deep completes while a producer keeps the queue "
    "full",
    "[follow_up]") {
  constexpr int kDepth = 1000;
  std::atomic<int> deepest{-1};
  std::atomic<int> refused{0};
  std::atomic<bool> chain_done{false};
  auto bus = make_bus({.queue_capacity = 16,
                       .workers = 1,
                       .overflow = OverflowPolicy::kBlock,
                       .block_timeout = std::chrono::minutes(1)});
  EventBus* raw = bus.get();
  auto on_step = bus->subscribe<Step>([&, raw](const Step& step) {
    // relaxed, all: read after the threads are joined / the bus drained.
    deepest.store(step.depth, std::memory_order_relaxed);
    if (step.depth + 1 == kDepth) {
      chain_done.store(true, std::memory_order_release);
      return;
    }
    if (!raw->publish(Step{step.depth + 1}).ok()) {
      refused.fetch_add(1, std::memory_order_relaxed);
    }
  });
  auto on_filler = bus->subscribe<Filler>([](const Filler&) {});
  // The producer fills every slot the worker frees until the chain ends
  // (bounded, should the chain stop).
  std::thread producer([&] {
    for (int n = 0; n < 2'000'000; ++n) {
      if (chain_done.load(std::memory_order_acquire)) return;
      (void)raw->publish(Filler{n});
    }
  });
  // Full before the chain starts.
  REQUIRE(wait_until([&] { return bus->stats().queue_depth >= 15; }));
  REQUIRE(bus->publish(Step{0}).ok());
  CHECK(wait_until([&] { return chain_done.load(std::memory_order_acquire); }));
  chain_done.store(true, std::memory_order_release);  // stop the producer
  producer.join();
  REQUIRE(bus->shutdown().ok());
  CHECK(deepest.load() == kDepth - 1);
  CHECK(refused.load() == 0);
  const fnbus::BusStats stats = bus->stats();
  CHECK(stats.published == stats.dispatched + stats.dead_lettered);
}

TEST_CASE(
    "follow_up: a full queue and one worker never deadlock a handler that "
    "publishes",
    "[follow_up]") {
  // The worker is held while the queue fills; its handler then publishes
  // into the full queue. Without headroom this handler would wait for
  // itself (kBlock) -- it must neither wait nor fail.
  Gate gate;
  std::atomic<int> refused{0};
  std::atomic<int> followed{0};
  auto bus = make_bus({.queue_capacity = 4,
                       .workers = 1,
                       .overflow = OverflowPolicy::kBlock,
                       .block_timeout = std::chrono::hours(1)});
  EventBus* raw = bus.get();
  auto on_order = bus->subscribe<Order>([&, raw](const Order& order) {
    if (order.id != 0) return;
    gate.pass();
    for (int i = 0; i < 10; ++i) {
      // relaxed: read after shutdown().
      if (!raw->publish(PaymentRequested{i}).ok()) {
        refused.fetch_add(1, std::memory_order_relaxed);
      }
    }
  });
  auto on_paid = bus->subscribe<PaymentRequested>([&](const PaymentRequested&) {
    followed.fetch_add(1, std::memory_order_relaxed);
  });
  REQUIRE(bus->publish(Order{0}).ok());
  REQUIRE(gate.wait_for_waiter());
  for (int i = 1; i <= 4; ++i) REQUIRE(bus->publish(Order{i}).ok());
  CHECK(bus->stats().queue_depth == 4);
  gate.open();
  REQUIRE(bus->shutdown().ok());
  CHECK(gate.timeouts.load() == 0);
  CHECK(refused.load() == 0);
  CHECK(followed.load() == 10);
}

// What a handler's publishes returned, with its only worker busy in it and
// the 2-slot queue full of external Orders behind it.
struct FollowUpsIntoFullQueue {
  std::vector<absl::Status> statuses;
  fnbus::BusStats stats;
};
FollowUpsIntoFullQueue publish_into_full_queue(std::size_t headroom,
                                               int follow_ups) {
  Gate gate;
  FollowUpsIntoFullQueue out;  // statuses written by the one worker
  auto bus = make_bus({.queue_capacity = 2,
                       .workers = 1,
                       .overflow = OverflowPolicy::kBlock,
                       .follow_up_headroom = headroom,
                       .block_timeout = std::chrono::hours(1)});
  EventBus* raw = bus.get();
  auto on_order = bus->subscribe<Order>([&, raw](const Order& order) {
    if (order.id != 0) return;
    gate.pass();
    for (int i = 0; i < follow_ups; ++i) {
      out.statuses.push_back(raw->publish(Filler{i}));
    }
  });
  auto on_filler = bus->subscribe<Filler>([](const Filler&) {});
  REQUIRE(bus->publish(Order{0}).ok());
  REQUIRE(gate.wait_for_waiter());
  REQUIRE(bus->publish(Order{1}).ok());  // the queue is full now
  REQUIRE(bus->publish(Order{2}).ok());
  gate.open();
  REQUIRE(bus->shutdown().ok());  // joins the worker: statuses are ours
  out.stats = bus->stats();
  return out;
}

TEST_CASE(
    "follow_up: past the headroom a follow-up is refused at once and counted",
    "[follow_up]") {
  const FollowUpsIntoFullQueue run = publish_into_full_queue(3, 5);
  REQUIRE(run.statuses.size() == 5);
  for (int i = 0; i < 3; ++i) {
    CHECK(run.statuses[static_cast<std::size_t>(i)].ok());
  }
  for (int i = 3; i < 5; ++i) {
    const absl::Status& status = run.statuses[static_cast<std::size_t>(i)];
    CHECK(status.code() == absl::StatusCode::kResourceExhausted);
    CHECK(std::string(status.message()).find("follow_up_headroom") !=
          std::string::npos);
  }
  CHECK(run.stats.rejected == 2);
  CHECK(run.stats.published == run.stats.dispatched + run.stats.dead_lettered);
}

TEST_CASE("follow_up: with headroom 0 the refusal says that headroom is off",
          "[follow_up]") {
  const FollowUpsIntoFullQueue run = publish_into_full_queue(0, 1);
  REQUIRE(run.statuses.size() == 1);
  CHECK(run.statuses[0].code() == absl::StatusCode::kResourceExhausted);
  const std::string message(run.statuses[0].message());
  CHECK(message.find("headroom is off") != std::string::npos);
  CHECK(message.find("follow_up_headroom = 0") != std::string::npos);
  CHECK(message.find("Filler") != std::string::npos);
  CHECK(run.stats.rejected == 1);
}

TEST_CASE("follow_up: follow_up_headroom above 2^20 is refused",
          "[follow_up]") {
  auto bus =
      EventBus::Create({.follow_up_headroom = (std::size_t{1} << 20) + 1});
  REQUIRE(bus.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(bus.status().message()).find("follow_up_headroom") !=
        std::string::npos);
}

// ---------------------------------------------------------------------------
// try_publish

// Move-only and bigger than the queue slot's inline buffer (heap path).
struct BigOrder {
  std::unique_ptr<int> id;
  std::array<char, 200> note{};
};
// Move-only and small (stored in the slot).
struct SmallOrder {
  std::unique_ptr<int> id;
};

template <typename E>
void check_refused_event_comes_back() {
  auto bus = make_bus({.queue_capacity = 2,
                       .overflow = OverflowPolicy::kReject,
                       .execution = fnbus::Execution::kManual});
  int handled = 0;
  auto sub = bus->subscribe<E>([&](const E& e) { handled += *e.id; });
  for (int i = 1; i <= 2; ++i) {
    E event{std::make_unique<int>(i)};
    REQUIRE(bus->try_publish(event).ok());
    CHECK(event.id == nullptr);  // moved into the queue
  }
  E refused{std::make_unique<int>(40)};
  const absl::Status status = bus->try_publish(refused);
  CHECK(status.code() == absl::StatusCode::kResourceExhausted);
  REQUIRE(refused.id != nullptr);  // handed back, whole
  CHECK(*refused.id == 40);
  CHECK(bus->stats().rejected == 1);
  // The caller retries it later, from its outbox.
  CHECK(bus->run_until_idle() == 2);
  REQUIRE(bus->try_publish(refused).ok());
  CHECK(bus->run_until_idle() == 1);
  CHECK(handled == 1 + 2 + 40);
}

TEST_CASE("try_publish: a refused small move-only event stays with the caller",
          "[try_publish]") {
  check_refused_event_comes_back<SmallOrder>();
}
TEST_CASE(
    "try_publish: a refused event bigger than the inline buffer stays with "
    "the caller",
    "[try_publish]") {
  check_refused_event_comes_back<BigOrder>();
}

TEST_CASE("try_publish: after shutdown the event stays with the caller",
          "[try_publish]") {
  auto bus = make_bus();
  REQUIRE(bus->shutdown().ok());
  BigOrder big{std::make_unique<int>(7)};
  SmallOrder small{std::make_unique<int>(8)};
  CHECK(bus->try_publish(big).code() == absl::StatusCode::kFailedPrecondition);
  CHECK(bus->try_publish(small).code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK((big.id != nullptr && *big.id == 7));
  CHECK((small.id != nullptr && *small.id == 8));
  CHECK(bus->stats().rejected == 2);
}

}  // namespace fnbus_follow_up_test
