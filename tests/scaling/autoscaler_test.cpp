// Tests of scaling::Autoscaler on real buses (real worker threads) whose
// ticks a ManualClock drives: a step in load grows the pool to the
// policy's target and it returns to the minimum afterwards, with every
// event handled once; bad options, throwing policies and bad targets.

#include "fnbus/scaling/autoscaler.hpp"

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "../support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/scaling/policies.hpp"
#include "fnbus/scaling/slo_policies.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::scaling::Autoscaler;
using fnbus::scaling::AutoscalerOptions;
using fnbus::scaling::AutoscalerTick;
using fnbus::scaling::LoadSnapshot;
using fnbus::scaling::ScalingDecision;
using fnbus::testing::ManualClock;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::wait_until;

struct Order {
  std::uint32_t id = 0;
};

// A policy that answers whatever the test sets (or throws).
std::unique_ptr<fnbus::scaling::ScalingPolicy> scripted(
    std::shared_ptr<std::atomic<double>> target) {
  return fnbus::scaling::make_policy(
      "scripted", [target](const LoadSnapshot&) -> ScalingDecision {
        // relaxed: the test sets it before advancing the clock, which
        // orders it (ManualClock's mutex).
        const double value = target->load(std::memory_order_relaxed);
        if (value == -2) throw std::runtime_error("model diverged");
        return {value, "scripted"};
      });
}

// Drives the autoscaler's ticks: each tick() advances the manual clock by
// one period and returns once the controller has run the tick and is
// asleep again (ManualClock counts a sleeper out as soon as its deadline
// passes).
class TickDriver {
 public:
  TickDriver(ManualClock& clock, fnbus::Duration period)
      : clock_(clock), period_(period) {}
  void tick() {
    REQUIRE(clock_.wait_for_sleepers(1));
    clock_.advance(period_);
    REQUIRE(clock_.wait_for_sleepers(1));
  }

 private:
  ManualClock& clock_;
  fnbus::Duration period_;
};

// Collects on_tick reports (called on the controller thread).
struct TickLog {
  std::mutex mutex;
  std::vector<AutoscalerTick> ticks;
  std::vector<std::string> errors;

  AutoscalerOptions hook(AutoscalerOptions options) {
    options.on_tick = [this](const AutoscalerTick& tick) {
      std::lock_guard lock(mutex);
      ticks.push_back(tick);
    };
    options.error_sink = [this](const absl::Status& status) {
      std::lock_guard lock(mutex);
      errors.emplace_back(status.message());
    };
    return options;
  }
  AutoscalerTick last() {
    std::lock_guard lock(mutex);
    REQUIRE(!ticks.empty());
    return ticks.back();
  }
};

std::unique_ptr<Autoscaler> start(
    fnbus::EventBus& bus, std::unique_ptr<fnbus::scaling::ScalingPolicy> policy,
    AutoscalerOptions options) {
  auto autoscaler =
      Autoscaler::Start(bus, std::move(policy), std::move(options));
  INFO(autoscaler.status());
  REQUIRE(autoscaler.ok());
  return *std::move(autoscaler);
}

}  // namespace

