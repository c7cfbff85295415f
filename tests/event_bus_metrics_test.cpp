// Tests of EventBus::metrics(): counters per event type and per function,
// latency histograms on the bus clock, gauges, and their agreement with
// EventBus::stats().
//
// Rules followed throughout: no Catch2 assertion runs off the test thread
// (handlers record into atomics); no sleep orders threads; every wait is
// bounded. On a threaded bus the test waits (wait_until) until stats()
// shows the final counts; since every counter only grows, each one is then
// final, and metrics() read afterwards on the same thread sees it.
// Histograms are compared after shutdown(), which joins the workers.
// State that handlers use is declared before the bus, so the bus (which
// drains) is destroyed first.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/metrics/snapshot.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace fnbus_bus_metrics_test {

using namespace std::chrono_literals;
using fnbus::BusStats;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::OverflowPolicy;
using fnbus::ShutdownMode;
using fnbus::metrics::EventTypeMetrics;
using fnbus::metrics::FunctionMetrics;
using fnbus::metrics::HistogramSnapshot;
using fnbus::metrics::MetricsSnapshot;
using fnbus::testing::ManualClock;
using fnbus::testing_support::check_final_stats;
using fnbus::testing_support::IdEvent;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::NamedEvent;
using fnbus::testing_support::OnExit;
using fnbus::testing_support::wait_until;

// ---------------------------------------------------------------------------
// Events. This namespace keeps them apart from other test files' events.

using Order = IdEvent<"metrics.Order">;
using Payment = IdEvent<"metrics.Payment">;
using Audit = NamedEvent<"metrics.Audit">;  // never subscribed to
using Mail = NamedEvent<"metrics.Mail">;
using Hold =
    NamedEvent<"metrics.Hold">;  // its handler waits until the test releases it
using Job = IdEvent<"metrics.Job">;

template <typename E>
constexpr std::string_view name_of() {
  return fnbus::event_type_name<E>();
}

// The snapshot's entry for E; fails the test if it is missing.
template <typename E>
const EventTypeMetrics& event_of(const MetricsSnapshot& snapshot) {
  const EventTypeMetrics* found = snapshot.find_event(name_of<E>());
  INFO("event type " << name_of<E>());
  REQUIRE(found != nullptr);
  return *found;
}

template <typename E>
const FunctionMetrics& function_of(const MetricsSnapshot& snapshot,
                                   std::string_view function) {
  const FunctionMetrics* found = snapshot.find_function(name_of<E>(), function);
  INFO("function " << name_of<E>() << "/" << function);
  REQUIRE(found != nullptr);
  return *found;
}

template <typename E>
std::size_t function_entries(const MetricsSnapshot& snapshot,
                             std::string_view function) {
  return static_cast<std::size_t>(
      std::count_if(snapshot.functions.begin(), snapshot.functions.end(),
                    [&](const FunctionMetrics& f) {
                      return f.event == name_of<E>() && f.function == function;
                    }));
}

// MetricsSnapshot's sums agree with BusStats, counter by counter.
void check_totals_match(const MetricsSnapshot& snapshot,
                        const BusStats& stats) {
  const EventTypeMetrics events = snapshot.total_events();
  const FunctionMetrics functions = snapshot.total_functions();
  CHECK(events.published == stats.published);
  CHECK(events.rejected == stats.rejected);
  CHECK(events.dispatched == stats.dispatched);
  CHECK(events.unhandled == stats.unhandled);
  CHECK(events.dead_lettered == stats.dead_lettered);
  CHECK(functions.delivered == stats.delivered);
  CHECK(functions.failed == stats.failed);
  CHECK(snapshot.gauges.queue_depth == stats.queue_depth);
}

void check_sorted(const MetricsSnapshot& snapshot) {
  CHECK(std::is_sorted(
      snapshot.events.begin(), snapshot.events.end(),
      [](const auto& a, const auto& b) { return a.event < b.event; }));
  CHECK(std::is_sorted(snapshot.functions.begin(), snapshot.functions.end(),
                       [](const auto& a, const auto& b) {
                         return std::tie(a.event, a.function) <
                                std::tie(b.event, b.function);
                       }));
}

constexpr double nanos(std::chrono::nanoseconds d) {
  return static_cast<double>(d.count());
}
constexpr std::uint64_t unanos(std::chrono::nanoseconds d) {
  return static_cast<std::uint64_t>(d.count());
}

// A one-sample (or more) histogram whose every sample was `value`.
void check_all_samples(const HistogramSnapshot& h, std::uint64_t count,
                       std::chrono::nanoseconds value) {
  CHECK(h.count() == count);
  CHECK(h.max_nanos() == unanos(value));
  CHECK(h.sum_nanos() == count * unanos(value));
  CHECK(h.quantile_nanos(0.5) == Approx(nanos(value)).epsilon(0.01));
}

// A flag a handler waits at (bounded) until the test releases it.
struct Latch {
  std::atomic<bool> entered{false};
  std::atomic<bool> released{false};
  std::atomic<int> timeouts{0};

  void hold() {
    entered.store(true, std::memory_order_release);
    if (!wait_until([&] { return released.load(std::memory_order_acquire); })) {
      timeouts.fetch_add(1, std::memory_order_relaxed);
    }
  }
  void release() { released.store(true, std::memory_order_release); }
  [[nodiscard]] bool wait_entered() const {
    return wait_until([&] { return entered.load(std::memory_order_acquire); });
  }
};

