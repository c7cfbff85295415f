// Tests of EventBus::resize_workers(): bounds and errors, events handled
// exactly once while the pool changes size, per-worker metrics beyond the
// starting size, and gauges.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"

namespace {

using fnbus::BusConfig;
using fnbus::EventBus;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::wait_until;

struct Job {
  std::uint32_t id = 0;
};

}  // namespace

TEST_CASE("event_bus resize: BusConfig::max_workers is checked",
          "[event_bus][resize]") {
  auto below = EventBus::Create({.workers = 4, .max_workers = 2});
  REQUIRE(below.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(below.status().message().find("max_workers is 2; use workers (4)") !=
        std::string::npos);
  auto above = EventBus::Create({.workers = 1, .max_workers = 1025});
  REQUIRE(above.status().code() == absl::StatusCode::kInvalidArgument);

  auto bus = make_bus({.workers = 1, .max_workers = 3});
  CHECK(bus->pool_stats().workers == 1);
  CHECK(bus->pool_stats().max_workers == 3);
  CHECK(bus->metrics().gauges.workers_max == 3);
}

TEST_CASE("event_bus resize: out-of-range sizes and the wrong mode are refused",
          "[event_bus][resize]") {
  auto bus = make_bus({.workers = 2, .max_workers = 4});
  const absl::Status zero = bus->resize_workers(0);
  CHECK(zero.code() == absl::StatusCode::kInvalidArgument);
  CHECK(zero.message().find("use 1 to 4 (BusConfig::max_workers") !=
        std::string::npos);
  CHECK(bus->resize_workers(5).code() == absl::StatusCode::kInvalidArgument);
  CHECK(bus->pool_stats().workers == 2);  // refused calls change nothing

  // Without max_workers the pool can shrink and grow back to `workers`.
  auto fixed = make_bus({.workers = 2});
  CHECK(fixed->resize_workers(1).ok());
  CHECK(fixed->resize_workers(2).ok());
  CHECK(fixed->resize_workers(3).code() == absl::StatusCode::kInvalidArgument);

  auto manual = make_bus({.execution = fnbus::Execution::kManual});
  const absl::Status no_pool = manual->resize_workers(1);
  CHECK(no_pool.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(no_pool.message().find("Execution::kThreadPool") != std::string::npos);

  REQUIRE(bus->shutdown().ok());
  CHECK(bus->resize_workers(3).code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE(
    "event_bus resize: every event is handled exactly once while the pool "
    "grows and shrinks",
    "[event_bus][resize]") {
  constexpr std::size_t kMax = 6;
  constexpr std::uint32_t kEvents = 20'000;
  auto bus = make_bus({.queue_capacity = 1024,
                       .workers = 1,
                       .max_workers = kMax,
                       .overflow = fnbus::OverflowPolicy::kBlock,
                       .block_timeout = std::chrono::seconds(30),
                       .idle_spin = std::chrono::microseconds(5)});
  std::vector<std::atomic<std::uint32_t>> handled(kEvents);
  auto subscription = bus->subscribe<Job>([&](const Job& job) {
    // relaxed: read after shutdown() joined the workers.
    handled[job.id].fetch_add(1, std::memory_order_relaxed);
  });

  std::atomic<bool> publishing{true};
  std::atomic<std::uint64_t> publish_errors{0};
  std::thread publisher([&] {
    for (std::uint32_t i = 0; i < kEvents; ++i) {
      if (!bus->publish(Job{i}).ok()) {
        // relaxed: read after the join.
        publish_errors.fetch_add(1, std::memory_order_relaxed);
      }
    }
    // release: pairs with the resizer's acquire load.
    publishing.store(false, std::memory_order_release);
  });
  std::uint64_t resizes = 0;
  std::uint64_t resize_errors = 0;
  std::uint64_t state = 99;
  // acquire: see the publisher's release store.
  while (publishing.load(std::memory_order_acquire) && resizes < 200'000) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    if (!bus->resize_workers(1 + (state >> 33) % kMax).ok()) ++resize_errors;
    ++resizes;
    std::this_thread::yield();
  }
  publisher.join();
  REQUIRE(bus->shutdown().ok());

  CHECK(publish_errors.load() == 0);
  CHECK(resize_errors == 0);
  const auto deliveries = fnbus::testing_support::count_deliveries(handled);
  CHECK(deliveries.missing == 0);
  CHECK(deliveries.repeated == 0);
  const fnbus::BusStats stats = bus->stats();
  CHECK(stats.published == kEvents);
  CHECK(stats.dispatched == kEvents);
  CHECK(stats.delivered == kEvents);
  // Counted in the shards of every worker index that ran, up to kMax - 1.
  const fnbus::metrics::MetricsSnapshot metrics = bus->metrics();
  REQUIRE(metrics.events.size() == 1);
  CHECK(metrics.events[0].dispatched == kEvents);
  CHECK(metrics.events[0].end_to_end.count() == kEvents);
}

TEST_CASE("event_bus resize: a handler can grow and shrink its own bus",
          "[event_bus][resize]") {
  auto bus = make_bus({.workers = 1, .max_workers = 3});
  std::atomic<int> status_code{-1};
  std::atomic<int> handled{0};
  auto subscription = bus->subscribe<Job>([&](const Job& job) {
    if (job.id > 0) {
      // release: pairs with the test's acquire load.
      status_code.store(static_cast<int>(bus->resize_workers(job.id).code()),
                        std::memory_order_release);
    }
    // release: as above.
    handled.fetch_add(1, std::memory_order_release);
  });
  const auto resize_from_handler = [&](std::uint32_t size) {
    status_code.store(-1);
    REQUIRE(bus->publish(Job{size}).ok());
    REQUIRE(wait_until(
        [&] { return status_code.load(std::memory_order_acquire) != -1; }));
    CHECK(status_code.load() == static_cast<int>(absl::StatusCode::kOk));
  };
  resize_from_handler(3);
  CHECK(bus->pool_stats().workers == 3);
  // Shrinking may retire the very worker that asks: it finishes its event.
  resize_from_handler(1);
  CHECK(bus->pool_stats().workers == 1);
  REQUIRE(wait_until([&] { return bus->pool_stats().retiring == 0; }));
  // Growing again from a handler joins the exited threads first.
  resize_from_handler(3);
  CHECK(bus->pool_stats().workers == 3);
  for (std::uint32_t i = 0; i < 50; ++i) REQUIRE(bus->publish(Job{0}).ok());
  REQUIRE(wait_until(
      [&] { return handled.load(std::memory_order_acquire) == 53; }));
  REQUIRE(bus->shutdown().ok());
}

TEST_CASE(
    "event_bus resize: gauges show the new size and retiring workers that "
    "finish their event",
    "[event_bus][resize]") {
  auto bus = make_bus({.workers = 2,
                       .max_workers = 4,
                       .idle_spin = std::chrono::nanoseconds(0)});
  fnbus::testing_support::Gate gate;
  auto subscription = bus->subscribe<Job>([&](const Job&) { gate.pass(); });
  REQUIRE(bus->resize_workers(4).ok());
  fnbus::metrics::Gauges gauges = bus->metrics().gauges;
  CHECK(gauges.workers == 4);
  CHECK(gauges.workers_max == 4);

  // Four events held in their handlers, then a shrink to one.
  for (std::uint32_t i = 0; i < 4; ++i) REQUIRE(bus->publish(Job{i}).ok());
  REQUIRE(wait_until([&] { return gate.waiting.load() == 4; }));
  REQUIRE(bus->resize_workers(1).ok());
  gauges = bus->metrics().gauges;
  CHECK(gauges.workers == 1);
  CHECK(gauges.workers_retiring == 3);
  CHECK(gauges.in_flight == 4);  // the retiring ones still count
  CHECK(gauges.workers_busy == 1);

  gate.open();
  REQUIRE(wait_until([&] { return bus->stats().delivered == 4; }));
  REQUIRE(
      wait_until([&] { return bus->metrics().gauges.workers_retiring == 0; }));
  REQUIRE(bus->shutdown().ok());
  CHECK(gate.timeouts.load() == 0);
  CHECK(bus->stats().dispatched == 4);
}

TEST_CASE(
    "event_bus resize: after shutdown the worker gauges and pool stats "
    "read zero",
    "[event_bus][resize]") {
  auto bus = make_bus({.workers = 4,
                       .max_workers = 4,
                       .idle_spin = std::chrono::nanoseconds(0)});
  REQUIRE(
      wait_until([&] { return bus->metrics().gauges.workers_parked == 4; }));
  REQUIRE(bus->shutdown().ok());

  // shutdown() joined every worker: none runs, sleeps, starts or retires.
  const fnbus::metrics::Gauges gauges = bus->metrics().gauges;
  CHECK(gauges.workers == 0);
  CHECK(gauges.workers_busy == 0);
  CHECK(gauges.workers_idle == 0);
  CHECK(gauges.workers_parked == 0);
  CHECK(gauges.workers_starting == 0);
  CHECK(gauges.workers_retiring == 0);
  CHECK(gauges.in_flight == 0);
  // workers_max stays BusConfig::max_workers: a configured bound, like
  // queue_capacity, not a count of threads.
  CHECK(gauges.workers_max == 4);
  const fnbus::ThreadPoolStats pool = bus->pool_stats();
  CHECK(pool.workers == 0);
  CHECK(pool.parked == 0);
  CHECK(pool.spinning == 0);
  CHECK(pool.starting == 0);
  CHECK(pool.retiring == 0);
  CHECK(pool.max_workers == 4);
}
