// Tests of EventBus's execution modes (BusConfig::execution: kInline and
// kManual) and of the bus clock's effect on blocking publishes.
//
// Rules followed throughout: no Catch2 assertion runs off the test thread
// (handlers and helper threads record into atomics or plain state that the
// test reads after a join or on the same thread); no sleep orders threads;
// every wait is bounded so that a deadlock fails the test instead of hanging
// it. State that handlers use is declared before the bus, so the bus (which
// drains) is destroyed first.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace fnbus_execution_test {

using namespace std::chrono_literals;
using fnbus::BusConfig;
using fnbus::BusStats;
using fnbus::DeadLetter;
using fnbus::DeadLetterReason;
using fnbus::EventBus;
using fnbus::EventRef;
using fnbus::Execution;
using fnbus::HandlerError;
using fnbus::OverflowPolicy;
using fnbus::ShutdownMode;
using fnbus::testing_support::check_final_stats;
using fnbus::testing_support::contains;
using fnbus::testing_support::FullBus;
using fnbus::testing_support::Gate;
using fnbus::testing_support::IdEvent;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::message_of;
using fnbus::testing_support::NamedEvent;
using fnbus::testing_support::PublishOnThread;
using fnbus::testing_support::wait_until;

// ---------------------------------------------------------------------------
// Events. This namespace keeps them apart from other test files' events.

using Order = IdEvent<"execution.Order">;
using Payment = IdEvent<"execution.Payment">;
using Receipt = IdEvent<"execution.Receipt">;
using Nested = NamedEvent<"execution.Nested">;
// A chain: the handler of Step{d} publishes Step{d + 1}.
struct Step {
  static constexpr std::string_view kEventName = "execution.Step";
  int depth = 0;
};
// Republishes itself forever.
using Forever = NamedEvent<"execution.Forever">;
using Job = IdEvent<"execution.Job">;
// Too big for the queue slot: stored on the heap.
struct BigJob {
  static constexpr std::string_view kEventName = "execution.BigJob";
  int id = 0;
  char padding[96] = {};
};
static_assert(sizeof(BigJob) > 48);
using Unrouted = NamedEvent<"execution.Unrouted">;
using Fallback = NamedEvent<"execution.Fallback">;

// ---------------------------------------------------------------------------
// kInline.

TEST_CASE(
    "execution: kInline runs the handlers in the publishing thread before "
    "publish returns",
    "[execution]") {
  std::vector<std::string> log;  // handlers run on this thread
  std::vector<std::thread::id> threads;
  auto bus = make_bus({.workers = 3, .execution = Execution::kInline});
  auto first = bus->subscribe<Order>(
      [&](const Order& o) {
        log.push_back("first " + std::to_string(o.id));
        threads.push_back(std::this_thread::get_id());
      },
      {.name = "first"});
  auto second = bus->subscribe<Order>(
      [&](const Order& o) {
        log.push_back("second " + std::to_string(o.id));
        threads.push_back(std::this_thread::get_id());
      },
      {.name = "second"});

  REQUIRE(bus->publish(Order{.id = 1}).ok());
  CHECK(log == std::vector<std::string>{"first 1", "second 1"});
  REQUIRE(bus->publish(Order{.id = 2}).ok());
  CHECK(log ==
        std::vector<std::string>{"first 1", "second 1", "first 2", "second 2"});
  for (const auto& id : threads) CHECK(id == std::this_thread::get_id());

  // No worker threads, whatever BusConfig::workers says.
  CHECK(bus->pool_stats().workers == 0);
  CHECK(bus->metrics().gauges.workers == 0);
  const BusStats stats = bus->stats();
  CHECK(stats.published == 2);
  CHECK(stats.dispatched == 2);
  CHECK(stats.delivered == 4);
  CHECK(stats.queue_depth == 0);
}