// ---------------------------------------------------------------------------
// What appears, and when.

TEST_CASE(
    "bus_metrics: a new bus reports no types or functions and reads its "
    "clock",
    "[bus_metrics]") {
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus(
      {.queue_capacity = 16, .execution = Execution::kManual, .clock = clock});
  const MetricsSnapshot first = bus->metrics();
  CHECK(first.events.empty());
  CHECK(first.functions.empty());
  CHECK(first.latency_recorded);  // the default
  CHECK(first.taken_at == clock->now());
  CHECK(first.gauges.queue_capacity == 16);
  CHECK(first.gauges.queue_depth == 0);
  CHECK(first.gauges.in_flight == 0);

  clock->advance(250ms);
  const MetricsSnapshot second = bus->metrics();
  CHECK(second.taken_at - first.taken_at == 250ms);
  CHECK(&bus->clock() == clock.get());
}

TEST_CASE(
    "bus_metrics: types appear once published or subscribed, functions once "
    "subscribed, both sorted",
    "[bus_metrics]") {
  auto bus = make_bus({.queue_capacity = 16, .execution = Execution::kManual});

  auto settle =
      bus->subscribe<Payment>([](const Payment&) {}, {.name = "settle"});
  MetricsSnapshot snapshot = bus->metrics();
  REQUIRE(snapshot.events.size() == 1);
  CHECK(snapshot.events[0].event == name_of<Payment>());
  CHECK(snapshot.events[0].published == 0);
  CHECK(snapshot.events[0].queue_wait.empty());
  REQUIRE(snapshot.functions.size() == 1);
  CHECK(snapshot.functions[0].event == name_of<Payment>());
  CHECK(snapshot.functions[0].function == "settle");
  CHECK(snapshot.functions[0].delivered == 0);

  REQUIRE(bus->publish(Audit{}).ok());  // no subscriber: appears as a type
  auto reserve =
      bus->subscribe<Order>([](const Order&) {}, {.name = "reserve"});
  auto unnamed = bus->subscribe<Order>([](const Order&) {});
  auto mail = bus->subscribe<Mail>([](const Mail&) {}, {.name = "send"});
  snapshot = bus->metrics();
  CHECK(snapshot.events.size() == 4);
  CHECK(event_of<Audit>(snapshot).published == 1);
  CHECK(event_of<Order>(snapshot).published == 0);
  CHECK(event_of<Mail>(snapshot).published == 0);
  CHECK(snapshot.find_event(name_of<Job>()) == nullptr);
  CHECK(snapshot.functions.size() == 4);
  CHECK(function_entries<Order>(snapshot, "reserve") == 1);
  CHECK(function_entries<Order>(snapshot, "<unnamed>") == 1);
  CHECK(function_entries<Mail>(snapshot, "send") == 1);
  CHECK(snapshot.find_function(name_of<Audit>(), "settle") == nullptr);
  check_sorted(snapshot);

  // A cancelled subscription's function keeps its totals.
  REQUIRE(bus->publish(Payment{}).ok());
  CHECK(bus->run_until_idle() == 2);
  settle.cancel();
  snapshot = bus->metrics();
  CHECK(function_of<Payment>(snapshot, "settle").delivered == 1);
  CHECK(event_of<Audit>(snapshot).unhandled == 1);
}

// ---------------------------------------------------------------------------
// Counters.

