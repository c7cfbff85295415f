// Tests of shutdown(kDrain) bounded by BusConfig::drain_timeout: a handler
// that publishes its own event again each time it runs (a retry loop that
// never succeeds) must not keep shutdown() or the destructor from
// returning. Past the timeout, measured on the bus clock, what is still
// queued is dead-lettered with DeadLetterReason::kDrainTimeout and even
// handlers' publishes are refused.
//
// Rules followed throughout: no Catch2 assertion runs off the test thread
// (handlers record into atomics); no sleep orders threads; every wait is
// bounded, and a drain that does not end is ended by stopping the retry
// loop, so that the test fails instead of hanging. Time is a
// testing::ManualClock: the deadline passes when the test (or a handler)
// advances it. State that handlers use is declared before the bus.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/testing/manual_clock.hpp"
#include "fnbus/testing/recording_sinks.hpp"

namespace fnbus_bus_shutdown_test {

using namespace std::chrono_literals;
using fnbus::BusConfig;
using fnbus::BusStats;
using fnbus::DeadLetterReason;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::ShutdownMode;
using fnbus::Subscription;
using fnbus::testing::DeadLetterRecorder;
using fnbus::testing::ManualClock;
using fnbus::testing::RecordedDeadLetter;
using fnbus::testing_support::contains;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::NamedEvent;
using fnbus::testing_support::wait_until;

// ---------------------------------------------------------------------------
// Events. This namespace keeps them apart from other test files' events.

struct Retry {  // its handler publishes it again
  static constexpr std::string_view kEventName = "shutdown.Retry";
  int attempt = 0;
};
// No subscriber; tells whether the bus accepts events.
using Probe = NamedEvent<"shutdown.Probe">;

constexpr auto kDrainTimeout = 5s;
// The guard of the kManual tests: far more runs than a drain cut short
// after kRunsBeforeDeadline needs.
constexpr int kManualRunCap = 100'000;
// Runs of the drain after which a kManual test's handler moves time past
// the deadline.
constexpr int kRunsBeforeDeadline = 10;
// Retry chains started by each test: each ends exactly once, dead-lettered
// or by a refused publish.
constexpr int kChains = 4;

// A Retry handler that publishes the event again each time it runs. It
// stops only when the test sets `stop`, or after `cap` runs: guards that
// let a drain which never times out finish (and the test fail) instead of
// hanging. The cap is for buses whose drain runs in the test's own thread
// (kManual), where the run count at the deadline is exact; on a thread
// pool it would depend on speed, so there the test sets `stop`.
struct RetryLoop {
  explicit RetryLoop(int run_cap = std::numeric_limits<int>::max())
      : cap(run_cap) {}

  const int cap;
  std::atomic<int> runs{0};
  std::atomic<int> refused{0};       // re-publish: FailedPrecondition
  std::atomic<int> other_errors{0};  // re-publish: any other error
  std::atomic<int> stopped{0};       // chains ended by `stop` or the cap
  std::atomic<bool> capped{false};
  std::atomic<bool> stop{false};
  // Called on each run before the re-publish (e.g. to move the clock).
  std::function<void()> on_run;

  Subscription subscribe(EventBus& bus) {
    return bus.subscribe<Retry>([this, &bus](const Retry& r) {
      const int run = runs.fetch_add(1) + 1;
      if (on_run) on_run();
      if (run >= cap) capped.store(true);
      if (run >= cap || stop.load()) {
        stopped.fetch_add(1);
        return;
      }
      // A bounded queue can look full for a moment while a worker that
      // took a slot is descheduled before it frees it: try again then (a
      // handler cannot block on its own bus), so that only a refusal or a
      // lasting failure ends the chain.
      absl::Status status;
      (void)wait_until([&] {
        status = bus.publish(Retry{r.attempt + 1});
        return status.code() != absl::StatusCode::kResourceExhausted;
      });
      if (status.code() == absl::StatusCode::kFailedPrecondition) {
        refused.fetch_add(1);
      } else if (!status.ok()) {
        other_errors.fetch_add(1);
      }
    });
  }
};

BusConfig drain_config(Execution execution,
                       const std::shared_ptr<ManualClock>& clock,
                       const DeadLetterRecorder& dead) {
  BusConfig config;
  config.queue_capacity = std::size_t{1} << 14;
  config.workers = 2;
  config.execution = execution;
  config.clock = clock;
  config.drain_timeout = kDrainTimeout;
  config.dead_letter_sink = dead.sink();
  return config;
}

// What every drain cut short by the timeout leaves: each dead letter says
// kDrainTimeout; each Retry chain ended exactly once, by a dead letter or
// by a refused re-publish, and none by the guards.
void check_drain_cut_short(const DeadLetterRecorder& dead,
                           const RetryLoop& loop) {
  CHECK_FALSE(loop.capped.load());
  CHECK(loop.stopped.load() == 0);
  CHECK(loop.other_errors.load() == 0);
  int dead_retries = 0;
  for (const RecordedDeadLetter& letter : dead.records()) {
    INFO(letter);
    CHECK(letter.reason == DeadLetterReason::kDrainTimeout);
    if (letter.event_type == fnbus::event_type_name<Retry>()) ++dead_retries;
  }
  CHECK(dead_retries + loop.refused.load() == kChains);
}

void check_final_stats(const BusStats& stats, const DeadLetterRecorder& dead) {
  CHECK(stats.published == stats.dispatched + stats.dead_lettered);
  CHECK(stats.dead_lettered == dead.size());
  CHECK(stats.queue_depth == 0);
}

// ---------------------------------------------------------------------------
// Cut short by the timeout.

TEST_CASE(
    "shutdown: a drain that outlasts drain_timeout dead-letters the rest and "
    "returns (thread pool)",
    "[event_bus][shutdown]") {
  RetryLoop loop;
  DeadLetterRecorder dead;
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus(drain_config(Execution::kThreadPool, clock, dead));
  auto sub = loop.subscribe(*bus);
  for (int i = 0; i < kChains; ++i) REQUIRE(bus->publish(Retry{}).ok());
  REQUIRE(wait_until([&] { return loop.runs.load() >= 100; }));

  std::atomic<bool> stopping{false};
  std::atomic<bool> returned{false};
  absl::Status status = absl::UnknownError("not returned");
  std::jthread stopper([&] {
    stopping.store(true);
    status = bus->shutdown(ShutdownMode::kDrain);
    returned.store(true);
  });
  // Refused from this thread once shutdown has begun; its deadline was
  // set before that. Probing starts only as shutdown() is called, so that
  // the few probes accepted before leave the chains room in the queue.
  REQUIRE(wait_until([&] { return stopping.load(); }));
  const bool closed = wait_until([&] {
    return bus->publish(Probe{}).code() ==
           absl::StatusCode::kFailedPrecondition;
  });
  clock->advance(kDrainTimeout + 1s);
  const bool ended = wait_until([&] { return returned.load(); });
  if (!ended) loop.stop.store(true);  // let the drain finish, then fail
  stopper.join();

  REQUIRE(closed);
  CHECK(ended);
  CHECK(status.ok());
  CHECK(dead.size() >= 1);
  check_drain_cut_short(dead, loop);
  check_final_stats(bus->stats(), dead);
  // Later calls return at once.
  CHECK(bus->shutdown().ok());
}

// A kManual bus whose Retry chains have started; its drain runs in the
// test's thread, and the handler moves time past the deadline on the
// kRunsBeforeDeadline-th run of the drain.
struct ManualDrain {
  RetryLoop loop{kManualRunCap};
  DeadLetterRecorder dead;
  std::atomic<bool> draining{false};
  std::atomic<int> runs_in_drain{0};
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::unique_ptr<EventBus> bus;
  Subscription sub;