TEST_CASE(
    "execution: kInline runs events published by handlers breadth-first "
    "before the outermost publish returns",
    "[execution]") {
  std::vector<std::string> log;
  std::vector<absl::StatusCode> publish_codes;
  EventBus* raw = nullptr;
  auto bus = make_bus({.execution = Execution::kInline});
  raw = bus.get();
  auto order_a = bus->subscribe<Order>([&](const Order& o) {
    log.push_back("order.a " + std::to_string(o.id));
    publish_codes.push_back(raw->publish(Payment{.id = 10}).code());
    // trigger is synchronous even inside a handler: it runs now, nested.
    raw->trigger(Nested{});
    publish_codes.push_back(raw->publish(Payment{.id = 20}).code());
    log.push_back("order.a done");
  });
  auto order_b = bus->subscribe<Order>([&](const Order& o) {
    log.push_back("order.b " + std::to_string(o.id));
  });
  auto payment = bus->subscribe<Payment>([&](const Payment& p) {
    log.push_back("payment " + std::to_string(p.id));
    if (p.id == 10) {
      publish_codes.push_back(raw->publish(Receipt{.id = p.id + 1}).code());
    }
    log.push_back("payment done " + std::to_string(p.id));
  });
  auto receipt = bus->subscribe<Receipt>([&](const Receipt& r) {
    log.push_back("receipt " + std::to_string(r.id));
  });
  auto nested =
      bus->subscribe<Nested>([&](const Nested&) { log.push_back("nested"); });

  REQUIRE(bus->publish(Order{.id = 1}).ok());

  // Each event's handlers finish before the next event starts; events run
  // in the order they were published (Payment 10, Payment 20, then the
  // Receipt that Payment 10 published).
  CHECK(log == std::vector<std::string>{"order.a 1", "nested", "order.a done",
                                        "order.b 1", "payment 10",
                                        "payment done 10", "payment 20",
                                        "payment done 20", "receipt 11"});
  CHECK(publish_codes ==
        std::vector<absl::StatusCode>(3, absl::StatusCode::kOk));
  const BusStats stats = bus->stats();
  CHECK(stats.published == 4);
  CHECK(stats.dispatched == 4);
  CHECK(stats.queue_depth == 0);
}

TEST_CASE(
    "execution: kInline reports failing handlers before publish returns, "
    "and publish still succeeds",
    "[execution]") {
  std::vector<std::string> errors;
  int later_calls = 0;
  auto bus = make_bus({.execution = Execution::kInline,
                       .error_sink = [&](const HandlerError& e) {
                         errors.emplace_back(e.function_name);
                       }});
  auto throws = bus->subscribe<Order>(
      [](const Order&) { throw std::runtime_error("boom"); },
      {.name = "throws"});
  auto fails = bus->subscribe<Order>(
      [](const Order&) { return absl::InternalError("nope"); },
      {.name = "fails"});
  auto later = bus->subscribe<Order>([&](const Order&) { ++later_calls; },
                                     {.name = "ok"});

  REQUIRE(bus->publish(Order{.id = 1}).ok());
  CHECK(errors == std::vector<std::string>{"throws", "fails"});
  CHECK(later_calls == 1);
  const BusStats stats = bus->stats();
  CHECK(stats.failed == 2);
  CHECK(stats.delivered == 1);
  CHECK(stats.dispatched == 1);
}

TEST_CASE(
    "execution: kInline refuses a handler's publish to a full queue at once, "
    "even under kBlock",
    "[execution]") {
  std::vector<absl::Status> statuses;
  int jobs = 0;
  EventBus* raw = nullptr;
  auto bus = make_bus({.queue_capacity = 2,
                       .overflow = OverflowPolicy::kBlock,
                       .block_timeout = 1h,
                       .execution = Execution::kInline});
  raw = bus.get();
  auto fan_out = bus->subscribe<Order>([&](const Order&) {
    // The Order was taken off the queue, so two slots are free; the
    // follow-ups only run once this handler returns.
    for (int i = 0; i < 5; ++i) statuses.push_back(raw->publish(Job{i}));
  });
  auto count = bus->subscribe<Job>([&](const Job&) { ++jobs; });

  REQUIRE(bus->publish(Order{.id = 1}).ok());
  REQUIRE(statuses.size() == 5);
  CHECK(statuses[0].ok());
  CHECK(statuses[1].ok());
  for (std::size_t i = 2; i < statuses.size(); ++i) {
    INFO("publish " << i);
    CHECK(statuses[i].code() == absl::StatusCode::kResourceExhausted);
    CHECK(contains(message_of(statuses[i]), "run_until_idle"));
    CHECK(contains(message_of(statuses[i]), "kInline"));
  }
  CHECK(jobs == 2);
  const BusStats stats = bus->stats();
  CHECK(stats.rejected == 3);
  CHECK(stats.published == 3);
  CHECK(stats.dispatched == 3);
  const auto snapshot = bus->metrics();
  const auto* job = snapshot.find_event(fnbus::event_type_name<Job>());
  REQUIRE(job != nullptr);
  CHECK(job->rejected == 3);
  CHECK(job->published == 2);
}

