// Replicated handlers on the bus (mesh/replicated.hpp): instances built by
// the factory, round-robin spread, a failing replica ejected and its events
// failed over (ManualClock), back after its cool-down, calls served by
// replicas with a retry landing on a healthy one, bad input, and a bounded
// stress on a pool with every event handled once.

#include "fnbus/mesh/replicated.hpp"

#include <atomic>
#include <cstddef>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "../support/bus_support.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace fnbus_replicated_test {

using fnbus::Context;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::mesh::Balancing;
using fnbus::mesh::OutlierOptions;
using fnbus::mesh::Replicated;
using fnbus::testing::ManualClock;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::message_of;
using namespace std::chrono_literals;

struct Charge {
  int order = 0;
};

// A payment client: one per replica, as if each had its own connection.
struct Client {
  std::size_t index = 0;
  bool down = false;
  int calls = 0;
  absl::Status operator()(const Charge&) {
    ++calls;
    if (down) return absl::UnavailableError("connection lost");
    return absl::OkStatus();
  }
};

Client make_client(std::size_t index) { return Client{.index = index}; }

// A manual bus on a ManualClock.
struct ReplicaBus {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::unique_ptr<EventBus> bus =
      make_bus({.execution = Execution::kManual, .clock = clock});

  void publish(int events) {
    for (int i = 0; i < events; ++i) REQUIRE(bus->publish(Charge{i}).ok());
    bus->run_until_idle();
  }
};

fnbus::mesh::ReplicatedOptions round_robin(
    std::optional<OutlierOptions> outlier = std::nullopt) {
  return {
      .replicas = {.balancing = Balancing::kRoundRobin, .outlier = outlier}};
}

TEST_CASE("replicated: the factory builds each replica with its index",
          "[mesh][replicated]") {
  ReplicaBus t;
  auto clients = Replicated<Charge, Client>::Create(3, make_client, *t.clock);
  REQUIRE(clients.ok());
  CHECK(clients->replicas().size() == 3);
  for (std::size_t i = 0; i < 3; ++i) CHECK(clients->instance(i).index == i);
}

TEST_CASE("replicated: round-robin spreads the events evenly",
          "[mesh][replicated]") {
  ReplicaBus t;
  auto clients = Replicated<Charge, Client>::Create(3, make_client, *t.clock,
                                                    round_robin());
  REQUIRE(clients.ok());
  fnbus::Subscription charging = t.bus->subscribe(*clients, {.name = "charge"});
  t.publish(9);
  for (std::size_t i = 0; i < 3; ++i) CHECK(clients->instance(i).calls == 3);
  CHECK(t.bus->stats().delivered == 9);
}

TEST_CASE(
    "replicated: a failing replica is ejected, its events go to the "
    "others, and it is back after the cool-down",
    "[mesh][replicated]") {
  ReplicaBus t;
  auto clients = Replicated<Charge, Client>::Create(
      3, make_client, *t.clock,
      round_robin(OutlierOptions{.consecutive_failures = 2,
                                 .base_ejection = 30s,
                                 .max_ejected_share = 0.5}));
  REQUIRE(clients.ok());
  clients->instance(1).down = true;
  fnbus::Subscription charging = t.bus->subscribe(*clients, {.name = "charge"});
  t.publish(12);
  // Replica 1 failed twice in a row (events 1 and 4), then was ejected.
  CHECK(clients->instance(1).calls == 2);
  CHECK(clients->instance(0).calls + clients->instance(2).calls == 10);
  CHECK(t.bus->stats().failed == 2);
  CHECK(clients->replicas().detector()->ejected(1));

  // After the cool-down it takes events again (and fails them again).
  clients->instance(1).down = false;
  t.clock->advance(30s);
  t.publish(3);
  CHECK_FALSE(clients->replicas().detector()->ejected(1));
  CHECK(clients->instance(1).calls == 3);
}