  ManualDrain() {
    loop.on_run = [this] {
      if (draining.load() &&
          runs_in_drain.fetch_add(1) + 1 == kRunsBeforeDeadline) {
        clock->advance(kDrainTimeout + 1s);
      }
    };
    bus = make_bus(drain_config(Execution::kManual, clock, dead));
    sub = loop.subscribe(*bus);
    for (int i = 0; i < kChains; ++i) REQUIRE(bus->publish(Retry{}).ok());
    CHECK(bus->run_all() == kChains);  // each chain has its next Retry queued
    draining.store(true);
  }
};

TEST_CASE(
    "shutdown: a drain that outlasts drain_timeout dead-letters the rest and "
    "returns (manual)",
    "[event_bus][shutdown]") {
  ManualDrain m;
  REQUIRE(m.bus->shutdown(ShutdownMode::kDrain).ok());
  CHECK(m.runs_in_drain.load() >= kRunsBeforeDeadline);
  CHECK(m.dead.size() >= 1);
  check_drain_cut_short(m.dead, m.loop);
  check_final_stats(m.bus->stats(), m.dead);
}

TEST_CASE("shutdown: the destructor's drain is bounded by drain_timeout too",
          "[event_bus][shutdown]") {
  ManualDrain m;
  m.bus.reset();  // drains in this thread, as shutdown(kDrain) does
  CHECK(m.runs_in_drain.load() >= kRunsBeforeDeadline);
  CHECK(m.dead.size() >= 1);
  check_drain_cut_short(m.dead, m.loop);
}

TEST_CASE(
    "shutdown: a drain that ends before drain_timeout dead-letters nothing",
    "[event_bus][shutdown]") {
  std::atomic<int> handled{0};
  DeadLetterRecorder dead;
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus(drain_config(Execution::kThreadPool, clock, dead));
  auto sub = bus->subscribe<Retry>([&](const Retry&) { handled.fetch_add(1); });
  for (int i = 0; i < kChains; ++i) REQUIRE(bus->publish(Retry{}).ok());
  REQUIRE(bus->shutdown(ShutdownMode::kDrain).ok());
  CHECK(handled.load() == kChains);
  CHECK(dead.empty());
  check_final_stats(bus->stats(), dead);
}

// ---------------------------------------------------------------------------
// Configuration.

TEST_CASE("shutdown: drain_timeout defaults to 30 seconds",
          "[event_bus][shutdown]") {
  CHECK(BusConfig{}.drain_timeout == std::chrono::nanoseconds(30s));
  CHECK(fnbus::to_string(DeadLetterReason::kDrainTimeout) == "drain_timeout");
}

TEST_CASE("shutdown: EventBus::Create refuses a drain_timeout out of range",
          "[event_bus][shutdown]") {
  for (const std::chrono::nanoseconds timeout :
       {std::chrono::nanoseconds(0), std::chrono::nanoseconds(-1),
        std::chrono::nanoseconds(-1s), std::chrono::nanoseconds(1h) + 1ns,
        std::chrono::nanoseconds(2h)}) {
    INFO("drain_timeout " << timeout.count() << "ns");
    BusConfig config;
    config.drain_timeout = timeout;
    const auto bus = EventBus::Create(std::move(config));
    REQUIRE_FALSE(bus.ok());
    CHECK(bus.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(contains(std::string(bus.status().message()), "drain_timeout"));
  }
  for (const std::chrono::nanoseconds timeout :
       {std::chrono::nanoseconds(1), std::chrono::nanoseconds(1h)}) {
    INFO("drain_timeout " << timeout.count() << "ns");
    BusConfig config;
    config.drain_timeout = timeout;
    CHECK(EventBus::Create(std::move(config)).ok());
  }
}

}  // namespace fnbus_bus_shutdown_test