TEST_CASE(
    "execution: kInline with concurrent publishers runs every event before "
    "its publish returns",
    "[execution]") {
  constexpr int kPerThread = 2'000;
  constexpr int kThreads = 2;
  std::vector<std::atomic<int>> handled(kPerThread * kThreads);
  std::atomic<int> not_yet_handled{0};  // publish returned before its event
  std::atomic<int> publish_errors{0};
  auto bus = make_bus({.queue_capacity = 64, .execution = Execution::kInline});
  auto sub = bus->subscribe<Job>([&](const Job& j) {
    handled[static_cast<std::size_t>(j.id)].fetch_add(
        1, std::memory_order_relaxed);
  });
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          const int id = t * kPerThread + i;
          if (!bus->publish(Job{id}).ok()) {
            publish_errors.fetch_add(1);
            continue;
          }
          // relaxed: the run loop's mutex orders the handler before this.
          if (handled[static_cast<std::size_t>(id)].load(
                  std::memory_order_relaxed) != 1) {
            not_yet_handled.fetch_add(1);
          }
        }
      });
    }
  }  // joins
  CHECK(publish_errors.load() == 0);
  CHECK(not_yet_handled.load() == 0);
  for (std::size_t i = 0; i < handled.size(); ++i) {
    INFO("event " << i);
    CHECK(handled[i].load() == 1);
  }
  const BusStats stats = bus->stats();
  CHECK(stats.published == kPerThread * kThreads);
  CHECK(stats.dispatched == kPerThread * kThreads);
}

// ---------------------------------------------------------------------------
// kManual.

TEST_CASE("execution: kManual queues events until run_one runs the oldest",
          "[execution]") {
  std::vector<int> seen;
  std::vector<std::thread::id> threads;
  auto bus = make_bus({.queue_capacity = 8, .execution = Execution::kManual});
  auto sub = bus->subscribe<Order>([&](const Order& o) {
    seen.push_back(o.id);
    threads.push_back(std::this_thread::get_id());
  });

  for (int i = 1; i <= 3; ++i) REQUIRE(bus->publish(Order{.id = i}).ok());
  CHECK(seen.empty());
  CHECK(bus->stats().queue_depth == 3);
  CHECK(bus->stats().published == 3);
  CHECK(bus->stats().dispatched == 0);

  CHECK(bus->run_one());
  CHECK(seen == std::vector<int>{1});
  CHECK(bus->stats().queue_depth == 2);
  CHECK(bus->run_one());
  CHECK(bus->run_one());
  CHECK(seen == std::vector<int>{1, 2, 3});
  CHECK_FALSE(bus->run_one());  // nothing left
  CHECK(seen.size() == 3);
  for (const auto& id : threads) CHECK(id == std::this_thread::get_id());
  CHECK(bus->pool_stats().workers == 0);
  const BusStats stats = bus->stats();
  CHECK(stats.dispatched == 3);
  CHECK(stats.delivered == 3);
  CHECK(stats.queue_depth == 0);
}

TEST_CASE(
    "execution: kManual run_all runs only the events queued when it was "
    "called",
    "[execution]") {
  std::vector<std::string> log;
  EventBus* raw = nullptr;
  auto bus = make_bus({.queue_capacity = 16, .execution = Execution::kManual});
  raw = bus.get();
  auto orders = bus->subscribe<Order>([&](const Order& o) {
    log.push_back("order " + std::to_string(o.id));
    (void)raw->publish(Payment{.id = o.id});
  });
  auto payments = bus->subscribe<Payment>([&](const Payment& p) {
    log.push_back("payment " + std::to_string(p.id));
  });

  for (int i = 1; i <= 3; ++i) REQUIRE(bus->publish(Order{.id = i}).ok());
  CHECK(bus->run_all() == 3);
  CHECK(log == std::vector<std::string>{"order 1", "order 2", "order 3"});
  CHECK(bus->stats().queue_depth == 3);  // the payments wait

  CHECK(bus->run_all() == 3);
  CHECK(log == std::vector<std::string>{"order 1", "order 2", "order 3",
                                        "payment 1", "payment 2", "payment 3"});
  CHECK(bus->run_all() == 0);
  CHECK(bus->stats().dispatched == 6);
}