struct Quote {
  std::size_t replica = 0;
};
struct GetQuote {
  int sku = 0;
};
// A pricing replica answering with its index, or failing while down.
struct Pricer {
  std::size_t index = 0;
  bool down = false;
  absl::StatusOr<Quote> operator()(const GetQuote&) const {
    if (down) return absl::UnavailableError("pricing replica down");
    return Quote{.replica = index};
  }
};

TEST_CASE(
    "replicated: calls are served by the replicas, and a retry of a "
    "failed call is picked again",
    "[mesh][replicated][call]") {
  ReplicaBus t;
  auto pricers = Replicated<GetQuote, Pricer>::Create(
      2, [](std::size_t i) { return Pricer{.index = i}; }, *t.clock,
      round_robin(
          OutlierOptions{.consecutive_failures = 1, .max_ejected_share = 0.5}));
  REQUIRE(pricers.ok());
  pricers->instance(0).down = true;
  fnbus::mesh::Service pricing = t.bus->serve(
      *pricers, {.name = "pricing",
                 .retry = fnbus::resilience::RetryOptions{
                     .max_attempts = 2,
                     .backoff = {.initial = 10ms,
                                 .jitter = fnbus::resilience::Jitter::kNone}}});
  // The first pick (round-robin) is replica 0, which fails and is
  // ejected; the retry goes to replica 1.
  fnbus::mesh::CallFuture<Quote> quote = t.bus->call<Quote>(GetQuote{1});
  t.bus->run_until_idle();
  t.clock->advance(10ms);
  t.bus->run_due_timers();
  t.bus->run_until_idle();
  absl::StatusOr<Quote> answer = quote.get();
  REQUIRE(answer.ok());
  CHECK(answer->replica == 1);
  CHECK(pricing.stats().failed == 1);
  CHECK(pricing.stats().replied == 1);
}

TEST_CASE("replicated: bad input gives a clear Status", "[mesh][replicated]") {
  ManualClock clock;
  SECTION("zero replicas") {
    auto none = Replicated<Charge, Client>::Create(0, make_client, clock);
    REQUIRE_FALSE(none.ok());
    CHECK(none.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(message_of(none.status()), Catch::Contains(">= 1"));
  }
  SECTION("a NaN ejected share") {
    auto bad = Replicated<Charge, Client>::Create(
        2, make_client, clock,
        {.replicas = {.outlier = OutlierOptions{
                          .max_ejected_share =
                              std::numeric_limits<double>::quiet_NaN()}}});
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(message_of(bad.status()), Catch::Contains("max_ejected_share"));
  }
}

// Counts its calls; detects two calls at once on one replica.
struct Worker {
  std::atomic<int> calls{0};
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  Worker() = default;
  Worker(Worker&&) noexcept {}
  void operator()(const Charge&) {
    if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
    calls.fetch_add(1);
    inside.fetch_sub(1);
  }
};

TEST_CASE(
    "replicated: on a pool every event is handled once, one call at a "
    "time per replica",
    "[mesh][replicated]") {
  std::unique_ptr<EventBus> bus = make_bus({.workers = 2});
  auto workers = Replicated<Charge, Worker>::Create(
      3, [](std::size_t) { return Worker(); }, bus->clock());
  REQUIRE(workers.ok());
  fnbus::Subscription handling = bus->subscribe(*workers, {.name = "work"});
  constexpr int kEvents = 3000;
  for (int i = 0; i < kEvents; ++i) {
    REQUIRE(bus->publish(Charge{i}, {.overflow = fnbus::OverflowPolicy::kBlock,
                                     .block_timeout = 10s})
                .ok());
  }
  REQUIRE(bus->shutdown().ok());
  int total = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    total += workers->instance(i).calls.load();
    CHECK(workers->instance(i).overlaps.load() == 0);
    CHECK(workers->replicas().loads().in_flight(i) == 0);
  }
  CHECK(total == kEvents);
}

}  // namespace fnbus_replicated_test
