// Concurrency limits on the bus (FunctionOptions::max_concurrency): an
// event over the limit waits without holding a worker or the event's other
// functions, runs in arrival order when a call ends, and is never lost
// (unsubscribe and shutdown dead-letter it; a full queue does not: the
// thread ending the call runs it); the limit holds under many producers
// and workers, retries included. The manual-bus tests make a call run
// while another is in progress by triggering from the handler.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <set>
#include <stdexcept>
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
using fnbus::testing_support::Gate;
using fnbus::testing_support::HighWater;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::message_of;
using fnbus::testing_support::OnExit;
using fnbus::testing_support::wait_until;
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
          const OnExit leave{[this] { high_water.leave(); }};  // throws too
          charged.push_back(c.order);
          if (during[c.order]) during[c.order]();
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

TEST_CASE("bus concurrency: a call that throws passes its slot on",
          "[bus_concurrency]") {
  CappedBus t(1);
  t.during[1] = [&] {
    t.bus->trigger(Charge{2});
    t.bus->trigger(Charge{3});
    throw std::runtime_error("gateway down");
  };
  t.during[2] = [] { throw std::runtime_error("still down"); };
  t.publish(1);
  // Each throwing call handed its slot to the next waiting event.
  CHECK(t.charged == std::vector<int>{1, 2, 3});
  CHECK(t.high_water.most() == 1);
  const FunctionMetrics f = t.function("charge");
  CHECK(f.failed == 2);
  CHECK(f.delivered == 1);
  CHECK(f.throttled == 2);
  CHECK(t.dead_letters.empty());
  REQUIRE(t.bus->shutdown(ShutdownMode::kDrain).ok());
  fnbus::testing_support::check_final_stats(t.bus->stats());
}

TEST_CASE(
    "bus concurrency: on an inline bus a waiting event runs in the "
    "publishing thread before publish() returns",
    "[bus_concurrency]") {
  auto bus = make_bus({.execution = Execution::kInline});
  HighWater high_water;
  std::vector<int> charged;
  std::vector<std::thread::id> threads;
  std::vector<int> charged_after_trigger;
  bool published_3 = false;
  auto charge = bus->subscribe<Charge>(
      [&](const Charge& c) {
        high_water.enter();
        const OnExit leave{[&] { high_water.leave(); }};
        charged.push_back(c.order);
        threads.push_back(std::this_thread::get_id());
        if (c.order == 1) {
          bus->trigger(Charge{2});  // at the limit: waits
          charged_after_trigger = charged;
          // Queued, to run after this event (breadth-first).
          published_3 = bus->publish(Charge{3}).ok();
        }
      },
      {.name = "charge", .max_concurrency = 1});
  REQUIRE(bus->publish(Charge{1}).ok());
  // Order 1's end queued 2's delivery behind order 3, and handed it the
  // slot: order 3 found none free and waited behind 2 (no overtaking).
  // publish() ran the queue in this thread before it returned.
  CHECK(published_3);
  CHECK(charged_after_trigger == std::vector<int>{1});
  CHECK(charged == std::vector<int>{1, 2, 3});
  CHECK(threads == std::vector<std::thread::id>(3, std::this_thread::get_id()));
  CHECK(high_water.most() == 1);
  const fnbus::metrics::MetricsSnapshot m = bus->metrics();
  const FunctionMetrics* f =
      m.find_function(fnbus::event_type_name<Charge>(), "charge");
  REQUIRE(f != nullptr);
  CHECK(f->throttled == 2);
  CHECK(f->delivered == 3);
  REQUIRE(bus->shutdown(ShutdownMode::kDrain).ok());
  // Two Charges and the two waiting ones' deliveries (fnbus.slot).
  CHECK(bus->stats().published == 4);
  fnbus::testing_support::check_final_stats(bus->stats());
}