TEST_CASE(
    "execution: kManual run_until_idle runs follow-ups too, at most "
    "max_events",
    "[execution]") {
  std::vector<int> depths;
  int forever_calls = 0;
  EventBus* raw = nullptr;
  auto bus = make_bus({.queue_capacity = 16, .execution = Execution::kManual});
  raw = bus.get();
  auto steps = bus->subscribe<Step>([&](const Step& s) {
    depths.push_back(s.depth);
    if (s.depth < 4) (void)raw->publish(Step{.depth = s.depth + 1});
  });
  auto forever = bus->subscribe<Forever>([&](const Forever&) {
    ++forever_calls;
    (void)raw->publish(Forever{});
  });

  SECTION("a finite chain runs to its end") {
    REQUIRE(bus->publish(Step{.depth = 0}).ok());
    CHECK(bus->run_until_idle() == 5);
    CHECK(depths == std::vector<int>{0, 1, 2, 3, 4});
    CHECK(bus->stats().queue_depth == 0);
    CHECK(bus->run_until_idle() == 0);
  }
  SECTION("an endless chain stops at max_events") {
    REQUIRE(bus->publish(Forever{}).ok());
    CHECK(bus->run_until_idle(0) == 0);
    CHECK(forever_calls == 0);
    CHECK(bus->run_until_idle(10) == 10);
    CHECK(forever_calls == 10);
    CHECK(bus->stats().queue_depth == 1);  // the 11th waits
    CHECK(bus->run_until_idle(3) == 3);
    CHECK(forever_calls == 13);
    // shutdown(kCancelPending) ends the chain: the last one is dead-lettered.
    REQUIRE(bus->shutdown(ShutdownMode::kCancelPending).ok());
    CHECK(forever_calls == 13);
    CHECK(bus->stats().dead_lettered == 1);
  }
}

TEST_CASE(
    "execution: kManual run_one, run_all and run_until_idle run nothing "
    "inside a handler",
    "[execution]") {
  struct Results {
    std::optional<bool> one;
    std::optional<std::size_t> all;
    std::optional<std::size_t> idle;
    std::size_t depth_inside = 0;
  };
  Results results;
  int payments = 0;
  EventBus* raw = nullptr;
  auto bus = make_bus({.queue_capacity = 8, .execution = Execution::kManual});
  raw = bus.get();
  auto orders = bus->subscribe<Order>([&](const Order&) {
    results.one = raw->run_one();
    results.all = raw->run_all();
    results.idle = raw->run_until_idle();
    results.depth_inside = raw->stats().queue_depth;
  });
  auto count = bus->subscribe<Payment>([&](const Payment&) { ++payments; });

  REQUIRE(bus->publish(Payment{.id = 1}).ok());
  REQUIRE(bus->publish(Payment{.id = 2}).ok());

  SECTION("from a handler run by run_one") {
    REQUIRE(bus->publish(Order{.id = 1}).ok());
    CHECK(bus->run_one());  // Payment 1
    CHECK(bus->run_one());  // Payment 2
    CHECK(payments == 2);
    REQUIRE(bus->publish(Payment{.id = 3}).ok());  // queued behind the Order
    CHECK(bus->run_one());                         // the Order
    CHECK(payments == 2);                          // Payment 3 still waits
    CHECK(bus->stats().queue_depth == 1);
    CHECK(bus->run_one());
    CHECK(payments == 3);
    CHECK(results.depth_inside == 1);
  }
  SECTION("from a handler run by trigger") {
    bus->trigger(Order{.id = 1});
    CHECK(payments == 0);
    CHECK(bus->stats().queue_depth == 2);
    CHECK(results.depth_inside == 2);
  }
  REQUIRE(results.one.has_value());
  CHECK_FALSE(*results.one);
  CHECK(results.all == std::size_t{0});
  CHECK(results.idle == std::size_t{0});
}

// Publishes `event` from another thread on a kManual bus whose queue is
// full and checks that it returns ResourceExhausted on its own. If it
// blocks instead, the test runs one event to free a slot so that the
// publisher returns, and fails.
template <typename E>
void check_full_manual_publish_refused(EventBus& bus, E event,
                                       fnbus::PublishOptions options) {
  PublishOnThread publisher(
      [&] { return bus.publish(std::move(event), options); });
  const bool returned = publisher.wait_returned();
  if (!returned) (void)bus.run_one();  // frees a slot: releases the publisher
  const absl::Status status = publisher.join();
  CHECK(returned);
  CHECK(status.code() == absl::StatusCode::kResourceExhausted);
  CHECK(contains(message_of(status), "run_until_idle"));
  CHECK(contains(message_of(status), "kManual"));
}