TEST_CASE(
    "bus_metrics: counts per event type and per function on a threaded bus",
    "[bus_metrics]") {
  constexpr int kOrders = 60;
  constexpr int kPayments = 30;
  constexpr int kAudits = 10;
  auto bus = make_bus({.queue_capacity = 1024, .workers = 3});
  auto reserve =
      bus->subscribe<Order>([](const Order&) {}, {.name = "reserve"});
  auto charge = bus->subscribe<Order>(
      [](const Order& o) {
        return o.id % 2 == 1 ? absl::UnavailableError("card declined")
                             : absl::OkStatus();
      },
      {.name = "charge"});
  // Two subscriptions under one name: one function.
  auto notify_mail =
      bus->subscribe<Order>([](const Order&) {}, {.name = "notify"});
  auto notify_sms =
      bus->subscribe<Order>([](const Order&) {}, {.name = "notify"});
  auto settle = bus->subscribe<Payment>(
      [](const Payment& p) {
        if (p.id % 3 == 0) throw std::runtime_error("ledger locked");
      },
      {.name = "settle"});
  auto unnamed = bus->subscribe<Payment>([](const Payment&) {});
  // The same name on another type is another function.
  auto payment_notify =
      bus->subscribe<Payment>([](const Payment&) {}, {.name = "notify"});

  for (int i = 0; i < kOrders; ++i) REQUIRE(bus->publish(Order{i}).ok());
  for (int i = 0; i < kPayments; ++i) REQUIRE(bus->publish(Payment{i}).ok());
  for (int i = 0; i < kAudits; ++i) REQUIRE(bus->publish(Audit{}).ok());

  constexpr std::uint64_t kDispatched = kOrders + kPayments + kAudits;
  // reserve 60 + charge 30 + notify 120 + settle 20 + unnamed 30 + notify 30
  constexpr std::uint64_t kDelivered = 60 + 30 + 120 + 20 + 30 + 30;
  constexpr std::uint64_t kFailed = 30 + 10;
  REQUIRE(wait_until([&] {
    const BusStats s = bus->stats();
    return s.dispatched == kDispatched && s.delivered == kDelivered &&
           s.failed == kFailed && s.unhandled == kAudits;
  }));

  const MetricsSnapshot snapshot = bus->metrics();
  check_sorted(snapshot);
  REQUIRE(snapshot.events.size() == 3);
  const EventTypeMetrics& orders = event_of<Order>(snapshot);
  CHECK(orders.published == kOrders);
  CHECK(orders.dispatched == kOrders);
  CHECK(orders.unhandled == 0);
  CHECK(orders.rejected == 0);
  CHECK(orders.dead_lettered == 0);
  const EventTypeMetrics& payments = event_of<Payment>(snapshot);
  CHECK(payments.published == kPayments);
  CHECK(payments.dispatched == kPayments);
  CHECK(payments.unhandled == 0);
  const EventTypeMetrics& audits = event_of<Audit>(snapshot);
  CHECK(audits.published == kAudits);
  CHECK(audits.dispatched == kAudits);
  CHECK(audits.unhandled == kAudits);

  REQUIRE(snapshot.functions.size() == 6);
  CHECK(function_entries<Order>(snapshot, "notify") == 1);
  struct Expected {
    std::string_view event;
    std::string_view function;
    std::uint64_t delivered;
    std::uint64_t failed;
  };
  const std::vector<Expected> expected = {
      {name_of<Order>(), "reserve", 60, 0},
      {name_of<Order>(), "charge", 30, 30},
      {name_of<Order>(), "notify", 120, 0},
      {name_of<Payment>(), "settle", 20, 10},
      {name_of<Payment>(), "<unnamed>", 30, 0},
      {name_of<Payment>(), "notify", 30, 0},
  };
  for (const Expected& e : expected) {
    INFO(e.event << "/" << e.function);
    const FunctionMetrics* f = snapshot.find_function(e.event, e.function);
    REQUIRE(f != nullptr);
    CHECK(f->delivered == e.delivered);
    CHECK(f->failed == e.failed);
  }
  check_totals_match(snapshot, bus->stats());

  // After shutdown (which joins the workers) every histogram has one
  // sample per dispatch or handler call.
  REQUIRE(bus->shutdown().ok());
  const MetricsSnapshot final_snapshot = bus->metrics();
  CHECK(final_snapshot.latency_recorded);
  for (const EventTypeMetrics& e : final_snapshot.events) {
    INFO("event type " << e.event);
    CHECK(e.queue_wait.count() == e.dispatched);
    CHECK(e.end_to_end.count() == e.dispatched);
  }
  for (const FunctionMetrics& f : final_snapshot.functions) {
    INFO("function " << f.event << "/" << f.function);
    CHECK(f.run_time.count() == f.delivered + f.failed);
  }
  CHECK(final_snapshot.total_events().queue_wait.count() == kDispatched);
  CHECK(final_snapshot.total_functions().run_time.count() ==
        kDelivered + kFailed);
  const BusStats stats = bus->stats();
  check_totals_match(final_snapshot, stats);
  check_final_stats(stats);
}

TEST_CASE("bus_metrics: rejected is counted per event type", "[bus_metrics]") {
  auto bus = make_bus({.queue_capacity = 2, .execution = Execution::kManual});
  auto orders = bus->subscribe<Order>([](const Order&) {});
  auto payments = bus->subscribe<Payment>([](const Payment&) {});
  REQUIRE(bus->publish(Order{1}).ok());
  REQUIRE(bus->publish(Payment{1}).ok());  // the queue is full

  CHECK(bus->publish(Order{2}).code() == absl::StatusCode::kResourceExhausted);
  CHECK(bus->publish(Order{3}).code() == absl::StatusCode::kResourceExhausted);
  CHECK(bus->publish(Payment{2}).code() ==
        absl::StatusCode::kResourceExhausted);
  // Invalid options: refused before the queue is looked at.
  CHECK(bus->publish(Job{1}, {.block_timeout = -1ns}).code() ==
        absl::StatusCode::kInvalidArgument);
  REQUIRE(bus->shutdown().ok());
  // After shutdown.
  CHECK(bus->publish(Order{4}).code() == absl::StatusCode::kFailedPrecondition);

  const MetricsSnapshot snapshot = bus->metrics();
  CHECK(event_of<Order>(snapshot).rejected == 3);
  CHECK(event_of<Order>(snapshot).published == 1);
  CHECK(event_of<Payment>(snapshot).rejected == 1);
  CHECK(event_of<Payment>(snapshot).published == 1);
  CHECK(event_of<Job>(snapshot).rejected == 1);  // appears, refused
  CHECK(event_of<Job>(snapshot).published == 0);
  const BusStats stats = bus->stats();
  CHECK(stats.rejected == 5);
  CHECK(stats.published == 2);
  check_totals_match(snapshot, stats);
  check_final_stats(stats);
}