TEST_CASE(
    "autoscaler: a step in load grows the pool to the policy's target and "
    "it returns to the minimum after, each event handled once",
    "[autoscaler]") {
  constexpr std::size_t kMax = 8;
  constexpr std::uint32_t kEvents = 400;
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus({.queue_capacity = 1024,
                       .workers = 1,
                       .max_workers = kMax,
                       .idle_spin = 0ns,
                       .clock = clock});
  fnbus::testing_support::Gate gate;
  std::vector<std::atomic<std::uint32_t>> handled(kEvents);
  auto subscription = bus->subscribe<Order>([&](const Order& order) {
    gate.pass();
    // relaxed: read after shutdown() joined the workers.
    handled[order.id].fetch_add(1, std::memory_order_relaxed);
  });
  TickLog log;
  auto autoscaler = start(*bus, *fnbus::scaling::UtilizationRatio::Create({}),
                          log.hook({.tick = 100ms,
                                    .governor = {.min_workers = 1,
                                                 .max_workers = kMax,
                                                 .down_stabilisation = 1s}}));
  TickDriver driver(*clock, 100ms);
  driver.tick();
  CHECK(bus->pool_stats().workers == 1);  // no load: stays at the minimum

  // The step: a burst the handlers hold until the gate opens, so that the
  // demand (in flight + queued) stands while the controller ticks.
  for (std::uint32_t i = 0; i < kEvents; ++i) {
    REQUIRE(bus->publish(Order{i}).ok());
  }
  std::vector<std::size_t> sizes;
  for (int i = 0; i < 20 && bus->pool_stats().workers < kMax; ++i) {
    driver.tick();
    const AutoscalerTick tick = log.last();
    // Every tick resizes the pool to exactly what the governor allowed.
    CHECK(tick.workers_after == tick.governed.workers);
    CHECK(bus->pool_stats().workers == tick.governed.workers);
    CHECK(tick.decision.target >= static_cast<double>(tick.workers_before));
    sizes.push_back(tick.workers_after);
  }
  INFO("sizes per tick: " << ::Catch::Detail::stringify(sizes));
  REQUIRE(bus->pool_stats().workers == kMax);
  // Growth is rate-limited: at most max(2R, R + 4) per tick (1 -> 5 -> 8).
  REQUIRE(sizes.size() == 2);
  CHECK(sizes[0] == 5);
  // The target is the policy's: demand / 0.7, clamped to the maximum.
  CHECK(log.last().decision.target > kMax);
  CHECK(log.last().governed.clamped);

  gate.open();
  REQUIRE(wait_until([&] { return bus->stats().delivered == kEvents; }));

  // Load stopped: back to the minimum once the 1 s stabilisation window
  // has passed, halving at most per tick.
  int ticks_to_min = 0;
  while (bus->pool_stats().workers > 1 && ticks_to_min < 60) {
    driver.tick();
    ++ticks_to_min;
  }
  INFO("ticks to the minimum: " << ticks_to_min);
  {
    std::lock_guard lock(log.mutex);
    for (const AutoscalerTick& t : log.ticks) {
      UNSCOPED_INFO("tick " << t.number << " in_flight " << t.load.in_flight
                            << " queue " << t.load.queue_depth << " target "
                            << t.decision.target << " -> " << t.governed.workers
                            << " (" << t.governed.reason << ")");
    }
  }
  CHECK(bus->pool_stats().workers == 1);
  CHECK(ticks_to_min >= 10);  // held by the 1 s window (10 ticks)
  REQUIRE(wait_until([&] { return bus->pool_stats().retiring == 0; }));

  autoscaler->stop();
  REQUIRE(bus->shutdown().ok());
  CHECK(gate.timeouts.load() == 0);
  const auto deliveries = fnbus::testing_support::count_deliveries(handled);
  CHECK(deliveries.missing == 0);
  CHECK(deliveries.repeated == 0);
  CHECK(bus->stats().dispatched == kEvents);
  const fnbus::scaling::AutoscalerStats stats = autoscaler->stats();
  CHECK(stats.resizes >= 5);  // 1 -> 5 -> 8, then 8 -> 4 -> 2 -> 1
  CHECK(stats.policy_errors == 0);
  CHECK(stats.workers == 1);
  std::lock_guard lock(log.mutex);
  CHECK(log.errors.empty());
}

TEST_CASE("autoscaler: bad options are InvalidArgument or FailedPrecondition",
          "[autoscaler]") {
  auto bus = make_bus({.workers = 2, .max_workers = 8});
  const auto target = std::make_shared<std::atomic<double>>(2.0);
  const auto status_of = [&](AutoscalerOptions options) {
    return Autoscaler::Start(*bus, scripted(target), std::move(options))
        .status();
  };
  const auto expect = [](const absl::Status& status, absl::StatusCode code,
                         const std::string& words) {
    INFO(status);
    CHECK(status.code() == code);
    CHECK(std::string(status.message()).find(words) != std::string::npos);
  };
  using Code = absl::StatusCode;
  expect(status_of({.governor = {.min_workers = 4, .max_workers = 2}}),
         Code::kInvalidArgument, "min_workers");
  expect(status_of({.governor = {.min_workers = 1, .max_workers = 0}}),
         Code::kInvalidArgument, "max_workers");
  expect(status_of({.governor = {.min_workers = 0, .max_workers = 4}}),
         Code::kInvalidArgument, "min_workers");
  expect(status_of({.governor = {.min_workers = 1, .max_workers = 16}}),
         Code::kInvalidArgument, "raise BusConfig::max_workers to 16");
  expect(status_of({.tick = 0ms, .governor = {.max_workers = 8}}),
         Code::kInvalidArgument, "tick is 0ns");
  expect(status_of({.tick = -5ms, .governor = {.max_workers = 8}}),
         Code::kInvalidArgument, "tick");
  expect(status_of({.governor = {.max_workers = 8}, .fast_window = 0s}),
         Code::kInvalidArgument, "window");
  expect(Autoscaler::Start(*bus, nullptr, {.governor = {.max_workers = 8}})
             .status(),
         Code::kInvalidArgument, "policy is null");

  // SLO <= 0 is refused where the SLO is given: by the policies.
  CHECK(fnbus::scaling::ErlangSlo::Create({.wait_slo = 0ms}).status().code() ==
        Code::kInvalidArgument);
  CHECK(fnbus::scaling::SloGuard::Create({.slo = {.wait_slo = -1ms}})
            .status()
            .code() == Code::kInvalidArgument);

  auto manual = make_bus({.execution = fnbus::Execution::kManual});
  expect(Autoscaler::Start(*manual, scripted(target),
                           {.governor = {.max_workers = 1}})
             .status(),
         Code::kFailedPrecondition, "Execution::kThreadPool");

  CHECK(bus->pool_stats().workers == 2);  // no refused start touched it
  REQUIRE(bus->shutdown().ok());
  expect(status_of({.governor = {.max_workers = 8}}), Code::kFailedPrecondition,
         "shutdown");
  // Joined by the shutdown, and not restarted by the refused start.
  CHECK(bus->pool_stats().workers == 0);
}

