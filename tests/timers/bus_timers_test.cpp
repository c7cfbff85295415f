// The bus's timers (EventBus::publish_after(), publish_at(),
// publish_every(); timers/bus_timers.hpp): when they publish, cancelling,
// periodic schedules, shutdown in both modes, refusals, traces and
// metrics. Deterministic: a ManualClock, and Execution::kManual except
// where the timer thread itself is under test.

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "../support/bus_support.hpp"
#include "absl/status/status.h"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/metrics/exposition.hpp"
#include "fnbus/resilience/dead_letter_store.hpp"
#include "fnbus/testing/event_recorder.hpp"
#include "fnbus/testing/manual_clock.hpp"
#include "fnbus/testing/recording_sinks.hpp"

namespace fnbus_bus_timers_test {

using fnbus::BusConfig;
using fnbus::Context;
using fnbus::DeadLetterReason;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::PublishOptions;
using fnbus::ShutdownMode;
using fnbus::metrics::TimerMetrics;
using fnbus::testing::DeadLetterRecorder;
using fnbus::testing::EventRecorder;
using fnbus::testing::ManualClock;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::message_of;
using fnbus::timers::PeriodicTimer;
using fnbus::timers::TimerHandle;
using namespace std::chrono_literals;

struct CancelIfUnpaid {
  int order_id = 0;
};
struct Tick {
  int n = 0;
};

// A manual bus on a ManualClock (1 ms timer tick) that records
// CancelIfUnpaid and Tick and keeps its dead letters.
struct TimerBus {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  DeadLetterRecorder dead_letters;
  std::unique_ptr<EventBus> bus;
  std::optional<EventRecorder<CancelIfUnpaid>> cancels;
  std::optional<EventRecorder<Tick>> ticks;

  explicit TimerBus(Execution execution = Execution::kManual,
                    std::size_t queue_capacity = 64) {
    dead_letters.keep<CancelIfUnpaid>();
    bus = make_bus({.queue_capacity = queue_capacity,
                    .execution = execution,
                    .clock = clock,
                    .dead_letter_sink = dead_letters.sink()});
    cancels.emplace(*bus);
    ticks.emplace(*bus);
  }