TEST_CASE(
    "execution: kManual refuses a publish to a full queue at once, even "
    "under kBlock",
    "[execution]") {
  int handled = 0;
  auto bus = make_bus({.queue_capacity = 2,
                       .overflow = OverflowPolicy::kBlock,
                       .block_timeout = 1h,
                       .execution = Execution::kManual});
  auto sub = bus->subscribe<Job>([&](const Job&) { ++handled; });
  REQUIRE(bus->publish(Job{1}).ok());
  REQUIRE(bus->publish(Job{2}).ok());

  SECTION("the bus's kBlock") {
    check_full_manual_publish_refused(*bus, Job{3}, {});
  }
  SECTION("kBlock per call on the bus") {
    check_full_manual_publish_refused(
        *bus, Job{3},
        {.overflow = OverflowPolicy::kBlock, .block_timeout = 1h});
  }
  SECTION("a heap-stored event") {
    check_full_manual_publish_refused(*bus, BigJob{.id = 3}, {});
  }
  const BusStats stats = bus->stats();
  CHECK(stats.rejected == 1);
  CHECK(stats.published == 2);
  // Running the queued events makes room again.
  CHECK(bus->run_until_idle() == 2);
  CHECK(bus->publish(Job{4}).ok());
  CHECK(bus->run_until_idle() == 1);
  CHECK(handled == 3);
}

