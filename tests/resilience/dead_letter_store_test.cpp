// Tests of fnbus::resilience::DeadLetterStore: bad options, the bound and
// both full policies with their counters, persist and on_overflow,
// letters whose event cannot be copied, drain, replay with a filter
// (accepted, refused by a shut-down bus, put back beside new arrivals),
// the store as a bus's dead-letter sink (shutdown and an open breaker),
// and a bounded concurrent run for TSan.

#include "fnbus/resilience/dead_letter_store.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../support/bus_support.hpp"
#include "../support/test_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::DeadLetter;
using fnbus::DeadLetterReason;
using fnbus::EventTrace;
using fnbus::OwnedEvent;
using fnbus::resilience::DeadLetterFullPolicy;
using fnbus::resilience::DeadLetterStore;
using fnbus::resilience::DeadLetterStoreOptions;
using fnbus::resilience::DeadLetterStoreStats;
using fnbus::resilience::ReplaySummary;
using fnbus::resilience::StoredDeadLetter;
using fnbus::testing_support::contains;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::message_of;

struct Parcel {
  static constexpr std::string_view kEventName = "dlq.Parcel";
  int id = 0;
};
struct Sealed {  // not copyable
  static constexpr std::string_view kEventName = "dlq.Sealed";
  std::unique_ptr<int> value;
};

std::shared_ptr<DeadLetterStore> make_store(DeadLetterStoreOptions options) {
  auto store = DeadLetterStore::Create(std::move(options));
  REQUIRE(store.ok());
  return *std::move(store);
}

// Adds a kCancelledAtShutdown letter for Parcel{id} with trace ids
// derived from `id`.
void add_parcel(DeadLetterStore& store, int id) {
  const OwnedEvent event = OwnedEvent::Of(Parcel{.id = id});
  const auto n = static_cast<std::uint64_t>(id);
  store.add(DeadLetter{
      .event = event.ref(),
      .reason = DeadLetterReason::kCancelledAtShutdown,
      .trace =
          EventTrace{.context = {.correlation_id = 1000 + n, .parent_id = 0},
                     .event_id = 2000 + n}});
}

// A persist or on_overflow callback that records the Parcel ids it sees.
std::function<void(const StoredDeadLetter&)> record_ids(std::vector<int>& ids) {
  return [&ids](const StoredDeadLetter& letter) {
    ids.push_back(letter.event.get<Parcel>()->id);
  };
}

// The Parcel ids of `letters`, in order (-1 for a letter without one).
template <typename Letters>
std::vector<int> ids_of(const Letters& letters) {
  std::vector<int> ids;
  for (const StoredDeadLetter& letter : letters) {
    const Parcel* parcel = letter.event.template get<Parcel>();
    ids.push_back(parcel != nullptr ? parcel->id : -1);
  }
  return ids;
}

TEST_CASE("dead_letter_store: bad options name every problem",
          "[dead_letter_store]") {
  const auto store = DeadLetterStore::Create(
      {.capacity = 0, .when_full = static_cast<DeadLetterFullPolicy>(7)});
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message = message_of(store.status());
  CHECK(contains(message, "capacity is 0"));
  CHECK(contains(message, "when_full is 7"));
  CHECK(DeadLetterStore::Create({.capacity = 1}).ok());
}

TEST_CASE("dead_letter_store: keeps each letter with a copy of its event",
          "[dead_letter_store]") {
  auto clock =
      std::make_shared<fnbus::testing::ManualClock>(fnbus::TimePoint(5h));
  auto store = make_store({.clock = clock});
  const OwnedEvent event = OwnedEvent::Of(Parcel{.id = 4});
  const EventTrace trace{.context = {.correlation_id = 9, .parent_id = 8},
                         .event_id = 7};
  {
    const std::string function = "ship";  // gone before the letter is read
    store->add(DeadLetter{.event = event.ref(),
                          .reason = DeadLetterReason::kCircuitOpen,
                          .trace = trace,
                          .function = function,
                          .attempts = 3,
                          .last_error = absl::UnavailableError("down")});
  }
  const std::vector<StoredDeadLetter> letters = store->snapshot();
  REQUIRE(letters.size() == 1);
  const StoredDeadLetter& letter = letters[0];
  REQUIRE(letter.event.get<Parcel>() != nullptr);
  CHECK(letter.event.get<Parcel>()->id == 4);
  CHECK(letter.event.get<Parcel>() != event.get<Parcel>());  // a copy
  CHECK(letter.event_type == "dlq.Parcel");
  CHECK(letter.reason == DeadLetterReason::kCircuitOpen);
  CHECK(letter.function == "ship");
  CHECK(letter.trace == trace);
  CHECK(letter.attempts == 3);
  CHECK(letter.last_error == absl::UnavailableError("down"));
  CHECK(letter.when == fnbus::TimePoint(5h));
  CHECK(store->size() == 1);  // snapshot() copies, it does not remove
  CHECK(store->stats().stored == 1);
}