  // Advances the clock, publishes the due timers and runs what they
  // published; returns how many timers ran.
  std::size_t advance(fnbus::Duration step) {
    clock->advance(step);
    const std::size_t fired = bus->run_due_timers();
    bus->run_until_idle();
    return fired;
  }
  [[nodiscard]] TimerMetrics timers() const { return bus->metrics().timers; }
};

TEST_CASE("bus timers: publish_after publishes at its time, not before",
          "[bus_timers]") {
  TimerBus t;
  auto timer = t.bus->publish_after(30min, CancelIfUnpaid{7});
  REQUIRE(timer.ok());
  CHECK(t.timers().pending == 1);
  CHECK(t.advance(30min - 1ms) == 0);
  CHECK(t.cancels->empty());
  CHECK(t.bus->stats().published == 0);  // a timer is not an event yet
  CHECK(t.advance(1ms) == 1);
  REQUIRE(t.cancels->size() == 1);
  CHECK(t.cancels->last().order_id == 7);
  const TimerMetrics m = t.timers();
  CHECK(m.pending == 0);
  CHECK(m.scheduled == 1);
  CHECK(m.fired == 1);
  CHECK(m.cancelled == 0);
  CHECK(t.advance(1h) == 0);  // once only
  CHECK(t.cancels->size() == 1);
}

TEST_CASE("bus timers: publish_at a time past publishes at the next tick",
          "[bus_timers]") {
  TimerBus t;
  t.clock->advance(1h);
  REQUIRE(t.bus->publish_at(t.clock->now() - 10min, CancelIfUnpaid{1}).ok());
  REQUIRE(t.bus->publish_at(t.clock->now() + 5s, CancelIfUnpaid{2}).ok());
  CHECK(t.advance(0ms) == 0);  // due times round up to the next tick
  CHECK(t.advance(1ms) == 1);
  REQUIRE(t.cancels->size() == 1);
  CHECK(t.cancels->last().order_id == 1);
  CHECK(t.advance(5s) == 1);
  REQUIRE(t.cancels->size() == 2);
  CHECK(t.cancels->last().order_id == 2);
}

TEST_CASE("bus timers: a cancelled timer never publishes", "[bus_timers]") {
  TimerBus t;
  auto kept = t.bus->publish_after(10s, CancelIfUnpaid{1});
  auto cancelled = t.bus->publish_after(10s, CancelIfUnpaid{2});
  REQUIRE(kept.ok());
  REQUIRE(cancelled.ok());
  CHECK(cancelled->cancel());
  CHECK_FALSE(cancelled->cancel());  // once
  CHECK(t.advance(10s) == 1);
  REQUIRE(t.cancels->size() == 1);
  CHECK(t.cancels->last().order_id == 1);
  CHECK_FALSE(kept->cancel());  // it fired
  const TimerMetrics m = t.timers();
  CHECK(m.fired == 1);
  CHECK(m.cancelled == 1);
  CHECK(m.pending == 0);
  CHECK(t.dead_letters.empty());
}

TEST_CASE("bus timers: dropping a one-shot handle keeps the timer",
          "[bus_timers]") {
  TimerBus t;
  REQUIRE(t.bus->publish_after(1s, CancelIfUnpaid{3}).ok());  // dropped
  CHECK(t.advance(1s) == 1);
  CHECK(t.cancels->size() == 1);
}

TEST_CASE(
    "bus timers: publish_every publishes a copy each period until "
    "its handle goes",
    "[bus_timers]") {
  TimerBus t;
  std::optional<PeriodicTimer> heartbeat;
  {
    auto every = t.bus->publish_every(10s, Tick{5});
    REQUIRE(every.ok());
    heartbeat.emplace(*std::move(every));
  }
  CHECK(t.advance(9s) == 0);
  CHECK(t.advance(1s) == 1);
  CHECK(t.advance(10s) == 1);
  CHECK(t.advance(10s) == 1);
  REQUIRE(t.ticks->size() == 3);
  CHECK(t.ticks->at(2).n == 5);
  heartbeat.reset();  // RAII: cancels
  CHECK(t.advance(1min) == 0);
  CHECK(t.ticks->size() == 3);
  const TimerMetrics m = t.timers();
  CHECK(m.scheduled == 1);
  CHECK(m.fired == 3);
  CHECK(m.cancelled == 1);
  CHECK(m.pending == 0);
}

TEST_CASE("bus timers: a periodic timer may cancel itself from a handler",
          "[bus_timers]") {
  TimerBus t;
  std::optional<PeriodicTimer> heartbeat;
  auto stop_at_two = t.bus->subscribe([&](const Tick&) {
    if (t.ticks->size() == 2) heartbeat->cancel();
  });
  heartbeat.emplace(*t.bus->publish_every(1s, Tick{}));
  for (int i = 0; i < 5; ++i) t.advance(1s);
  CHECK(t.ticks->size() == 2);
  CHECK(t.timers().cancelled == 1);
}

TEST_CASE("bus timers: bad delays, periods and options are refused",
          "[bus_timers]") {
  TimerBus t;
  auto zero = t.bus->publish_after(0s, CancelIfUnpaid{});
  REQUIRE(zero.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(message_of(zero.status()).find("use more than 0") != std::string::npos);
  CHECK(t.bus->publish_after(-1s, CancelIfUnpaid{}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  auto period = t.bus->publish_every(0s, Tick{});
  REQUIRE(period.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(message_of(period.status()).find("period") != std::string::npos);
  CHECK(t.bus->publish_every(-5ms, Tick{}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(t.bus->publish_after(1s, CancelIfUnpaid{}, {.block_timeout = -1ms})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(t.timers().scheduled == 0);
  CHECK(t.timers().pending == 0);
}

TEST_CASE("bus timers: the timer tick is validated with the BusConfig",
          "[bus_timers]") {
  auto bus = EventBus::Create({.timer_tick = 0ms});
  REQUIRE(bus.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(message_of(bus.status()).find("timer_tick") != std::string::npos);
}

TEST_CASE(
    "bus timers: shutdown(kDrain) publishes the due timers and "
    "dead-letters the pending ones",
    "[bus_timers]") {
  TimerBus t;
  REQUIRE(t.bus->publish_after(1s, CancelIfUnpaid{1}).ok());
  REQUIRE(t.bus->publish_after(1h, CancelIfUnpaid{2}).ok());
  auto heartbeat = t.bus->publish_every(1min, Tick{});
  REQUIRE(heartbeat.ok());
  t.clock->advance(1s);  // #1 is due, but nobody ran the timers yet
  REQUIRE(t.bus->shutdown(ShutdownMode::kDrain).ok());
  REQUIRE(t.cancels->size() == 1);  // drained: handled
  CHECK(t.cancels->last().order_id == 1);
  REQUIRE(t.dead_letters.size() == 1);
  CHECK(t.dead_letters.last().reason ==
        DeadLetterReason::kTimerPendingAtShutdown);
  REQUIRE(t.dead_letters.last().get<CancelIfUnpaid>() != nullptr);
  CHECK(t.dead_letters.last().get<CancelIfUnpaid>()->order_id == 2);
  const TimerMetrics m = t.timers();
  CHECK(m.fired == 1);
  CHECK(m.dead_lettered == 1);
  CHECK(m.stopped == 1);
  CHECK(m.pending == 0);
  fnbus::testing_support::check_final_stats(t.bus->stats());
  // Scheduling after shutdown is refused.
  auto late = t.bus->publish_after(1s, CancelIfUnpaid{3});
  REQUIRE(late.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(message_of(late.status()).find("shutdown") != std::string::npos);
  CHECK_FALSE(heartbeat->cancel());  // already stopped
}

TEST_CASE(
    "bus timers: shutdown(kCancelPending) dead-letters due and "
    "pending timers alike",
    "[bus_timers]") {
  TimerBus t;
  REQUIRE(t.bus->publish_after(1s, CancelIfUnpaid{1}).ok());
  REQUIRE(t.bus->publish_after(1h, CancelIfUnpaid{2}).ok());
  t.clock->advance(1s);
  REQUIRE(t.bus->shutdown(ShutdownMode::kCancelPending).ok());
  CHECK(t.cancels->empty());
  REQUIRE(t.dead_letters.size() == 2);
  int ids = 0;
  for (const auto& letter : t.dead_letters.records()) {
    CHECK(letter.reason == DeadLetterReason::kTimerPendingAtShutdown);
    REQUIRE(letter.get<CancelIfUnpaid>() != nullptr);
    ids += letter.get<CancelIfUnpaid>()->order_id;
  }
  CHECK(ids == 3);
  CHECK(t.timers().dead_lettered == 2);
  CHECK(t.timers().fired == 0);
}

TEST_CASE(
    "bus timers: a dead-lettered timer's event is kept by a "
    "DeadLetterStore and replays into another bus",
    "[bus_timers]") {
  auto store = fnbus::resilience::DeadLetterStore::Create();
  REQUIRE(store.ok());
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus({.execution = Execution::kManual,
                       .clock = clock,
                       .dead_letter_sink = (*store)->sink()});
  REQUIRE(bus->publish_after(1h, CancelIfUnpaid{42}).ok());
  REQUIRE(bus->shutdown(ShutdownMode::kDrain).ok());
  REQUIRE((*store)->size() == 1);
  CHECK((*store)->stats().not_copyable == 0);  // the event itself is kept

  auto next = make_bus({.execution = Execution::kManual, .clock = clock});
  EventRecorder<CancelIfUnpaid> cancels(*next);
  const fnbus::resilience::ReplaySummary replay = (*store)->replay(*next);
  CHECK(replay.replayed == 1);
  next->run_until_idle();
  REQUIRE(cancels.size() == 1);
  CHECK(cancels.last().order_id == 42);
  CHECK((*store)->size() == 0);
}

TEST_CASE("bus timers: a timer whose publish is refused is dead-lettered",
          "[bus_timers]") {
  TimerBus t(Execution::kManual, /*queue_capacity=*/2);
  REQUIRE(t.bus->publish(Tick{1}).ok());
  REQUIRE(t.bus->publish(Tick{2}).ok());  // the queue is full
  REQUIRE(t.bus->publish_after(1s, CancelIfUnpaid{9}).ok());
  t.clock->advance(1s);
  CHECK(t.bus->run_due_timers() == 1);
  REQUIRE(t.dead_letters.size() == 1);
  CHECK(t.dead_letters.last().reason == DeadLetterReason::kTimerRefused);
  REQUIRE(t.dead_letters.last().get<CancelIfUnpaid>() != nullptr);
  CHECK(t.dead_letters.last().get<CancelIfUnpaid>()->order_id == 9);
  CHECK(t.timers().dead_lettered == 1);
  CHECK(t.timers().fired == 0);
  CHECK(t.bus->stats().rejected == 1);
}

TEST_CASE("bus timers: a timer set by a handler continues its correlation",
          "[bus_timers]") {
  TimerBus t;
  struct OrderPlaced {
    int order_id = 0;
  };
  EventRecorder<OrderPlaced> orders(*t.bus);
  auto arm = t.bus->subscribe([&](const OrderPlaced& o, Context&) {
    REQUIRE(t.bus->publish_after(30min, CancelIfUnpaid{o.order_id}).ok());
  });
  REQUIRE(t.bus->publish(OrderPlaced{4}).ok());
  t.bus->run_until_idle();
  t.advance(30min);
  REQUIRE(t.cancels->size() == 1);
  const fnbus::EventTrace order = orders.trace_at(0);
  const fnbus::EventTrace cancel = t.cancels->trace_at(0);
  CHECK(cancel.context.correlation_id == order.context.correlation_id);
  CHECK(cancel.context.parent_id == order.event_id);
}

TEST_CASE("bus timers: an explicit trace is kept", "[bus_timers]") {
  TimerBus t;
  const fnbus::TraceContext trace{.correlation_id = 77, .parent_id = 5};
  REQUIRE(t.bus->publish_after(1s, CancelIfUnpaid{}, {.trace = trace}).ok());
  t.advance(1s);
  REQUIRE(t.cancels->size() == 1);
  CHECK(t.cancels->trace_at(0).context == trace);
}

TEST_CASE("bus timers: the timer thread publishes without run_due_timers",
          "[bus_timers]") {
  TimerBus t(Execution::kThreadPool);
  REQUIRE(t.bus->publish_after(5s, CancelIfUnpaid{11}).ok());
  // The timer thread sleeps on the clock until the timer is due (bounded
  // real-time wait for it to fall asleep; no sleep as synchronisation).
  REQUIRE(t.clock->wait_for_sleepers(1));
  t.clock->advance(5s);
  REQUIRE(t.cancels->wait_for(1));
  CHECK(t.cancels->last().order_id == 11);
  REQUIRE(t.bus->shutdown().ok());
  CHECK(t.timers().fired == 1);
}

TEST_CASE("bus timers: handles outlive the bus", "[bus_timers]") {
  TimerHandle once;
  std::optional<PeriodicTimer> every;
  {
    TimerBus t;
    once = *t.bus->publish_after(1s, CancelIfUnpaid{});
    every.emplace(*t.bus->publish_every(1s, Tick{}));
  }  // the bus shuts down: the timers end there
  CHECK_FALSE(once.cancel());
  CHECK_FALSE(every->cancel());
  every.reset();
}

TEST_CASE("bus timers: the metrics text carries the timers", "[bus_timers]") {
  TimerBus t;
  REQUIRE(t.bus->publish_after(1s, CancelIfUnpaid{}).ok());
  REQUIRE(t.bus->publish_after(2s, CancelIfUnpaid{}).ok());
  t.advance(1s);
  const std::string text = fnbus::metrics::to_prometheus_text(t.bus->metrics());
  CHECK(text.find("fnbus_timers_pending 1\n") != std::string::npos);
  CHECK(text.find("fnbus_timers_scheduled_total 2\n") != std::string::npos);
  CHECK(text.find("fnbus_timers_fired_total 1\n") != std::string::npos);
}

}  // namespace fnbus_bus_timers_test