TEST_CASE("bus_metrics: unhandled is counted per event type", "[bus_metrics]") {
  auto bus = make_bus({.queue_capacity = 16, .execution = Execution::kManual});
  auto orders = bus->subscribe<Order>([](const Order&) {});
  auto mail = bus->subscribe<Mail>([](const Mail&) {});
  REQUIRE(bus->publish(Audit{}).ok());
  REQUIRE(bus->publish(Audit{}).ok());
  for (int i = 0; i < 3; ++i) REQUIRE(bus->publish(Mail{}).ok());
  REQUIRE(bus->publish(Order{1}).ok());
  mail.cancel();  // Mail's only subscription goes before its events run
  CHECK(bus->run_until_idle() == 6);
  bus->trigger(Audit{});  // trigger counts nothing

  const MetricsSnapshot snapshot = bus->metrics();
  CHECK(event_of<Audit>(snapshot).unhandled == 2);
  CHECK(event_of<Audit>(snapshot).dispatched == 2);
  CHECK(event_of<Mail>(snapshot).unhandled == 3);
  CHECK(event_of<Mail>(snapshot).dispatched == 3);
  CHECK(event_of<Order>(snapshot).unhandled == 0);
  CHECK(event_of<Order>(snapshot).dispatched == 1);
  CHECK(function_of<Mail>(snapshot, "<unnamed>").delivered == 0);
  const BusStats stats = bus->stats();
  CHECK(stats.unhandled == 5);
  CHECK(stats.dispatched == 6);
  check_totals_match(snapshot, stats);
}

TEST_CASE(
    "bus_metrics: shutdown(kCancelPending) in manual mode counts dead "
    "letters per event type",
    "[bus_metrics]") {
  std::atomic<int> dead_letters{0};
  auto bus = make_bus({.queue_capacity = 16,
                       .execution = Execution::kManual,
                       .dead_letter_sink = [&](const fnbus::DeadLetter&) {
                         dead_letters.fetch_add(1);
                       }});
  auto orders = bus->subscribe<Order>(
      [](const Order& o) {
        if (o.id == 0) throw std::runtime_error("first order fails");
      },
      {.name = "reserve"});
  auto payments =
      bus->subscribe<Payment>([](const Payment&) {}, {.name = "settle"});
  for (int i = 0; i < 3; ++i) REQUIRE(bus->publish(Order{i}).ok());
  REQUIRE(bus->publish(Payment{1}).ok());
  REQUIRE(bus->publish(Payment{2}).ok());
  REQUIRE(bus->publish(Audit{}).ok());
  CHECK(bus->run_one());  // Order 0, which fails

  REQUIRE(bus->shutdown(ShutdownMode::kCancelPending).ok());
  CHECK(dead_letters.load() == 5);
  const MetricsSnapshot snapshot = bus->metrics();
  const EventTypeMetrics& order = event_of<Order>(snapshot);
  CHECK(order.published == 3);
  CHECK(order.dispatched == 1);
  CHECK(order.dead_lettered == 2);
  const EventTypeMetrics& payment = event_of<Payment>(snapshot);
  CHECK(payment.dispatched == 0);
  CHECK(payment.dead_lettered == 2);
  const EventTypeMetrics& audit = event_of<Audit>(snapshot);
  CHECK(audit.dead_lettered == 1);
  CHECK(audit.unhandled == 0);  // dead-lettered, never dispatched
  for (const EventTypeMetrics& e : snapshot.events) {
    INFO("event type " << e.event);
    CHECK(e.published == e.dispatched + e.dead_lettered);
    // Dead letters are not timed: they never reached a handler.
    CHECK(e.queue_wait.count() == e.dispatched);
    CHECK(e.end_to_end.count() == e.dispatched);
  }
  CHECK(function_of<Order>(snapshot, "reserve").failed == 1);
  CHECK(function_of<Order>(snapshot, "reserve").delivered == 0);
  CHECK(function_of<Payment>(snapshot, "settle").delivered == 0);
  const BusStats stats = bus->stats();
  CHECK(stats.dead_lettered == 5);
  CHECK(stats.failed == 1);
  check_totals_match(snapshot, stats);
  check_final_stats(stats);
}

// ---------------------------------------------------------------------------
// Latency histograms.

TEST_CASE("bus_metrics: with a ManualClock in manual mode latencies are exact",
          "[bus_metrics]") {
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus(
      {.queue_capacity = 16, .execution = Execution::kManual, .clock = clock});
  auto pack = bus->subscribe<Order>([&](const Order&) { clock->advance(2ms); },
                                    {.name = "pack"});
  auto first = bus->subscribe<Payment>(
      [&](const Payment&) { clock->advance(3ms); }, {.name = "first"});
  auto second = bus->subscribe<Payment>(
      [&](const Payment&) { clock->advance(4ms); }, {.name = "second"});

  SECTION("one handler") {
    REQUIRE(bus->publish(Order{1}).ok());  // accepted at t0
    clock->advance(5ms);
    REQUIRE(bus->run_one());  // waited 5ms; the handler takes 2ms
    const MetricsSnapshot snapshot = bus->metrics();
    CHECK(snapshot.taken_at == clock->now());
    const EventTypeMetrics& order = event_of<Order>(snapshot);
    check_all_samples(order.queue_wait, 1, 5ms);
    check_all_samples(order.end_to_end, 1, 7ms);
    check_all_samples(function_of<Order>(snapshot, "pack").run_time, 1, 2ms);

    // A second order waits 1ms: the histograms hold both samples.
    REQUIRE(bus->publish(Order{2}).ok());
    clock->advance(1ms);
    REQUIRE(bus->run_one());
    const MetricsSnapshot later = bus->metrics();
    const EventTypeMetrics& order2 = event_of<Order>(later);
    CHECK(order2.queue_wait.count() == 2);
    CHECK(order2.queue_wait.sum_nanos() == unanos(6ms));
    CHECK(order2.queue_wait.max_nanos() == unanos(5ms));
    CHECK(order2.queue_wait.quantile_nanos(0) ==
          Approx(nanos(1ms)).epsilon(0.01));
    CHECK(order2.queue_wait.quantile_nanos(1) ==
          Approx(nanos(5ms)).epsilon(0.01));
    CHECK(order2.end_to_end.sum_nanos() == unanos(7ms + 3ms));
    check_all_samples(function_of<Order>(later, "pack").run_time, 2, 2ms);
  }
  SECTION("two handlers: each has its own run time") {
    REQUIRE(bus->publish(Payment{1}).ok());
    clock->advance(5ms);
    REQUIRE(bus->run_one());
    const MetricsSnapshot snapshot = bus->metrics();
    const EventTypeMetrics& payment = event_of<Payment>(snapshot);
    check_all_samples(payment.queue_wait, 1, 5ms);
    check_all_samples(payment.end_to_end, 1, 5ms + 3ms + 4ms);
    check_all_samples(function_of<Payment>(snapshot, "first").run_time, 1, 3ms);
    check_all_samples(function_of<Payment>(snapshot, "second").run_time, 1,
                      4ms);
  }
  SECTION("an unhandled event: end to end is its queue wait") {
    REQUIRE(bus->publish(Audit{}).ok());
    clock->advance(4ms);
    REQUIRE(bus->run_one());
    const MetricsSnapshot snapshot = bus->metrics();
    const EventTypeMetrics& audit = event_of<Audit>(snapshot);
    check_all_samples(audit.queue_wait, 1, 4ms);
    check_all_samples(audit.end_to_end, 1, 4ms);
  }
}