TEST_CASE(
    "execution: kManual shutdown(kDrain) runs what is queued and its "
    "follow-ups",
    "[execution]") {
  std::vector<std::string> log;
  std::vector<std::string> dead;
  EventBus* raw = nullptr;
  auto bus = make_bus({.queue_capacity = 16,
                       .execution = Execution::kManual,
                       .dead_letter_sink = [&](const DeadLetter& dl) {
                         dead.emplace_back(dl.event.type_name());
                       }});
  raw = bus.get();
  auto orders = bus->subscribe<Order>([&](const Order& o) {
    log.push_back("order " + std::to_string(o.id));
    // Accepted while draining: it comes from one of the bus's handlers.
    if (!raw->publish(Payment{.id = o.id}).ok()) log.push_back("refused");
  });
  auto payments = bus->subscribe<Payment>([&](const Payment& p) {
    log.push_back("payment " + std::to_string(p.id));
  });
  for (int i = 1; i <= 3; ++i) REQUIRE(bus->publish(Order{.id = i}).ok());
  CHECK(log.empty());

  REQUIRE(bus->shutdown(ShutdownMode::kDrain).ok());
  CHECK(log == std::vector<std::string>{"order 1", "order 2", "order 3",
                                        "payment 1", "payment 2", "payment 3"});
  CHECK(dead.empty());
  const BusStats stats = bus->stats();
  CHECK(stats.published == 6);
  CHECK(stats.dispatched == 6);
  CHECK(stats.dead_lettered == 0);
  check_final_stats(stats);

  // Afterwards: publishing is refused and there is nothing to run.
  const absl::Status late = bus->publish(Order{.id = 4});
  CHECK(late.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_FALSE(bus->run_one());
  CHECK(bus->run_until_idle() == 0);
  CHECK(bus->stats().rejected == 1);
}

TEST_CASE(
    "execution: kManual shutdown(kCancelPending) dead-letters what is queued",
    "[execution]") {
  struct Dead {
    std::string type;
    int id;
    DeadLetterReason reason;
  };
  std::vector<Dead> dead;
  std::vector<int> handled;
  auto bus = make_bus(
      {.queue_capacity = 16,
       .execution = Execution::kManual,
       .dead_letter_sink = [&](const DeadLetter& dl) {
         int id = -1;
         if (const auto* j = dl.event.get<Job>()) id = j->id;
         if (const auto* b = dl.event.get<BigJob>()) id = b->id;
         dead.push_back({std::string(dl.event.type_name()), id, dl.reason});
       }});
  auto jobs =
      bus->subscribe<Job>([&](const Job& j) { handled.push_back(j.id); });
  auto big_jobs =
      bus->subscribe<BigJob>([&](const BigJob& b) { handled.push_back(b.id); });

  REQUIRE(bus->publish(Job{1}).ok());
  REQUIRE(bus->publish(BigJob{.id = 2}).ok());
  REQUIRE(bus->publish(Job{3}).ok());
  REQUIRE(bus->publish(BigJob{.id = 4}).ok());
  CHECK(bus->run_one());  // Job 1 runs; three stay queued

  REQUIRE(bus->shutdown(ShutdownMode::kCancelPending).ok());
  CHECK(handled == std::vector<int>{1});
  REQUIRE(dead.size() == 3);
  CHECK(dead[0].id == 2);
  CHECK(dead[0].type == fnbus::event_type_name<BigJob>());
  CHECK(dead[1].id == 3);
  CHECK(dead[1].type == fnbus::event_type_name<Job>());
  CHECK(dead[2].id == 4);
  for (const Dead& d : dead) {
    CHECK(d.reason == DeadLetterReason::kCancelledAtShutdown);
  }
  const BusStats stats = bus->stats();
  CHECK(stats.published == 4);
  CHECK(stats.dispatched == 1);
  CHECK(stats.dead_lettered == 3);
  check_final_stats(stats);
}

TEST_CASE("execution: a kManual bus's destructor runs what is queued",
          "[execution]") {
  std::vector<int> handled;
  {
    auto bus = make_bus({.queue_capacity = 8, .execution = Execution::kManual});
    auto sub =
        bus->subscribe<Job>([&](const Job& j) { handled.push_back(j.id); });
    sub.release();  // keep the handler for the bus's whole life
    REQUIRE(bus->publish(Job{1}).ok());
    REQUIRE(bus->publish(Job{2}).ok());
    CHECK(handled.empty());
  }
  CHECK(handled == std::vector<int>{1, 2});
}

TEST_CASE("execution: kInline and kManual start no worker threads",
          "[execution]") {
  const Execution mode = GENERATE(Execution::kInline, Execution::kManual);
  INFO("execution " << static_cast<int>(mode));
  std::thread::id handler_thread;
  auto bus = make_bus({.workers = 4, .execution = mode});
  auto sub = bus->subscribe<Job>(
      [&](const Job&) { handler_thread = std::this_thread::get_id(); });
  CHECK(bus->pool_stats().workers == 0);
  const auto gauges = bus->metrics().gauges;
  CHECK(gauges.workers == 0);
  CHECK(gauges.workers_busy == 0);
  CHECK(gauges.workers_idle == 0);
  CHECK(gauges.workers_parked == 0);

  REQUIRE(bus->publish(Job{1}).ok());
  if (mode == Execution::kManual) CHECK(bus->run_until_idle() == 1);
  CHECK(handler_thread == std::this_thread::get_id());
  CHECK(bus->stats().dispatched == 1);
}

TEST_CASE(
    "execution: kManual run_until_idle from two threads runs each event once",
    "[execution]") {
  constexpr int kEvents = 1'000;
  std::vector<std::atomic<int>> handled(kEvents);
  auto bus =
      make_bus({.queue_capacity = 1024, .execution = Execution::kManual});
  auto sub = bus->subscribe<Job>([&](const Job& j) {
    handled[static_cast<std::size_t>(j.id)].fetch_add(
        1, std::memory_order_relaxed);
  });
  for (int i = 0; i < kEvents; ++i) REQUIRE(bus->publish(Job{i}).ok());

  std::atomic<std::size_t> ran{0};
  {
    std::vector<std::jthread> runners;
    for (int t = 0; t < 2; ++t) {
      runners.emplace_back([&] { ran.fetch_add(bus->run_until_idle()); });
    }
  }  // joins
  CHECK(ran.load() == kEvents);
  for (int i = 0; i < kEvents; ++i) {
    INFO("event " << i);
    CHECK(handled[static_cast<std::size_t>(i)].load() == 1);
  }
  CHECK(bus->stats().dispatched == kEvents);
  CHECK(bus->stats().queue_depth == 0);
}

// ---------------------------------------------------------------------------
// The bus clock and blocking publishes.

// A ManualClock that counts its now() calls, so that a test can tell that
// a blocked publisher has gone round its wait loop (it reads the clock on
// every round) without sleeping.
class CountingClock final : public fnbus::Clock {
 public:
  [[nodiscard]] fnbus::TimePoint now() const noexcept override {
    reads_.fetch_add(1, std::memory_order_acq_rel);
    return inner_.now();
  }
  bool sleep_until(fnbus::TimePoint deadline, std::stop_token stop) override {
    return inner_.sleep_until(deadline, std::move(stop));
  }
  void advance(fnbus::Duration step) { inner_.advance(step); }
  [[nodiscard]] std::uint64_t reads() const noexcept {
    return reads_.load(std::memory_order_acquire);
  }

 private:
  fnbus::testing::ManualClock inner_;
  mutable std::atomic<std::uint64_t> reads_{0};
};

// A threaded bus with one worker held at a gate by Job 0 and its 2-slot
// queue full (Jobs 1 and 2), on a CountingClock. record_latency is off, so
// that only a blocked publisher reads the clock.
struct BlockedBus {
  std::shared_ptr<CountingClock> clock = std::make_shared<CountingClock>();
  FullBus<Job, 2> full;

  explicit BlockedBus(std::chrono::nanoseconds block_timeout)
      : full({.overflow = OverflowPolicy::kBlock,
              .block_timeout = block_timeout,
              .clock = clock,
              .record_latency = false}) {}
};

TEST_CASE(
    "execution: a blocked publish times out on the bus clock, not on real "
    "time",
    "[execution]") {
  constexpr auto kTimeout = 1ms;
  BlockedBus blocked(kTimeout);
  const std::uint64_t reads_before = blocked.clock->reads();
  PublishOnThread publisher([&] { return blocked.full.bus->publish(Job{9}); });
  // The publisher reads the clock for its deadline and once per round of
  // its wait loop. After three reads it has found the deadline not reached
  // twice, and since the clock has not moved it cannot time out by itself.
  const bool looping =
      wait_until([&] { return blocked.clock->reads() >= reads_before + 3; });
  const bool returned_early = publisher.returned();
  // Now let bus time pass the deadline.
  blocked.clock->advance(kTimeout + 1ns);
  const bool returned = publisher.wait_returned();
  if (!returned) blocked.full.gate.open();  // frees the publisher
  const absl::Status status = publisher.join();

  CHECK(looping);
  CHECK_FALSE(returned_early);
  CHECK(returned);
  CHECK(status.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(contains(message_of(status), "queue stayed full"));
  // Refused, so counted as rejected and not kept; nothing else was lost.
  BusStats stats = blocked.full.bus->stats();
  CHECK(stats.rejected == 1);
  CHECK(stats.published == 3);
  blocked.full.finish();
  CHECK(blocked.full.handled.load() == 3);
  CHECK(blocked.full.handled_ids_sum.load() == 0 + 1 + 2);
  stats = blocked.full.bus->stats();
  CHECK(stats.dispatched == 3);
  CHECK(stats.rejected == 1);
}

TEST_CASE(
    "execution: a blocked publish on a manual clock waits for room however "
    "long it takes in real time",
    "[execution]") {
  // One nanosecond of bus time: on a real clock this publish would time
  // out at once; the manual clock never moves, so it must wait for room.
  BlockedBus blocked(1ns);
  const std::uint64_t reads_before = blocked.clock->reads();
  PublishOnThread publisher([&] { return blocked.full.bus->publish(Job{9}); });
  const bool looping =
      wait_until([&] { return blocked.clock->reads() >= reads_before + 3; });
  const bool returned_early = publisher.returned();
  blocked.full.gate.open();  // the worker runs Job 0, then makes room
  const bool returned = publisher.wait_returned();
  const absl::Status status = publisher.join();

  CHECK(looping);
  CHECK_FALSE(returned_early);
  CHECK(returned);
  CHECK(status.ok());
  blocked.full.finish();
  CHECK(blocked.full.handled.load() == 4);
  CHECK(blocked.full.handled_ids_sum.load() == 0 + 1 + 2 + 9);
  const BusStats stats = blocked.full.bus->stats();
  CHECK(stats.rejected == 0);
  CHECK(stats.published == 4);
}

// ---------------------------------------------------------------------------
// Re-entry: handlers and sinks that publish or run events while the calling
// thread is already running queued events.

TEST_CASE(
    "execution: kInline runs an event that a handler publishes during "
    "trigger before trigger returns",
    "[execution]") {
  // trigger() runs no queue loop, so the follow-up cannot wait for one.
  int payments = 0;
  EventBus* raw = nullptr;
  absl::Status follow_up = absl::UnknownError("not published");
  auto bus = make_bus({.execution = Execution::kInline});
  raw = bus.get();
  auto orders = bus->subscribe<Order>(
      [&](const Order& o) { follow_up = raw->publish(Payment{.id = o.id}); });
  auto count = bus->subscribe<Payment>([&](const Payment&) { ++payments; });

  bus->trigger(Order{.id = 1});
  CHECK(follow_up.ok());
  CHECK(payments == 1);
  CHECK(bus->stats().queue_depth == 0);
}

TEST_CASE("execution: kInline lets the unhandled sink publish to the same bus",
          "[execution]") {
  // The sink runs outside any handler but inside the run loop, which holds
  // the loop's lock (a Guava-style "publish a DeadEvent" sink). Were the
  // publish to take the lock again, it would deadlock: the bus and the
  // state its sink uses are then leaked on purpose, and the thread detached.
  struct State {
    std::atomic<int> fallbacks{0};
    std::atomic<bool> done{false};
    EventBus* raw = nullptr;
    std::unique_ptr<EventBus> bus;
    fnbus::Subscription sub;
  };
  auto* state = new State;
  BusConfig config{.execution = Execution::kInline};
  config.unhandled_sink = [state](const EventRef& ref) {
    if (ref.get<Fallback>() == nullptr) (void)state->raw->publish(Fallback{});
  };
  state->bus = make_bus(std::move(config));
  state->raw = state->bus.get();
  state->sub = state->bus->subscribe<Fallback>(
      [state](const Fallback&) { state->fallbacks.fetch_add(1); });

  std::thread publisher([state] {
    (void)state->raw->publish(Unrouted{});
    state->done.store(true, std::memory_order_release);
  });
  const bool returned =
      wait_until([&] { return state->done.load(std::memory_order_acquire); });
  if (!returned) {
    publisher.detach();  // deadlocked: leak it and the bus
    FAIL("publish from the unhandled sink of a kInline bus deadlocked");
  }
  publisher.join();
  CHECK(state->fallbacks.load() == 1);
  delete state;
}

TEST_CASE(
    "execution: kManual sinks that call run_one from inside the run loop get "
    "0",
    "[execution]") {
  std::vector<std::size_t> from_unhandled;
  std::vector<std::size_t> from_dead_letter;
  EventBus* raw = nullptr;
  BusConfig config{.execution = Execution::kManual};
  config.unhandled_sink = [&](const EventRef&) {
    from_unhandled.push_back(raw->run_until_idle());
  };
  config.dead_letter_sink = [&](const fnbus::DeadLetter&) {
    from_dead_letter.push_back(raw->run_until_idle());
  };
  auto bus = make_bus(std::move(config));
  raw = bus.get();
  REQUIRE(bus->publish(Unrouted{}).ok());
  REQUIRE(bus->publish(Unrouted{}).ok());
  CHECK(bus->run_one());  // its sink's run_until_idle runs nothing
  CHECK(from_unhandled == std::vector<std::size_t>{0});
  CHECK(bus->stats().queue_depth == 1);
  REQUIRE(bus->shutdown(fnbus::ShutdownMode::kCancelPending).ok());
  CHECK(from_dead_letter == std::vector<std::size_t>{0});
  CHECK(bus->stats().dead_lettered == 1);
}

TEST_CASE(
    "execution: shutdown from a sink inside the run loop is FailedPrecondition",
    "[execution]") {
  std::vector<absl::Status> from_sink;
  EventBus* raw = nullptr;
  BusConfig config{.execution = Execution::kManual};
  config.unhandled_sink = [&](const EventRef&) {
    from_sink.push_back(raw->shutdown());
  };
  auto bus = make_bus(std::move(config));
  raw = bus.get();
  REQUIRE(bus->publish(Unrouted{}).ok());
  REQUIRE(bus->publish(Unrouted{}).ok());
  CHECK(bus->run_one());
  REQUIRE(from_sink.size() == 1);
  CHECK(from_sink[0].code() == absl::StatusCode::kFailedPrecondition);
  // The unhandled sink runs under a handler's rules, so the message names
  // the handler case; either way the bus would wait for itself.
  CHECK(contains(message_of(from_sink[0]), "would wait for itself"));
  // The bus still runs: the second event is queued and runs normally.
  CHECK(bus->run_one());
  CHECK(bus->stats().dispatched == 2);
  CHECK(bus->shutdown().ok());
}

}  // namespace fnbus_execution_test