TEST_CASE(
    "dead_letter_store: kDropOldest evicts the oldest, counted and "
    "reported",
    "[dead_letter_store]") {
  std::vector<int> overflow;
  auto store = make_store({.capacity = 2,
                           .when_full = DeadLetterFullPolicy::kDropOldest,
                           .on_overflow = record_ids(overflow)});
  for (int id = 1; id <= 4; ++id) add_parcel(*store, id);
  CHECK(store->size() == 2);
  CHECK(ids_of(store->snapshot()) == std::vector<int>{3, 4});
  CHECK(overflow == std::vector<int>{1, 2});
  const DeadLetterStoreStats stats = store->stats();
  CHECK(stats.stored == 4);
  CHECK(stats.evicted == 2);
  CHECK(stats.rejected == 0);
}

TEST_CASE(
    "dead_letter_store: kRejectNewest keeps the old letters, counted "
    "and reported",
    "[dead_letter_store]") {
  std::vector<int> overflow;
  auto store = make_store({.capacity = 2,
                           .when_full = DeadLetterFullPolicy::kRejectNewest,
                           .on_overflow = record_ids(overflow)});
  for (int id = 1; id <= 4; ++id) add_parcel(*store, id);
  CHECK(ids_of(store->snapshot()) == std::vector<int>{1, 2});
  CHECK(overflow == std::vector<int>{3, 4});
  const DeadLetterStoreStats stats = store->stats();
  CHECK(stats.stored == 2);
  CHECK(stats.rejected == 2);
  CHECK(stats.evicted == 0);
}

TEST_CASE("dead_letter_store: persist sees every letter, also rejected ones",
          "[dead_letter_store]") {
  std::vector<int> persisted;
  auto store = make_store({.capacity = 1,
                           .when_full = DeadLetterFullPolicy::kRejectNewest,
                           .persist = record_ids(persisted)});
  add_parcel(*store, 1);
  add_parcel(*store, 2);
  CHECK(persisted == std::vector<int>{1, 2});
  CHECK(store->size() == 1);
}

TEST_CASE(
    "dead_letter_store: a throwing callback is counted and the letter "
    "kept",
    "[dead_letter_store]") {
  auto store = make_store({.persist = [](const StoredDeadLetter&) {
    throw std::runtime_error("disk full");
  }});
  add_parcel(*store, 1);
  CHECK(store->size() == 1);
  CHECK(store->stats().callback_errors == 1);
}

TEST_CASE("dead_letter_store: a non-copyable event is kept as metadata",
          "[dead_letter_store]") {
  auto store = make_store({});
  const OwnedEvent sealed = OwnedEvent::Of(Sealed{std::make_unique<int>(1)});
  store->add(DeadLetter{.event = sealed.ref(),
                        .reason = DeadLetterReason::kDrainTimeout,
                        .trace = {}});
  add_parcel(*store, 2);
  const std::vector<StoredDeadLetter> letters = store->snapshot();
  REQUIRE(letters.size() == 2);
  CHECK(letters[0].event.empty());
  CHECK(letters[0].event_type == "dlq.Sealed");
  CHECK(letters[0].reason == DeadLetterReason::kDrainTimeout);
  CHECK(store->stats().not_copyable == 1);

  // Replay skips it and keeps it.
  auto bus = make_bus({.execution = fnbus::Execution::kManual});
  const ReplaySummary summary = store->replay(*bus);
  CHECK(summary.skipped == 1);
  CHECK(summary.replayed == 1);
  CHECK(summary.failed == 0);
  REQUIRE(store->size() == 1);
  CHECK(store->snapshot()[0].event_type == "dlq.Sealed");
}

TEST_CASE("dead_letter_store: drain removes and returns every letter",
          "[dead_letter_store]") {
  auto store = make_store({});
  for (int id = 1; id <= 3; ++id) add_parcel(*store, id);
  const std::vector<StoredDeadLetter> drained = store->drain();
  CHECK(ids_of(drained) == std::vector<int>{1, 2, 3});
  CHECK(store->size() == 0);
  CHECK(store->drain().empty());
}

