// Tests of the bus's metrics storage (detail/bus_metrics.hpp): the sparse
// tables, the per-function ids and their limit, and merging on read.

#include "fnbus/detail/bus_metrics.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

namespace {

using fnbus::detail::BusMetrics;
using fnbus::detail::LazyTable;

TEST_CASE("bus_metrics_storage: LazyTable creates once and finds by id",
          "[bus_metrics_storage]") {
  LazyTable<int> table;
  CHECK(table.find(7) == nullptr);
  CHECK(table.find(LazyTable<int>::kCapacity) == nullptr);  // out of range
  int made = 0;
  int& seven = table.get_or_create(7, [&] { return new int(++made); });
  CHECK(seven == 1);
  CHECK(&table.get_or_create(7, [&] { return new int(++made); }) == &seven);
  CHECK(made == 1);
  (void)table.get_or_create(LazyTable<int>::kCapacity - 1,
                            [] { return new int(42); });
  std::vector<std::uint32_t> ids;
  table.for_each([&](std::uint32_t id, const int&) { ids.push_back(id); });
  CHECK(ids ==
        std::vector<std::uint32_t>{
            7, static_cast<std::uint32_t>(LazyTable<int>::kCapacity - 1)});
}

TEST_CASE(
    "bus_metrics_storage: a LazyTable entry is visible to a reader "
    "thread once created",
    "[bus_metrics_storage]") {
  LazyTable<std::string> table;
  std::thread writer([&] {
    for (std::uint32_t id = 0; id < 1000; ++id) {
      (void)table.get_or_create(
          id, [id] { return new std::string(std::to_string(id)); });
    }
  });
  std::size_t torn = 0;  // entries seen before they were constructed
  for (int pass = 0; pass < 50; ++pass) {
    table.for_each([&](std::uint32_t id, const std::string& value) {
      // A published entry is fully constructed (release/acquire).
      if (value != std::to_string(id)) ++torn;
    });
  }
  writer.join();
  std::size_t final_count = 0;
  table.for_each([&](std::uint32_t, const std::string&) { ++final_count; });
  CHECK(final_count == 1000);
  CHECK(torn == 0);
}

TEST_CASE(
    "bus_metrics_storage: one id per (type, name), and later functions "
    "share the overflow series",
    "[bus_metrics_storage]") {
  BusMetrics metrics(/*shards=*/2, /*timed=*/true, /*max_functions=*/4);
  const std::uint32_t a = metrics.function_id(1, "T", "a");
  const std::uint32_t b = metrics.function_id(1, "T", "b");
  const std::uint32_t a_on_other_type = metrics.function_id(2, "U", "a");
  CHECK(a != b);
  CHECK(a_on_other_type != a);
  CHECK(metrics.function_id(1, "T", "a") == a);  // same function, same id

  // Ids 0..2 are taken; the fourth and later functions share id 3.
  const std::uint32_t d = metrics.function_id(1, "T", "d");
  const std::uint32_t e = metrics.function_id(3, "V", "e");
  CHECK(d == 3);
  CHECK(e == 3);

  auto& shard = metrics.shard(0);
  fnbus::detail::bump(metrics.function_series(shard, a).delivered);
  fnbus::detail::bump(metrics.function_series(shard, d).delivered);
  fnbus::detail::bump(metrics.function_series(shard, e).failed);
  metrics.function_series(shard, e).run_time->record(1'000);

  fnbus::metrics::MetricsSnapshot snapshot;
  metrics.fill(snapshot);
  const auto* overflow = snapshot.find_function(BusMetrics::kOverflowFunction,
                                                BusMetrics::kOverflowFunction);
  REQUIRE(overflow != nullptr);
  CHECK(overflow->delivered == 1);
  CHECK(overflow->failed == 1);
  CHECK(overflow->run_time.count() == 1);
  const auto* first = snapshot.find_function("T", "a");
  REQUIRE(first != nullptr);
  CHECK(first->delivered == 1);
  CHECK(snapshot.functions.size() == 4);  // a, b, a on U, and the overflow
  CHECK(metrics.totals().delivered == 2);
  CHECK(metrics.totals().failed == 1);
}

TEST_CASE("bus_metrics_storage: untimed series keep counters only",
          "[bus_metrics_storage]") {
  BusMetrics metrics(1, /*timed=*/false);
  auto& series = metrics.type_series(metrics.shard(0), 5);
  CHECK(series.queue_wait == nullptr);
  CHECK(series.end_to_end == nullptr);
  fnbus::detail::bump(series.dispatched);
  (void)metrics.type_info(5, "T");
  fnbus::metrics::MetricsSnapshot snapshot;
  metrics.fill(snapshot);
  CHECK_FALSE(snapshot.latency_recorded);
  REQUIRE(snapshot.events.size() == 1);
  CHECK(snapshot.events[0].dispatched == 1);
  CHECK(snapshot.events[0].queue_wait.empty());
}

// Function `name` of type "T" in a fresh snapshot.
fnbus::metrics::FunctionMetrics function_of(const BusMetrics& metrics,
                                            std::string_view name) {
  fnbus::metrics::MetricsSnapshot snapshot;
  metrics.fill(snapshot);
  const auto* f = snapshot.find_function("T", name);
  REQUIRE(f != nullptr);
  return *f;
}

TEST_CASE(
    "bus_metrics_storage: breaker tallies count live breakers by state, "
    "whatever order their reports arrive in",
    "[bus_metrics_storage]") {
  using fnbus::detail::BreakerTally;
  using fnbus::resilience::BreakerState;
  BusMetrics metrics(1, /*timed=*/false);
  const std::uint32_t id = metrics.function_id(1, "T", "charge");
  CHECK(function_of(metrics, "charge").has_breaker_metrics() == false);
  auto first = std::make_unique<BreakerTally>(metrics.breaker_series(id));
  auto second = std::make_unique<BreakerTally>(metrics.breaker_series(id));
  CHECK(function_of(metrics, "charge").breakers.closed == 2);

  // The second breaker trips, then cools down; the two reports arrive in
  // the other order (two threads): the open count dips below 0 meanwhile,
  // and is read as 0.
  second->on_transition({.from = BreakerState::kOpen,
                         .to = BreakerState::kHalfOpen,
                         .number = 2});
  fnbus::metrics::FunctionMetrics f = function_of(metrics, "charge");
  CHECK(f.breakers.closed == 2);
  CHECK(f.breakers.half_open == 1);
  CHECK(f.breakers.open == 0);
  second->on_transition(
      {.from = BreakerState::kClosed, .to = BreakerState::kOpen, .number = 1});
  f = function_of(metrics, "charge");
  CHECK(f.breakers.closed == 1);
  CHECK(f.breakers.half_open == 1);
  CHECK(f.breakers.open == 0);
  CHECK(f.breaker_state() == BreakerState::kHalfOpen);
  CHECK(f.breaker_opened == 1);
  CHECK(f.breaker_half_opened == 1);
  CHECK(f.breaker_closed == 0);

  // A destroyed breaker takes back what it added, in any state.
  second.reset();
  f = function_of(metrics, "charge");
  CHECK(f.breakers.closed == 1);
  CHECK(f.breakers.half_open == 0);
  CHECK(f.breaker_opened == 1);  // transitions stay counted
  first.reset();
  f = function_of(metrics, "charge");
  CHECK_FALSE(f.breaker_state().has_value());
  CHECK(f.has_breaker_metrics());
  // A tally may outlive the metrics (a Subscription can keep its handler
  // past the bus): it keeps the series it counts into.
  std::unique_ptr<BreakerTally> outliving;
  {
    BusMetrics gone(1, /*timed=*/false);
    outliving = std::make_unique<BreakerTally>(
        gone.breaker_series(gone.function_id(1, "T", "f")));
  }
  outliving->on_transition(
      {.from = BreakerState::kClosed, .to = BreakerState::kOpen, .number = 1});
  outliving.reset();  // no use after free (the ASan build checks)
}

}  // namespace