TEST_CASE(
    "bus concurrency: trigger() from a thread of its own at the limit "
    "returns at once, and a worker runs the event later, once",
    "[bus_concurrency]") {
  DeadLetterRecorder dead_letters;
  auto bus = make_bus({.workers = 2, .dead_letter_sink = dead_letters.sink()});
  Gate gate;
  const OnExit open{[&] { gate.open(); }};  // a failed REQUIRE frees it
  std::mutex mutex;
  std::vector<int> charged;  // guarded by mutex
  std::thread::id ran_2_on;  // guarded by mutex
  auto charge = bus->subscribe<Charge>(
      [&](const Charge& c) {
        {
          std::lock_guard lock(mutex);
          charged.push_back(c.order);
          if (c.order == 2) ran_2_on = std::this_thread::get_id();
        }
        if (c.order == 1) gate.pass();
      },
      {.name = "charge", .max_concurrency = 1});
  REQUIRE(bus->publish(Charge{1}).ok());
  REQUIRE(gate.wait_for_waiter());  // a worker is inside order 1's call
  bus->trigger(Charge{2});          // from the test thread
  {
    std::lock_guard lock(mutex);
    CHECK(charged == std::vector<int>{1});  // it waits; trigger() did not
  }
  {
    const fnbus::metrics::MetricsSnapshot m = bus->metrics();
    const FunctionMetrics* f =
        m.find_function(fnbus::event_type_name<Charge>(), "charge");
    REQUIRE(f != nullptr);
    CHECK(f->throttled == 1);
  }
  gate.open();
  CHECK(wait_until([&] {
    std::lock_guard lock(mutex);
    return charged.size() == 2;
  }));
  REQUIRE(bus->shutdown(ShutdownMode::kDrain).ok());
  CHECK(gate.timeouts.load() == 0);
  std::lock_guard lock(mutex);
  CHECK(charged == std::vector<int>{1, 2});  // once, after shutdown too
  CHECK(ran_2_on != std::this_thread::get_id());
  CHECK(dead_letters.empty());
  CHECK(bus->stats().published == 2);  // Charge{1}, and 2's delivery
  fnbus::testing_support::check_final_stats(bus->stats());
}

struct Filler {
  int id = 0;
};

TEST_CASE(
    "bus concurrency: when the queue is full at a hand-over, the waiting "
    "events run in place, in order, one after another (not nested)",
    "[bus_concurrency]") {
  constexpr int kWaiting = 200;
  // Order 0's call is run by run_one() (a caller loop) or by trigger()
  // (no loop); it returns or throws.
  const bool by_trigger = GENERATE(false, true);
  const bool throws = GENERATE(false, true);
  CAPTURE(by_trigger, throws);
  DeadLetterRecorder dead_letters;
  auto bus = make_bus({.queue_capacity = 2,
                       .execution = Execution::kManual,
                       .dead_letter_sink = dead_letters.sink()});
  int fillers = 0;
  auto filler = bus->subscribe<Filler>([&](const Filler&) { ++fillers; },
                                       {.name = "filler"});
  HighWater high_water;
  std::vector<int> charged;
  std::vector<std::uintptr_t> frames;  // where each call's locals lie
  bool queue_full = false;
  auto charge = bus->subscribe<Charge>(
      [&](const Charge& c) {
        high_water.enter();
        const OnExit leave{[&] { high_water.leave(); }};
        const int local = c.order;
        frames.push_back(reinterpret_cast<std::uintptr_t>(&local));
        charged.push_back(c.order);
        if (c.order != 0) return;
        for (int order = 1; order <= kWaiting; ++order) {
          bus->trigger(Charge{order});  // each waits
        }
        // No room left for the waiting events' turn.
        queue_full = bus->publish(Filler{1}).ok() &&
                     bus->publish(Filler{2}).ok() &&
                     !bus->publish(Filler{3}).ok();
        if (throws) throw std::runtime_error("declined");
      },
      {.name = "charge", .max_concurrency = 1});
  if (by_trigger) {
    bus->trigger(Charge{0});
  } else {
    REQUIRE(bus->publish(Charge{0}).ok());
    REQUIRE(bus->run_one());
  }
  CHECK(queue_full);
  // Every waiting event ran before trigger() / run_one() returned, in
  // arrival order, none dead-lettered, none through the queue.
  std::vector<int> expected(kWaiting + 1);
  std::iota(expected.begin(), expected.end(), 0);
  CHECK(charged == expected);
  CHECK(dead_letters.empty());
  CHECK(fillers == 0);
  CHECK(high_water.most() == 1);
  // One loop ran them: a chain of nested calls would take a frame
  // (several) per event, far more than this bound.
  REQUIRE(frames.size() == static_cast<std::size_t>(kWaiting + 1));
  const auto [low, high] =
      std::minmax_element(frames.begin() + 1, frames.end());
  CHECK(*high - *low < 16 * 1024);
  {
    const fnbus::metrics::MetricsSnapshot m = bus->metrics();
    const FunctionMetrics* f =
        m.find_function(fnbus::event_type_name<Charge>(), "charge");
    REQUIRE(f != nullptr);
    CHECK(f->throttled == kWaiting);
    // Counted per function as if dequeued; trigger() counts only failures.
    CHECK(f->delivered == static_cast<std::uint64_t>(
                              kWaiting + (by_trigger || throws ? 0 : 1)));
    CHECK(f->failed == (throws ? 1 : 0));
  }
  CHECK(bus->run_until_idle() == 2);
  CHECK(fillers == 2);
  REQUIRE(bus->shutdown(ShutdownMode::kDrain).ok());
  fnbus::testing_support::check_final_stats(bus->stats());
}

