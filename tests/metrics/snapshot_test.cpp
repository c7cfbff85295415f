// Tests of fnbus::metrics::MetricsSnapshot: totals over event types and
// functions, and lookups by name.

#include "fnbus/metrics/snapshot.hpp"

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include <catch2/catch.hpp>

using fnbus::metrics::EventTypeMetrics;
using fnbus::metrics::FunctionMetrics;
using fnbus::metrics::HistogramSnapshot;
using fnbus::metrics::MetricsSnapshot;

namespace {

HistogramSnapshot histogram_of(std::initializer_list<std::uint64_t> values) {
  HistogramSnapshot h;
  for (std::uint64_t v : values) h.add(v);
  return h;
}

MetricsSnapshot two_of_each() {
  MetricsSnapshot s;
  s.latency_recorded = true;
  s.events = {
      {.event = "A",
       .published = 10,
       .rejected = 1,
       .dispatched = 9,
       .unhandled = 2,
       .dead_lettered = 3,
       .queue_wait = histogram_of({100, 200}),
       .end_to_end = histogram_of({1'000})},
      {.event = "B",
       .published = 5,
       .rejected = 0,
       .dispatched = 5,
       .unhandled = 0,
       .dead_lettered = 1,
       .queue_wait = histogram_of({300}),
       .end_to_end = {}},
  };
  s.functions = {
      {.event = "A",
       .function = "f",
       .delivered = 7,
       .failed = 2,
       .run_time = histogram_of({50, 60})},
      {.event = "B",
       .function = "f",
       .delivered = 4,
       .failed = 1,
       .run_time = histogram_of({5'000'000})},
  };
  return s;
}

}  // namespace

TEST_CASE("snapshot: total_events adds counters and merges histograms",
          "[snapshot]") {
  const EventTypeMetrics total = two_of_each().total_events();
  REQUIRE(total.event.empty());
  REQUIRE(total.published == 15);
  REQUIRE(total.rejected == 1);
  REQUIRE(total.dispatched == 14);
  REQUIRE(total.unhandled == 2);
  REQUIRE(total.dead_lettered == 4);
  REQUIRE(total.queue_wait.count() == 3);
  REQUIRE(total.queue_wait.sum_nanos() == 600);
  REQUIRE(total.queue_wait.max_nanos() == 300);
  REQUIRE(total.end_to_end.count() == 1);
  REQUIRE(total.end_to_end.max_nanos() == 1'000);
}

TEST_CASE("snapshot: total_functions adds counters and merges histograms",
          "[snapshot]") {
  const FunctionMetrics total = two_of_each().total_functions();
  REQUIRE(total.event.empty());
  REQUIRE(total.function.empty());
  REQUIRE(total.delivered == 11);
  REQUIRE(total.failed == 3);
  REQUIRE(total.run_time.count() == 3);
  REQUIRE(total.run_time.sum_nanos() == 5'000'110);
  REQUIRE(total.run_time.max_nanos() == 5'000'000);
}

TEST_CASE(
    "snapshot: breaker counts merge by adding, and the state is the most "
    "open of the live breakers",
    "[snapshot]") {
  using fnbus::resilience::BreakerState;
  FunctionMetrics none;
  CHECK_FALSE(none.breaker_state().has_value());
  CHECK_FALSE(none.has_breaker_metrics());

  FunctionMetrics closed{.breakers = {.closed = 1}};
  CHECK(closed.breaker_state() == BreakerState::kClosed);
  CHECK(closed.has_breaker_metrics());
  FunctionMetrics probing{.breakers = {.closed = 1, .half_open = 1},
                          .breaker_opened = 1,
                          .breaker_half_opened = 1};
  CHECK(probing.breaker_state() == BreakerState::kHalfOpen);
  FunctionMetrics tripped{.breakers = {.open = 1}, .breaker_opened = 2};
  CHECK(tripped.breaker_state() == BreakerState::kOpen);
  // Ended: no live breaker, its transitions still counted.
  FunctionMetrics ended{.breaker_opened = 1, .breaker_closed = 1};
  CHECK_FALSE(ended.breaker_state().has_value());
  CHECK(ended.has_breaker_metrics());

  FunctionMetrics all;
  for (const FunctionMetrics* f : {&closed, &probing, &tripped, &ended}) {
    all.merge(*f);
  }
  CHECK(all.breakers.closed == 2);
  CHECK(all.breakers.half_open == 1);
  CHECK(all.breakers.open == 1);
  CHECK(all.breaker_state() == BreakerState::kOpen);
  CHECK(all.breaker_opened == 4);
  CHECK(all.breaker_half_opened == 1);
  CHECK(all.breaker_closed == 1);
}

TEST_CASE("snapshot: totals of an empty snapshot are zero", "[snapshot]") {
  const MetricsSnapshot s;
  REQUIRE_FALSE(s.latency_recorded);
  const EventTypeMetrics events = s.total_events();
  REQUIRE(events.published == 0);
  REQUIRE(events.queue_wait.empty());
  const FunctionMetrics functions = s.total_functions();
  REQUIRE(functions.delivered == 0);
  REQUIRE(functions.run_time.empty());
  REQUIRE(s.find_event("A") == nullptr);
  REQUIRE(s.find_function("A", "f") == nullptr);
}

TEST_CASE("snapshot: find_event and find_function look up by name",
          "[snapshot]") {
  const MetricsSnapshot s = two_of_each();
  const EventTypeMetrics* b = s.find_event("B");
  REQUIRE(b != nullptr);
  REQUIRE(b == &s.events[1]);
  REQUIRE(s.find_event("C") == nullptr);
  REQUIRE(s.find_event("") == nullptr);

  // The same function name on two event types: the event decides.
  const FunctionMetrics* on_a = s.find_function("A", "f");
  const FunctionMetrics* on_b = s.find_function("B", "f");
  REQUIRE(on_a == &s.functions[0]);
  REQUIRE(on_b == &s.functions[1]);
  REQUIRE(s.find_function("A", "g") == nullptr);
  REQUIRE(s.find_function("C", "f") == nullptr);

  // Names are compared whole, not by prefix, and with embedded NULs.
  MetricsSnapshot odd;
  odd.events.push_back({.event = std::string("x\0y", 3)});
  REQUIRE(odd.find_event("x") == nullptr);
  REQUIRE(odd.find_event(std::string_view("x\0y", 3)) == &odd.events[0]);
}