TEST_CASE("autoscaler: Start moves the pool into [min_workers, max_workers]",
          "[autoscaler]") {
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus({.workers = 1, .max_workers = 8, .clock = clock});
  const auto target = std::make_shared<std::atomic<double>>(3.0);
  auto autoscaler = start(*bus, scripted(target),
                          {.governor = {.min_workers = 3, .max_workers = 6}});
  CHECK(bus->pool_stats().workers == 3);
  autoscaler->stop();
  autoscaler->stop();                     // idempotent
  CHECK(bus->pool_stats().workers == 3);  // stopping keeps the size
}

TEST_CASE(
    "autoscaler: a throwing policy, NaN and negative targets keep the size, "
    "out-of-range targets are clamped and counted",
    "[autoscaler]") {
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus({.workers = 2, .max_workers = 8, .clock = clock});
  const auto target = std::make_shared<std::atomic<double>>(2.0);
  TickLog log;
  auto autoscaler = start(*bus, scripted(target),
                          log.hook({.governor = {.min_workers = 1,
                                                 .max_workers = 4,
                                                 .down_stabilisation = 0s}}));
  TickDriver driver(*clock, 100ms);

  target->store(-2);  // throws
  driver.tick();
  CHECK(bus->pool_stats().workers == 2);
  {
    std::lock_guard lock(log.mutex);
    REQUIRE(log.errors.size() == 1);
    CHECK(
        log.errors[0].find("scaling policy scripted threw (model diverged)") !=
        std::string::npos);
    CHECK(log.errors[0].find("keeps its 2 workers") != std::string::npos);
  }
  CHECK(autoscaler->stats().policy_errors == 1);

  target->store(std::numeric_limits<double>::quiet_NaN());
  driver.tick();
  target->store(-1);
  driver.tick();
  CHECK(bus->pool_stats().workers == 2);
  CHECK(autoscaler->stats().invalid_targets == 2);

  target->store(100);  // above max_workers = 4
  driver.tick();
  CHECK(bus->pool_stats().workers == 4);
  target->store(0);  // below min_workers = 1: halves per tick, then 1
  driver.tick();
  driver.tick();
  CHECK(bus->pool_stats().workers == 1);
  const fnbus::scaling::AutoscalerStats stats = autoscaler->stats();
  CHECK(stats.clamped_targets == 3);
  CHECK(stats.ticks == 6);
  CHECK(stats.resizes == 3);
  CHECK(stats.workers == 1);
  CHECK(stats.last_target == 0);
  autoscaler->stop();
}

TEST_CASE("autoscaler: a bus that shuts down ends the controller's resizing",
          "[autoscaler]") {
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus({.workers = 2, .max_workers = 4, .clock = clock});
  const auto target = std::make_shared<std::atomic<double>>(2.0);
  TickLog log;
  auto autoscaler =
      start(*bus, scripted(target), log.hook({.governor = {.max_workers = 4}}));
  TickDriver driver(*clock, 100ms);
  driver.tick();
  REQUIRE(bus->shutdown().ok());
  target->store(4);
  REQUIRE(clock->wait_for_sleepers(1));
  clock->advance(100ms);
  // The refused resize stops the controller by itself.
  CHECK(wait_until([&] { return autoscaler->stopping(); }));
  autoscaler->stop();
  CHECK(autoscaler->stats().resize_errors == 1);
  std::lock_guard lock(log.mutex);
  REQUIRE(log.errors.size() == 1);
  CHECK(log.errors[0].find("shutdown") != std::string::npos);
}