TEST_CASE(
    "dead_letter_store: replay publishes what the filter accepts and "
    "continues its trace",
    "[dead_letter_store][event_bus]") {
  auto store = make_store({});
  for (int id = 1; id <= 4; ++id) add_parcel(*store, id);
  auto bus = make_bus({.execution = fnbus::Execution::kManual});
  std::vector<int> handled;
  std::vector<EventTrace> traces;
  auto sub = bus->subscribe([&](const Parcel& p, fnbus::Context& context) {
    handled.push_back(p.id);
    traces.push_back(context.event_trace());
  });

  const ReplaySummary summary =
      store->replay(*bus, [](const StoredDeadLetter& letter) {
        return letter.event.get<Parcel>()->id % 2 == 0;
      });
  CHECK(summary.replayed == 2);
  CHECK(summary.failed == 0);
  CHECK(summary.first_error.ok());
  CHECK(ids_of(store->snapshot()) == std::vector<int>{1, 3});
  CHECK(store->stats().replayed == 2);

  CHECK(bus->run_all() == 2);
  CHECK(handled == std::vector<int>{2, 4});
  REQUIRE(traces.size() == 2);
  // Parcel 2 died as event 2002 of correlation 1002.
  CHECK(traces[0].context.correlation_id == 1002);
  CHECK(traces[0].context.parent_id == 2002);
  CHECK(traces[0].event_id != 2002);
}