TEST_CASE(
    "bus_metrics: with a ManualClock a threaded bus times queue waits and "
    "handlers on the bus clock",
    "[bus_metrics]") {
  Latch latch;
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus({.queue_capacity = 8, .workers = 1, .clock = clock});
  auto hold = bus->subscribe<Hold>([&](const Hold&) { latch.hold(); },
                                   {.name = "hold"});
  auto order = bus->subscribe<Order>([](const Order&) {}, {.name = "pack"});

  REQUIRE(bus->publish(Hold{}).ok());
  if (!latch.wait_entered()) latch.release();
  REQUIRE(latch.entered.load());
  // Queued at t0 behind the held worker; bus time then moves 4ms.
  REQUIRE(bus->publish(Order{1}).ok());
  clock->advance(4ms);
  latch.release();
  REQUIRE(bus->shutdown().ok());
  CHECK(latch.timeouts.load() == 0);

  const MetricsSnapshot snapshot = bus->metrics();
  const EventTypeMetrics& held = event_of<Hold>(snapshot);
  check_all_samples(held.queue_wait, 1, 0ns);  // taken at once
  check_all_samples(held.end_to_end, 1, 4ms);
  check_all_samples(function_of<Hold>(snapshot, "hold").run_time, 1, 4ms);
  const EventTypeMetrics& queued = event_of<Order>(snapshot);
  check_all_samples(queued.queue_wait, 1, 4ms);
  check_all_samples(queued.end_to_end, 1, 4ms);
  check_all_samples(function_of<Order>(snapshot, "pack").run_time, 1, 0ns);
}

TEST_CASE(
    "bus_metrics: record_latency = false keeps the counters and leaves the "
    "histograms empty",
    "[bus_metrics]") {
  const Execution mode = GENERATE(Execution::kManual, Execution::kThreadPool);
  INFO("execution " << static_cast<int>(mode));
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus({.queue_capacity = 16,
                       .workers = 2,
                       .execution = mode,
                       .clock = clock,
                       .record_latency = false});
  auto pack = bus->subscribe<Order>([](const Order&) {}, {.name = "pack"});
  auto fail = bus->subscribe<Order>(
      [](const Order&) { throw std::runtime_error("x"); }, {.name = "fail"});
  for (int i = 0; i < 3; ++i) REQUIRE(bus->publish(Order{i}).ok());
  REQUIRE(bus->publish(Audit{}).ok());
  clock->advance(5ms);
  if (mode == Execution::kManual) CHECK(bus->run_until_idle() == 4);
  REQUIRE(bus->shutdown().ok());

  const MetricsSnapshot snapshot = bus->metrics();
  CHECK_FALSE(snapshot.latency_recorded);
  CHECK(event_of<Order>(snapshot).published == 3);
  CHECK(event_of<Order>(snapshot).dispatched == 3);
  CHECK(event_of<Audit>(snapshot).unhandled == 1);
  CHECK(function_of<Order>(snapshot, "pack").delivered == 3);
  CHECK(function_of<Order>(snapshot, "fail").failed == 3);
  for (const EventTypeMetrics& e : snapshot.events) {
    INFO("event type " << e.event);
    CHECK(e.queue_wait.empty());
    CHECK(e.end_to_end.empty());
    CHECK(e.queue_wait.quantile_nanos(0.99) == 0);
  }
  for (const FunctionMetrics& f : snapshot.functions) {
    INFO("function " << f.function);
    CHECK(f.run_time.empty());
  }
  check_totals_match(snapshot, bus->stats());
}

// ---------------------------------------------------------------------------
// Gauges.

