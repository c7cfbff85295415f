// Concurrency limits on the bus (FunctionOptions::max_concurrency): an
// event over the limit waits without holding a worker or the event's other
// functions, runs in arrival order when a call ends, and is never lost
// (unsubscribe and shutdown dead-letter it); the limit holds under many
// producers and workers, retries included. The manual-bus tests make a
// call run while another is in progress by triggering from the handler.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../support/bus_support.hpp"
#include "absl/status/status.h"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/resilience/pipeline.hpp"
#include "fnbus/testing/manual_clock.hpp"
#include "fnbus/testing/recording_sinks.hpp"

namespace fnbus_bus_concurrency_test {

using fnbus::Context;
using fnbus::DeadLetterReason;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::FunctionOptions;
using fnbus::ShutdownMode;
using fnbus::metrics::FunctionMetrics;
using fnbus::testing::DeadLetterRecorder;
using fnbus::testing::ManualClock;
using fnbus::testing_support::HighWater;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::message_of;
using namespace std::chrono_literals;

struct Charge {
  int order = 0;
};

// A manual bus with a capped function "charge" whose calls are recorded;
// `during[order]` runs inside the call of that order (to start others
// while it runs), and an uncapped function "audit" on the same events.
struct CappedBus {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  DeadLetterRecorder dead_letters;
  std::unique_ptr<EventBus> bus;
  HighWater high_water;
  std::vector<int> charged;  // the order of each call of "charge"
  std::vector<int> audited;  // ... and of "audit"
  std::vector<std::function<void()>> during =
      std::vector<std::function<void()>>(16);
  fnbus::Subscription charge;
  fnbus::Subscription audit;