TEST_CASE("autoscaler: tick_now runs one tick in the caller", "[autoscaler]") {
  auto bus = make_bus({.workers = 1, .max_workers = 4});
  const auto target = std::make_shared<std::atomic<double>>(3.0);
  // A one-hour period: only tick_now() ticks during the test.
  auto autoscaler =
      start(*bus, scripted(target),
            {.tick = std::chrono::hours(1), .governor = {.max_workers = 4}});
  const AutoscalerTick first = autoscaler->tick_now();
  CHECK(first.number == 1);
  CHECK(first.workers_before == 1);
  CHECK(first.decision.target == 3.0);
  CHECK(first.decision.reason == "scripted");
  CHECK(first.workers_after == 3);
  CHECK(first.error.ok());
  CHECK(bus->pool_stats().workers == 3);
  CHECK(autoscaler->tick_now().number == 2);
  CHECK(autoscaler->stats().ticks == 2);
  CHECK(autoscaler->policy_name() == "scripted");
  CHECK_FALSE(autoscaler->stopping());
  autoscaler->stop();
  CHECK(autoscaler->stopping());
}

TEST_CASE(
    "autoscaler: a clock that reaches TimePoint::max() gives one last tick "
    "and the controller then waits for stop without overflowing",
    "[autoscaler]") {
  // now() + tick would overflow: the deadline saturates at the clock's
  // end, the tick there runs once, and no later tick can come (time stops).
  auto clock = std::make_shared<ManualClock>(fnbus::TimePoint::max() - 50ms);
  auto bus = make_bus({.workers = 1, .max_workers = 4, .clock = clock});
  const auto target = std::make_shared<std::atomic<double>>(2.0);
  auto autoscaler =
      start(*bus, scripted(target), {.governor = {.max_workers = 4}});
  // Asleep until TimePoint::max(), 50ms away.
  REQUIRE(clock->wait_for_sleepers(1));
  CHECK(autoscaler->stats().ticks == 0);
  clock->advance(1h);  // saturates at TimePoint::max()
  REQUIRE(wait_until([&] { return autoscaler->stats().ticks == 1; }));
  CHECK(bus->pool_stats().workers == 2);
  CHECK(clock->sleepers() == 0);  // waiting for stop, not for the clock
  clock->advance(1h);
  CHECK(autoscaler->tick_now().number == 2);  // ticking by hand still works
  autoscaler->stop();
  CHECK(autoscaler->stats().ticks == 2);
  REQUIRE(bus->shutdown().ok());
}

TEST_CASE(
    "autoscaler: a clock standing at TimePoint::max() from the start ticks "
    "once and stops on request",
    "[autoscaler]") {
  auto clock = std::make_shared<ManualClock>(fnbus::TimePoint::max());
  auto bus = make_bus({.workers = 1, .max_workers = 4, .clock = clock});
  const auto target = std::make_shared<std::atomic<double>>(3.0);
  auto autoscaler =
      start(*bus, scripted(target), {.governor = {.max_workers = 4}});
  // The first deadline, TimePoint::max(), is reached at once.
  REQUIRE(wait_until([&] { return autoscaler->stats().ticks >= 1; }));
  autoscaler->stop();
  CHECK(autoscaler->stats().ticks == 1);
  CHECK(bus->pool_stats().workers == 3);
  REQUIRE(bus->shutdown().ok());
}

TEST_CASE(
    "autoscaler: workers a decision does not let the window hold go within "
    "a few ticks, a 30 s window notwithstanding",
    "[autoscaler]") {
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus(
      {.workers = 1, .max_workers = 8, .idle_spin = 0ns, .clock = clock});
  const auto target = std::make_shared<std::atomic<double>>(8.0);
  // Asks for `target` workers, of which the window may hold one: the rest
  // drain a backlog (as SloGuard's do).
  auto policy = fnbus::scaling::make_policy(
      "drain", [target](const LoadSnapshot&) -> ScalingDecision {
        // relaxed: set before the clock advances (ManualClock's mutex).
        ScalingDecision decision{target->load(std::memory_order_relaxed),
                                 "drain"};
        decision.hold = 1;
        return decision;
      });
  TickLog log;
  auto autoscaler = start(*bus, std::move(policy),
                          log.hook({.tick = 100ms,
                                    .governor = {.min_workers = 1,
                                                 .max_workers = 8,
                                                 .down_stabilisation = 30s}}));
  TickDriver driver(*clock, 100ms);
  driver.tick();  // 1 -> 5: max(2R, R + 4)
  driver.tick();  // -> 8
  REQUIRE(bus->pool_stats().workers == 8);
  target->store(1, std::memory_order_relaxed);  // the backlog is gone
  std::vector<std::size_t> sizes;
  for (int i = 0; i < 3; ++i) {
    driver.tick();
    sizes.push_back(bus->pool_stats().workers);
  }
  INFO("sizes " << ::Catch::Detail::stringify(sizes));
  // Halving per tick, not held for the window: 8 -> 4 -> 2 -> 1.
  CHECK(sizes == std::vector<std::size_t>{4, 2, 1});
  CHECK_FALSE(log.last().governed.stabilised);
  autoscaler->stop();
  REQUIRE(bus->shutdown().ok());
}