TEST_CASE("bus_metrics: gauges in manual mode", "[bus_metrics]") {
  struct Inside {
    std::uint64_t in_flight = 0;
    std::uint64_t queue_depth = 0;
    std::uint64_t workers_busy = 0;
  };
  std::vector<Inside> inside;  // the handler runs on this thread
  EventBus* raw = nullptr;
  auto bus = make_bus(
      {.queue_capacity = 8, .workers = 3, .execution = Execution::kManual});
  raw = bus.get();
  auto sub = bus->subscribe<Order>([&](const Order&) {
    const auto gauges = raw->metrics().gauges;
    inside.push_back(
        {gauges.in_flight, gauges.queue_depth, gauges.workers_busy});
  });
  for (int i = 0; i < 3; ++i) REQUIRE(bus->publish(Order{i}).ok());

  auto gauges = bus->metrics().gauges;
  CHECK(gauges.queue_depth == 3);
  CHECK(gauges.queue_capacity == 8);
  CHECK(gauges.in_flight == 0);
  CHECK(gauges.workers == 0);
  CHECK(gauges.workers_busy == 0);
  CHECK(gauges.workers_idle == 0);
  CHECK(gauges.workers_parked == 0);
  CHECK(bus->stats().queue_depth == 3);

  CHECK(bus->run_one());
  REQUIRE(inside.size() == 1);
  CHECK(inside[0].in_flight == 1);    // the event run_one() is handling
  CHECK(inside[0].queue_depth == 2);  // taken off the queue
  CHECK(inside[0].workers_busy == 0);
  gauges = bus->metrics().gauges;
  CHECK(gauges.queue_depth == 2);
  CHECK(gauges.in_flight == 0);

  CHECK(bus->run_all() == 2);
  gauges = bus->metrics().gauges;
  CHECK(gauges.queue_depth == 0);
  CHECK(gauges.in_flight == 0);
}

TEST_CASE("bus_metrics: gauges on a threaded bus", "[bus_metrics]") {
  Latch latch;
  std::atomic<int> orders{0};
  const std::size_t workers = GENERATE(std::size_t{1}, std::size_t{3});
  INFO("workers " << workers);
  auto bus = make_bus({.queue_capacity = 8, .workers = workers});
  auto hold = bus->subscribe<Hold>([&](const Hold&) { latch.hold(); });
  auto count =
      bus->subscribe<Order>([&](const Order&) { orders.fetch_add(1); });
  OnExit release_on_exit{[&] { latch.release(); }};

  REQUIRE(bus->publish(Hold{}).ok());
  REQUIRE(latch.wait_entered());
  const auto held = bus->metrics().gauges;
  CHECK(held.workers == workers);
  CHECK(held.workers_busy >= 1);
  CHECK(held.workers_busy <= workers);
  CHECK(held.workers_busy + held.workers_idle + held.workers_parked == workers);
  CHECK(held.in_flight >= 1);
  CHECK(held.queue_capacity == 8);
  CHECK(bus->pool_stats().workers == workers);

  if (workers == 1) {
    // The only worker is held: what is published now waits in the queue.
    for (int i = 0; i < 3; ++i) REQUIRE(bus->publish(Order{i}).ok());
    const auto queued = bus->metrics().gauges;
    CHECK(queued.queue_depth == 3);
    CHECK(queued.workers_busy == 1);
    CHECK(queued.workers_idle == 0);
    CHECK(queued.workers_parked == 0);
    CHECK(queued.in_flight == 1);
    CHECK(orders.load() == 0);
  }

  latch.release();
  // The gauges fall back once the work is done.
  CHECK(wait_until([&] {
    const auto g = bus->metrics().gauges;
    return g.in_flight == 0 && g.workers_busy == 0 && g.queue_depth == 0;
  }));
  const auto after = bus->metrics().gauges;
  CHECK(after.workers_busy + after.workers_idle + after.workers_parked ==
        workers);
  REQUIRE(bus->shutdown().ok());
  CHECK(latch.timeouts.load() == 0);
  CHECK(orders.load() == (workers == 1 ? 3 : 0));
  check_final_stats(bus->stats());
}

// ---------------------------------------------------------------------------
// Stress: metrics() read while the bus is busy.