TEST_CASE("dead_letter_store: a letter the bus refuses stays in the store",
          "[dead_letter_store][event_bus]") {
  auto store = make_store({});
  add_parcel(*store, 1);
  auto bus = make_bus({.execution = fnbus::Execution::kManual});
  REQUIRE(bus->shutdown().ok());

  const ReplaySummary summary = store->replay(*bus);
  CHECK(summary.replayed == 0);
  CHECK(summary.failed == 1);
  CHECK(summary.first_error.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(ids_of(store->snapshot()) == std::vector<int>{1});
  const DeadLetterStoreStats stats = store->stats();
  CHECK(stats.replay_failed == 1);
  CHECK(stats.replayed == 0);
  CHECK(bus->stats().rejected == 1);
}

TEST_CASE(
    "dead_letter_store: letters kept by a replay go back before new "
    "ones, within the bound",
    "[dead_letter_store][event_bus]") {
  std::vector<int> overflow;
  auto store = make_store({.capacity = 2,
                           .when_full = DeadLetterFullPolicy::kDropOldest,
                           .on_overflow = record_ids(overflow)});
  add_parcel(*store, 1);
  add_parcel(*store, 2);
  auto bus = make_bus({.execution = fnbus::Execution::kManual});
  // The filter runs without the store's lock: a letter may arrive
  // meanwhile (here from the filter itself). Nothing is replayed.
  const ReplaySummary summary =
      store->replay(*bus, [&](const StoredDeadLetter& letter) {
        if (letter.event.get<Parcel>()->id == 1) add_parcel(*store, 3);
        return false;
      });
  CHECK(summary.replayed == 0);
  CHECK(ids_of(store->snapshot()) == std::vector<int>{2, 3});
  CHECK(overflow == std::vector<int>{1});
  CHECK(store->stats().evicted == 1);
}

TEST_CASE("dead_letter_store: a filter that throws puts every letter back",
          "[dead_letter_store][event_bus]") {
  auto store = make_store({});
  for (int id = 1; id <= 3; ++id) add_parcel(*store, id);
  auto bus = make_bus({.execution = fnbus::Execution::kManual});
  auto sub = bus->subscribe([](const Parcel&) {});
  CHECK_THROWS_AS(store->replay(*bus,
                                [](const StoredDeadLetter& letter) -> bool {
                                  if (letter.event.get<Parcel>()->id == 2) {
                                    throw std::runtime_error("bad filter");
                                  }
                                  return true;
                                }),
                  std::runtime_error);
  // Parcel 1 was replayed before the throw; 2 and 3 are back.
  CHECK(ids_of(store->snapshot()) == std::vector<int>{2, 3});
  CHECK(bus->run_all() == 1);
}

TEST_CASE(
    "dead_letter_store: as a bus's sink it keeps what shutdown "
    "cancels, for a second bus to replay",
    "[dead_letter_store][event_bus]") {
  auto store = make_store({});
  std::vector<EventTrace> first_traces;
  {
    auto first = make_bus({.execution = fnbus::Execution::kManual,
                           .dead_letter_sink = store->sink()});
    for (int id = 1; id <= 3; ++id) {
      REQUIRE(first->publish(Parcel{.id = id}).ok());
    }
    REQUIRE(first->shutdown(fnbus::ShutdownMode::kCancelPending).ok());
    CHECK(first->stats().dead_lettered == 3);
  }  // the store outlives the first bus (and vice versa would be fine)
  const std::vector<StoredDeadLetter> letters = store->snapshot();
  CHECK(ids_of(letters) == std::vector<int>{1, 2, 3});
  for (const StoredDeadLetter& letter : letters) {
    CHECK(letter.reason == DeadLetterReason::kCancelledAtShutdown);
    CHECK(letter.event_type == "dlq.Parcel");
    CHECK(letter.function.empty());
    CHECK(letter.attempts == 0);
    CHECK(letter.trace.event_id != 0);
  }

  auto second = make_bus({.execution = fnbus::Execution::kManual});
  std::vector<int> handled;
  std::vector<std::uint64_t> correlations;
  auto sub = second->subscribe([&](const Parcel& p, fnbus::Context& context) {
    handled.push_back(p.id);
    correlations.push_back(context.correlation_id());
  });
  const ReplaySummary summary = store->replay(*second);
  CHECK(summary.replayed == 3);
  CHECK(store->size() == 0);
  CHECK(second->run_all() == 3);
  CHECK(handled == std::vector<int>{1, 2, 3});
  REQUIRE(correlations.size() == 3);
  CHECK(correlations[1] == letters[1].trace.context.correlation_id);
  CHECK(second->stats().published == 3);
}

TEST_CASE("dead_letter_store: keeps an event an open breaker turned away",
          "[dead_letter_store][event_bus]") {
  auto store = make_store({});
  auto bus = make_bus({.execution = fnbus::Execution::kManual,
                       .dead_letter_sink = store->sink()});
  auto sub = bus->subscribe(
      [](const Parcel&) { return absl::UnavailableError("down"); },
      {.name = "ship",
       .breaker = fnbus::resilience::BreakerOptions{.minimum_calls = 2}});
  for (int id = 1; id <= 3; ++id) REQUIRE(bus->publish(Parcel{.id = id}).ok());
  CHECK(bus->run_all() == 3);
  // Parcels 1 and 2 failed and opened the breaker; 3 was turned away.
  const std::vector<StoredDeadLetter> letters = store->snapshot();
  REQUIRE(letters.size() == 1);
  CHECK(letters[0].reason == DeadLetterReason::kCircuitOpen);
  CHECK(letters[0].function == "ship");
  CHECK(ids_of(letters) == std::vector<int>{3});
}

TEST_CASE("dead_letter_store: concurrent adds and drains lose no letter",
          "[dead_letter_store]") {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  std::atomic<long> evicted_sum{0};
  auto store =
      make_store({.capacity = 64,
                  .when_full = DeadLetterFullPolicy::kDropOldest,
                  .on_overflow = [&](const StoredDeadLetter& letter) {
                    // relaxed: read after the join.
                    evicted_sum.fetch_add(letter.event.get<Parcel>()->id,
                                          std::memory_order_relaxed);
                  }});
  auto sink = store->sink();
  std::atomic<long> drained_sum{0};
  std::atomic<long> drained_count{0};
  std::atomic<int> adders_done{0};
  std::vector<std::jthread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 1; i <= kPerThread; ++i) {
        const OwnedEvent event =
            OwnedEvent::Of(Parcel{.id = t * kPerThread + i});
        sink(DeadLetter{.event = event.ref(),
                        .reason = DeadLetterReason::kCancelledAtShutdown,
                        .trace = {}});
      }
      // release: pairs with the drainer's acquire load.
      adders_done.fetch_add(1, std::memory_order_release);
    });
  }
  threads.emplace_back([&] {
    // acquire: pairs with the adders' release increments.
    while (adders_done.load(std::memory_order_acquire) < kThreads) {
      for (const StoredDeadLetter& letter : store->drain()) {
        // relaxed: read after the join.
        drained_sum.fetch_add(letter.event.get<Parcel>()->id,
                              std::memory_order_relaxed);
        drained_count.fetch_add(1, std::memory_order_relaxed);
      }
    }
  });
  threads.clear();  // joins

  const DeadLetterStoreStats stats = store->stats();
  CHECK(stats.stored == kThreads * kPerThread);
  // Every letter was drained, evicted or is still held.
  CHECK(static_cast<std::uint64_t>(drained_count.load()) + stats.evicted +
            store->size() ==
        stats.stored);
  CHECK(store->size() <= 64);
  long held_sum = 0;
  for (int id : ids_of(store->snapshot())) held_sum += id;
  constexpr long kTotal = kThreads * kPerThread;
  CHECK(drained_sum.load() + evicted_sum.load() + held_sum ==
        kTotal * (kTotal + 1) / 2);
}

}  // namespace