  explicit CappedBus(int max_concurrency) {
    dead_letters.keep<Charge>();
    bus = make_bus({.execution = Execution::kManual,
                    .clock = clock,
                    .dead_letter_sink = dead_letters.sink()});
    charge = bus->subscribe<Charge>(
        [this](const Charge& c) {
          high_water.enter();
          charged.push_back(c.order);
          if (during[c.order]) during[c.order]();
          high_water.leave();
        },
        {.name = "charge", .max_concurrency = max_concurrency});
    audit = bus->subscribe<Charge>(
        [this](const Charge& c) { audited.push_back(c.order); },
        {.name = "audit"});
  }
  void publish(int order) {
    REQUIRE(bus->publish(Charge{order}).ok());
    bus->run_until_idle();
  }
  [[nodiscard]] FunctionMetrics function(const std::string& name) const {
    const fnbus::metrics::MetricsSnapshot m = bus->metrics();
    const FunctionMetrics* f =
        m.find_function(fnbus::event_type_name<Charge>(), name);
    REQUIRE(f != nullptr);
    return *f;
  }
};

TEST_CASE(
    "bus concurrency: an event over the limit waits, not its other "
    "functions, and runs when the call ends",
    "[bus_concurrency]") {
  CappedBus t(1);
  std::vector<int> audited_during;
  t.during[1] = [&] {
    t.bus->trigger(Charge{2});  // "charge" is running order 1: 2 waits
    audited_during = t.audited;
  };
  t.publish(1);
  // audit handled order 2 while charge was still running order 1.
  CHECK(audited_during == std::vector<int>{2});
  CHECK(t.charged == std::vector<int>{1, 2});
  CHECK(t.high_water.most() == 1);
  const FunctionMetrics f = t.function("charge");
  CHECK(f.delivered == 2);
  CHECK(f.throttled == 1);
  CHECK(f.failed == 0);
  CHECK(t.function("audit").throttled == 0);
  CHECK(t.dead_letters.empty());
  REQUIRE(t.bus->shutdown(ShutdownMode::kDrain).ok());
  fnbus::testing_support::check_final_stats(t.bus->stats());
  // The waiting event was queued again, as a delivery to "charge" alone.
  CHECK(t.bus->stats().published == 2);
}

TEST_CASE("bus concurrency: waiting events run in arrival order",
          "[bus_concurrency]") {
  CappedBus t(1);
  t.during[1] = [&] {
    for (int order : {2, 3, 4, 5}) t.bus->trigger(Charge{order});
  };
  t.publish(1);
  CHECK(t.charged == std::vector<int>{1, 2, 3, 4, 5});
  CHECK(t.high_water.most() == 1);
  CHECK(t.function("charge").throttled == 4);
  CHECK(t.function("charge").delivered == 5);
}

TEST_CASE("bus concurrency: a limit of 2 runs two at once, the third waits",
          "[bus_concurrency]") {
  CappedBus t(2);
  t.during[1] = [&] { t.bus->trigger(Charge{2}); };  // runs: 2 at once
  t.during[2] = [&] { t.bus->trigger(Charge{3}); };  // waits
  t.publish(1);
  CHECK(t.charged == std::vector<int>{1, 2, 3});
  CHECK(t.high_water.most() == 2);
  CHECK(t.function("charge").throttled == 1);
}

TEST_CASE("bus concurrency: a waiting event continues its event's trace",
          "[bus_concurrency]") {
  auto bus = make_bus({.execution = Execution::kManual});
  std::vector<fnbus::EventTrace> charged;  // each call of "charge"
  fnbus::EventTrace audited_2;  // the dispatch of Charge{2} that found no slot
  auto charge = bus->subscribe<Charge>(
      [&](const Charge& c, Context& context) {
        charged.push_back(context.event_trace());
        if (c.order == 1) bus->trigger(Charge{2});
      },
      {.name = "charge", .max_concurrency = 1});
  auto audit = bus->subscribe<Charge>(
      [&](const Charge& c, Context& context) {
        if (c.order == 2) audited_2 = context.event_trace();
      },
      {.name = "audit"});
  REQUIRE(bus->publish(Charge{1}).ok());
  bus->run_until_idle();
  REQUIRE(charged.size() == 2);
  // Charge{2} was triggered inside order 1's call; its waiting call ran
  // later as a queued child of that dispatch (not of order 1's), in the
  // same correlation.
  CHECK(charged[1].context.parent_id == audited_2.event_id);
  CHECK(charged[1].context.parent_id != charged[0].event_id);
  CHECK(charged[1].context.correlation_id == charged[0].context.correlation_id);
  CHECK(charged[1].event_id != audited_2.event_id);
}

TEST_CASE(
    "bus concurrency: unsubscribing dead-letters the waiting events for "
    "the function",
    "[bus_concurrency]") {
  CappedBus t(1);
  t.during[1] = [&] {
    t.bus->trigger(Charge{2});
    t.bus->trigger(Charge{3});
    t.charge.cancel();  // from inside its own call
  };
  t.publish(1);
  CHECK(t.charged == std::vector<int>{1});
  REQUIRE(t.dead_letters.size() == 2);
  std::vector<int> lost;
  for (const auto& letter : t.dead_letters.records()) {
    CHECK(letter.reason == DeadLetterReason::kFunctionGone);
    CHECK(letter.function == "charge");
    CHECK(letter.attempts == 0);
    REQUIRE(letter.get<Charge>() != nullptr);
    lost.push_back(letter.get<Charge>()->order);
  }
  CHECK(lost == std::vector<int>{2, 3});
  // The bus counts its dead letters by reason.
  const fnbus::metrics::DeadLetterCounts counted =
      t.bus->metrics().dead_letters;
  CHECK(counted[DeadLetterReason::kFunctionGone] == 2);
  CHECK(counted.total() == 2);
  // ... and by function.
  const FunctionMetrics charge = t.function("charge");
  CHECK(charge.dead_lettered == 2);
  CHECK(charge.dead_letter_reasons[DeadLetterReason::kFunctionGone] == 2);
  CHECK(t.audited == std::vector<int>{2, 3, 1});  // none held up
  REQUIRE(t.bus->shutdown(ShutdownMode::kDrain).ok());
  fnbus::testing_support::check_final_stats(t.bus->stats());
}

TEST_CASE(
    "bus concurrency: waiting events at shutdown are run or dead-lettered",
    "[bus_concurrency]") {
  const ShutdownMode mode =
      GENERATE(ShutdownMode::kDrain, ShutdownMode::kCancelPending);
  CappedBus t(1);
  t.during[1] = [&] {
    t.bus->trigger(Charge{2});
    t.bus->trigger(Charge{3});
  };
  REQUIRE(t.bus->publish(Charge{1}).ok());
  REQUIRE(t.bus->run_one());  // order 1 ran: 2 is queued, 3 waits
  CHECK(t.charged == std::vector<int>{1});
  REQUIRE(t.bus->shutdown(mode).ok());
  if (mode == ShutdownMode::kDrain) {
    CHECK(t.charged == std::vector<int>{1, 2, 3});
    CHECK(t.dead_letters.empty());
  } else {
    CHECK(t.charged == std::vector<int>{1});
    REQUIRE(t.dead_letters.size() == 2);
    // The queued one is cancelled with the queue; the one still waiting
    // is then refused a place in it.
    CHECK(t.dead_letters.at(0).reason ==
          DeadLetterReason::kCancelledAtShutdown);
    CHECK(t.dead_letters.at(1).reason == DeadLetterReason::kWaitRefused);
    for (const auto& letter : t.dead_letters.records()) {
      CHECK(letter.function == "charge");
    }
    REQUIRE(t.dead_letters.at(1).get<Charge>() != nullptr);
    CHECK(t.dead_letters.at(1).get<Charge>()->order == 3);
    const fnbus::metrics::DeadLetterCounts counted =
        t.bus->metrics().dead_letters;
    CHECK(counted[DeadLetterReason::kCancelledAtShutdown] == 1);
    CHECK(counted[DeadLetterReason::kWaitRefused] == 1);
    CHECK(counted.total() == 2);
  }
  fnbus::testing_support::check_final_stats(t.bus->stats());
}

TEST_CASE(
    "bus concurrency: under many producers and workers the limit is never "
    "passed, and each event ends once",
    "[bus_concurrency]") {
  constexpr int kLimit = 2;
  constexpr int kProducers = 4;
  constexpr int kEventsEach = 1'500;
  constexpr int kTotal = kProducers * kEventsEach;
  DeadLetterRecorder dead_letters;
  dead_letters.keep<Charge>();
  auto bus = make_bus({.queue_capacity = 256,
                       .workers = 4,
                       .overflow = fnbus::OverflowPolicy::kBlock,
                       .block_timeout = 60s,
                       .dead_letter_sink = dead_letters.sink()});
  HighWater high_water;
  // std::mutex, not absl::Mutex: Debian's Abseil is built without TSan
  // annotations, so TSan would not see absl::Mutex order the set.
  std::mutex mutex;
  std::multiset<int> charged;  // guarded by mutex
  std::atomic<int> audited{0};
  auto charge = bus->subscribe<Charge>(
      [&](const Charge& c, Context& context) -> absl::Status {
        high_water.enter();
        // Every seventh order fails its first call, and is retried.
        const bool fail = c.order % 7 == 0 && context.attempt() == 1;
        if (!fail) {
          std::lock_guard lock(mutex);
          charged.insert(c.order);
        }
        std::this_thread::yield();  // widen the window for overlap
        high_water.leave();
        return fail ? absl::UnavailableError("flaky") : absl::OkStatus();
      },
      {.name = "charge",
       .retry = fnbus::resilience::RetryOptions{.max_attempts = 3,
                                                .backoff = {.initial = 1ms}},
       .max_concurrency = kLimit});
  auto audit = bus->subscribe<Charge>(
      [&](const Charge&) { audited.fetch_add(1, std::memory_order_relaxed); },
      {.name = "audit"});
  std::atomic<int> refused{0};  // kBlock: none, unless the bus is wedged
  {
    std::vector<std::jthread> producers;
    for (int p = 0; p < kProducers; ++p) {
      producers.emplace_back([&, p] {
        for (int i = 0; i < kEventsEach; ++i) {
          if (!bus->publish(Charge{p * kEventsEach + i}).ok()) {
            refused.fetch_add(1, std::memory_order_relaxed);
          }
        }
      });
    }
  }
  REQUIRE(refused.load() == 0);
  // Every retry's timer has run (none is dead-lettered at shutdown), so
  // retries have met the limit too; a lost event would time this out.
  // A generous bound: thousands of calls pass through 2 slots one by one
  // (slow under TSan on 2 loaded cores).
  CHECK(fnbus::testing_support::wait_until(
      [&] {
        std::lock_guard lock(mutex);
        return charged.size() == static_cast<std::size_t>(kTotal);
      },
      std::chrono::minutes(2)));
  REQUIRE(bus->shutdown(ShutdownMode::kDrain).ok());
  CHECK(high_water.most() <= kLimit);
  CHECK(audited.load() == kTotal);
  // Each order charged once, or (a retry pending at shutdown) dead-lettered.
  std::set<int> dead;
  for (const auto& letter : dead_letters.records()) {
    REQUIRE(letter.get<Charge>() != nullptr);
    CHECK(letter.function == "charge");
    dead.insert(letter.get<Charge>()->order);
  }
  std::lock_guard lock(mutex);
  CHECK(charged.size() + dead.size() == static_cast<std::size_t>(kTotal));
  for (int order = 0; order < kTotal; ++order) {
    const std::size_t times = charged.count(order) + dead.count(order);
    if (times != 1) FAIL("order " << order << " ended " << times << " times");
  }
  // The snapshot outlives the pointer into it.
  const fnbus::metrics::MetricsSnapshot metrics = bus->metrics();
  const FunctionMetrics* f =
      metrics.find_function(fnbus::event_type_name<Charge>(), "charge");
  REQUIRE(f != nullptr);
  CHECK(f->delivered == charged.size());
  CHECK(f->retried == f->failed);  // each failure was a first call
  fnbus::testing_support::check_final_stats(bus->stats());
}

TEST_CASE("bus concurrency: bad limits are refused at configuration",
          "[bus_concurrency]") {
  for (int bad : {0, -3}) {
    const absl::Status status = fnbus::resilience::check_options<Charge>(
        {.name = "charge", .max_concurrency = bad});
    REQUIRE(status.code() == absl::StatusCode::kInvalidArgument);
    const std::string message = message_of(status);
    CHECK(message.find("charge") != std::string::npos);
    CHECK(message.find("max_concurrency is " + std::to_string(bad)) !=
          std::string::npos);
    CHECK(message.find("at least 1") != std::string::npos);
  }
  CHECK(fnbus::resilience::check_options<Charge>({.max_concurrency = 1}).ok());

  struct Sealed {
    Sealed() = default;
    Sealed(Sealed&&) = default;
    Sealed(const Sealed&) = delete;
  };
  const absl::Status sealed = fnbus::resilience::check_options<Sealed>(
      {.name = "seal", .max_concurrency = 4});
  REQUIRE(sealed.code() == absl::StatusCode::kInvalidArgument);
  CHECK(message_of(sealed).find("cannot be copied") != std::string::npos);
}

}  // namespace fnbus_bus_concurrency_test