TEST_CASE(
    "bus_metrics: metrics read during a busy run stay monotonic and end "
    "exact (stress)",
    "[bus_metrics][.stress]") {
  constexpr int kPublishers = 2;
  constexpr int kPerPublisher = 150'000;  // round-robin over three types
  std::atomic<std::uint64_t> handled{0};
  auto bus = make_bus({.queue_capacity = 256,
                       .workers = 2,
                       .overflow = OverflowPolicy::kBlock,
                       .block_timeout = 30s});
  auto on_order = bus->subscribe<Order>(
      [&](const Order&) { handled.fetch_add(1, std::memory_order_relaxed); },
      {.name = "order"});
  auto on_order_too =
      bus->subscribe<Order>([](const Order&) {}, {.name = "order-audit"});
  auto on_payment = bus->subscribe<Payment>(
      [&](const Payment&) { handled.fetch_add(1, std::memory_order_relaxed); },
      {.name = "payment"});
  auto on_job = bus->subscribe<Job>(
      [&](const Job&) { handled.fetch_add(1, std::memory_order_relaxed); },
      {.name = "job"});

  std::atomic<int> publishers_done{0};
  std::atomic<int> publish_errors{0};
  std::vector<std::jthread> publishers;
  for (int p = 0; p < kPublishers; ++p) {
    publishers.emplace_back([&] {
      for (int i = 0; i < kPerPublisher; ++i) {
        absl::Status status;
        switch (i % 3) {
          case 0:
            status = bus->publish(Order{i});
            break;
          case 1:
            status = bus->publish(Payment{i});
            break;
          default:
            status = bus->publish(Job{i});
            break;
        }
        if (!status.ok()) publish_errors.fetch_add(1);
      }
      publishers_done.fetch_add(1, std::memory_order_release);
    });
  }

  // Read metrics() in a loop while they publish. Every counter and every
  // histogram count only grows, so successive snapshots never go back.
  int snapshots = 0;
  int went_back = 0;
  int bad_histograms = 0;  // count() != sum of buckets()
  auto consistent = [](const HistogramSnapshot& h) {
    std::uint64_t sum = 0;
    for (const std::uint64_t b : h.buckets()) sum += b;
    return sum == h.count();
  };
  MetricsSnapshot previous;
  const auto give_up = std::chrono::steady_clock::now() + 120s;
  for (bool last = false; !last;) {
    // At least one snapshot, and one more after the publishers finished.
    last = publishers_done.load(std::memory_order_acquire) == kPublishers ||
           std::chrono::steady_clock::now() >= give_up;
    const MetricsSnapshot now = bus->metrics();
    ++snapshots;
    for (const EventTypeMetrics& e : now.events) {
      if (!consistent(e.queue_wait) || !consistent(e.end_to_end)) {
        ++bad_histograms;
      }
      const EventTypeMetrics* before = previous.find_event(e.event);
      if (before == nullptr) continue;
      if (e.published < before->published ||
          e.dispatched < before->dispatched ||
          e.queue_wait.count() < before->queue_wait.count() ||
          e.end_to_end.count() < before->end_to_end.count()) {
        ++went_back;
      }
    }
    for (const FunctionMetrics& f : now.functions) {
      if (!consistent(f.run_time)) ++bad_histograms;
      const FunctionMetrics* before =
          previous.find_function(f.event, f.function);
      if (before == nullptr) continue;
      if (f.delivered < before->delivered ||
          f.run_time.count() < before->run_time.count()) {
        ++went_back;
      }
    }
    previous = now;
  }
  for (auto& t : publishers) t.join();
  REQUIRE(bus->shutdown().ok());

  CHECK(publish_errors.load() == 0);
  CHECK(snapshots > 0);
  CHECK(went_back == 0);
  CHECK(bad_histograms == 0);
  constexpr std::uint64_t kTotal = std::uint64_t{kPublishers} * kPerPublisher;
  CHECK(handled.load() == kTotal);
  const MetricsSnapshot final_snapshot = bus->metrics();
  REQUIRE(final_snapshot.events.size() == 3);
  for (const EventTypeMetrics& e : final_snapshot.events) {
    INFO("event type " << e.event);
    CHECK(e.published == kTotal / 3);
    CHECK(e.dispatched == e.published);
    CHECK(e.queue_wait.count() == e.dispatched);
    CHECK(e.end_to_end.count() == e.dispatched);
    CHECK(e.rejected == 0);
    CHECK(e.unhandled == 0);
  }
  REQUIRE(final_snapshot.functions.size() == 4);
  for (const FunctionMetrics& f : final_snapshot.functions) {
    INFO("function " << f.event << "/" << f.function);
    CHECK(f.delivered == kTotal / 3);
    CHECK(f.run_time.count() == f.delivered);
    CHECK(f.failed == 0);
  }
  const BusStats stats = bus->stats();
  check_totals_match(final_snapshot, stats);
  check_final_stats(stats);
}

// Two distinct types that declare the same name.
struct OrderV1 {
  static constexpr std::string_view kEventName = "metrics.SameName";
  int id = 0;
};
struct OrderV2 {
  static constexpr std::string_view kEventName = "metrics.SameName";
  long id = 0;
};

TEST_CASE("bus_metrics: two event types with one name are reported as one",
          "[bus_metrics]") {
  auto bus = make_bus({.execution = Execution::kManual});
  auto v1 = bus->subscribe<OrderV1>([](const OrderV1&) {}, {.name = "keep"});
  auto v2 = bus->subscribe<OrderV2>([](const OrderV2&) {}, {.name = "keep"});
  REQUIRE(bus->publish(OrderV1{}).ok());
  REQUIRE(bus->publish(OrderV2{}).ok());
  REQUIRE(bus->publish(OrderV2{}).ok());
  CHECK(bus->run_until_idle() == 3);

  const MetricsSnapshot snapshot = bus->metrics();
  REQUIRE(snapshot.events.size() == 1);
  CHECK(snapshot.events[0].event == "metrics.SameName");
  CHECK(snapshot.events[0].published == 3);
  CHECK(snapshot.events[0].dispatched == 3);
  CHECK(snapshot.events[0].end_to_end.count() == 3);
  REQUIRE(snapshot.functions.size() == 1);
  CHECK(snapshot.functions[0].function == "keep");
  CHECK(snapshot.functions[0].delivered == 3);
  CHECK(snapshot.functions[0].run_time.count() == 3);
}