TEST_CASE(
    "bus concurrency: a worker whose queue and follow-up room are full at a "
    "hand-over runs the waiting events itself",
    "[bus_concurrency]") {
  DeadLetterRecorder dead_letters;
  auto bus = make_bus({.queue_capacity = 2,
                       .workers = 1,
                       .follow_up_headroom = 0,
                       .dead_letter_sink = dead_letters.sink()});
  std::atomic<int> fillers{0};
  auto filler = bus->subscribe<Filler>(
      [&](const Filler&) { fillers.fetch_add(1, std::memory_order_relaxed); },
      {.name = "filler"});
  Gate gate;
  const OnExit open{[&] { gate.open(); }};  // a failed REQUIRE frees it
  std::mutex mutex;
  std::vector<int> charged;             // guarded by mutex
  std::vector<std::thread::id> ran_on;  // guarded by mutex
  auto charge = bus->subscribe<Charge>(
      [&](const Charge& c) {
        {
          std::lock_guard lock(mutex);
          charged.push_back(c.order);
          ran_on.push_back(std::this_thread::get_id());
        }
        if (c.order == 1) gate.pass();
      },
      {.name = "charge", .max_concurrency = 1});
  REQUIRE(bus->publish(Charge{1}).ok());
  REQUIRE(gate.wait_for_waiter());  // the only worker is inside order 1
  bus->trigger(Charge{2});          // both wait
  bus->trigger(Charge{3});
  // The worker is held: these fill the queue until the hand-over.
  REQUIRE(bus->publish(Filler{1}).ok());
  REQUIRE(bus->publish(Filler{2}).ok());
  REQUIRE_FALSE(bus->publish(Filler{3}).ok());
  const std::uint64_t rejected_before = bus->stats().rejected;
  gate.open();
  CHECK(wait_until([&] {
    std::lock_guard lock(mutex);
    return charged.size() == 3;
  }));
  REQUIRE(bus->shutdown(ShutdownMode::kDrain).ok());
  CHECK(gate.timeouts.load() == 0);
  CHECK(dead_letters.empty());
  CHECK(fillers.load() == 2);
  std::lock_guard lock(mutex);
  CHECK(charged == std::vector<int>{1, 2, 3});
  // Orders 2 and 3 ran on the worker that ended order 1.
  REQUIRE(ran_on.size() == 3);
  CHECK(ran_on[1] == ran_on[0]);
  CHECK(ran_on[2] == ran_on[0]);
  // Each hand-over's publish was refused (and counted so), then run.
  CHECK(bus->stats().rejected == rejected_before + 2);
  const fnbus::metrics::MetricsSnapshot m = bus->metrics();
  const FunctionMetrics* f =
      m.find_function(fnbus::event_type_name<Charge>(), "charge");
  REQUIRE(f != nullptr);
  CHECK(f->delivered == 3);
  CHECK(f->throttled == 2);
  fnbus::testing_support::check_final_stats(bus->stats());
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