TEST_CASE(
    "bus_metrics: a handler's run time excludes the error sink and trace hooks "
    "around it",
    "[bus_metrics]") {
  auto clock = std::make_shared<ManualClock>();
  fnbus::BusConfig config{.execution = Execution::kManual, .clock = clock};
  // Work that is no handler's: 20ms in the error sink, 7ms in each hook.
  config.error_sink = [&](const fnbus::HandlerError&) { clock->advance(20ms); };
  config.trace.on_handler_start = [&](const fnbus::Context&) {
    clock->advance(7ms);
  };
  config.trace.on_handler_end = [&](const fnbus::Context&) {
    clock->advance(7ms);
  };
  auto bus = make_bus(std::move(config));
  auto failing = bus->subscribe<Order>(
      [&](const Order&) -> absl::Status {
        clock->advance(1ms);
        return absl::InternalError("declined");
      },
      {.name = "failing"});
  auto next = bus->subscribe<Order>([&](const Order&) { clock->advance(2ms); },
                                    {.name = "next"});
  REQUIRE(bus->publish(Order{1}).ok());
  REQUIRE(bus->run_one());
  const MetricsSnapshot snapshot = bus->metrics();
  check_all_samples(function_of<Order>(snapshot, "failing").run_time, 1, 1ms);
  check_all_samples(function_of<Order>(snapshot, "next").run_time, 1, 2ms);
  // End to end runs until the last handler returned: the sink and the
  // hooks before that count, the last on_handler_end does not.
  check_all_samples(event_of<Order>(snapshot).end_to_end, 1,
                    1ms + 2ms + 20ms + 3 * 7ms);
}

TEST_CASE(
    "bus_metrics: latency_sample_every times one event in N and weighs it N",
    "[bus_metrics]") {
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus({.execution = Execution::kManual,
                       .clock = clock,
                       .latency_sample_every = 4});
  auto sub = bus->subscribe<Order>([&](const Order&) { clock->advance(1ms); },
                                   {.name = "pack"});
  // A fresh thread: the 1st and 5th of its 8 publishes are timed.
  int accepted = 0;  // Catch2 assertions belong to the test's thread
  std::thread publisher([&] {
    for (int i = 0; i < 8; ++i) {
      accepted += bus->publish(Order{i}).ok() ? 1 : 0;
      clock->advance(2ms);  // event i waits (8 - i) * 2ms in all
    }
  });
  publisher.join();
  REQUIRE(accepted == 8);
  CHECK(bus->run_until_idle() == 8);

  const MetricsSnapshot snapshot = bus->metrics();
  const EventTypeMetrics& order = event_of<Order>(snapshot);
  CHECK(order.dispatched == 8);  // counters stay exact
  // Two timed events, each weighing 4: event 0 waited 16ms, event 4 waited
  // 8ms plus the 4ms that events 0..3 ran for.
  CHECK(order.queue_wait.count() == 8);
  CHECK(order.queue_wait.sum_nanos() == unanos(4 * 16ms + 4 * 12ms));
  CHECK(order.queue_wait.max_nanos() == unanos(16ms));
  const HistogramSnapshot& run_time =
      function_of<Order>(snapshot, "pack").run_time;
  CHECK(run_time.count() == 8);
  CHECK(run_time.sum_nanos() == unanos(8 * 1ms));
  CHECK(function_of<Order>(snapshot, "pack").delivered == 8);
}

TEST_CASE("bus_metrics: latency_sample_every out of range is InvalidArgument",
          "[bus_metrics]") {
  for (const std::uint32_t every : {0u, 65537u}) {
    auto bus = EventBus::Create({.latency_sample_every = every});
    REQUIRE_FALSE(bus.ok());
    CHECK(bus.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(bus.status().message()).find("latency_sample_every") !=
          std::string::npos);
  }
  CHECK(EventBus::Create({.latency_sample_every = 65536}).ok());
}

TEST_CASE(
    "bus_metrics: latency_sample_every of one bus does not change another "
    "bus's sampling",
    "[bus_metrics]") {
  constexpr int kEvents = 1600;
  constexpr std::uint32_t kEvery = 16;
  auto exact = make_bus({.execution = Execution::kInline});  // every = 1
  auto sampled = make_bus(
      {.execution = Execution::kInline, .latency_sample_every = kEvery});
  auto exact_sub =
      exact->subscribe<Order>([](const Order&) {}, {.name = "pack"});
  auto sampled_sub =
      sampled->subscribe<Order>([](const Order&) {}, {.name = "pack"});
  // One thread publishes to both, interleaved.
  int exact_accepted = 0;  // Catch2 assertions belong to the test's thread
  int sampled_accepted = 0;
  std::thread publisher([&] {
    for (int i = 0; i < kEvents; ++i) {
      exact_accepted += exact->publish(Order{i}).ok() ? 1 : 0;
      sampled_accepted += sampled->publish(Order{i}).ok() ? 1 : 0;
    }
  });
  publisher.join();
  REQUIRE(exact_accepted == kEvents);
  REQUIRE(sampled_accepted == kEvents);

  const auto events = static_cast<std::uint64_t>(kEvents);
  SECTION("the exact bus times every event") {
    const MetricsSnapshot snapshot = exact->metrics();
    const EventTypeMetrics& order = event_of<Order>(snapshot);
    CHECK(order.dispatched == events);
    CHECK(order.queue_wait.count() == events);
    CHECK(order.end_to_end.count() == events);
    CHECK(function_of<Order>(snapshot, "pack").run_time.count() == events);
  }
  SECTION("the sampled bus times 1 in 16, each weighing 16") {
    const MetricsSnapshot snapshot = sampled->metrics();
    const EventTypeMetrics& order = event_of<Order>(snapshot);
    CHECK(order.dispatched == events);
    CHECK(order.queue_wait.count() == events);
    CHECK(order.end_to_end.count() == events);
    CHECK(function_of<Order>(snapshot, "pack").run_time.count() == events);
  }
}

}  // namespace fnbus_bus_metrics_test
