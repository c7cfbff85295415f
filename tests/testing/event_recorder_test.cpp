// Tests of fnbus::testing::EventRecorder and WaitResult.
//
// As in event_bus_test.cpp: no Catch2 assertion off the test thread, no
// sleeps to order threads, every wait bounded. trigger() runs handlers in
// the test thread, so most cases need neither a worker nor a wait.

#include "fnbus/testing/event_recorder.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "../support/bus_support.hpp"
#include "fmt/core.h"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/testing/wait_result.hpp"

namespace fnbus_event_recorder_test {

using namespace std::chrono_literals;
using fnbus::EventBus;
using fnbus::EventTrace;
using fnbus::testing::EventRecorder;
using fnbus::testing::WaitResult;
using fnbus::testing_support::IdEvent;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::wait_until;

// Printable with operator<<.
struct Order {
  static constexpr std::string_view kEventName = "test.Order";
  int id = 0;
  friend std::ostream& operator<<(std::ostream& out, const Order& order) {
    return out << "Order{id=" << order.id << '}';
  }
};
// Not printable.
using Plain = IdEvent<"test.Plain">;
// Printable with fmt only.
struct Fancy {
  static constexpr std::string_view kEventName = "test.Fancy";
  int id = 0;
};
// Caused by an Order, for trace ids.
struct Shipment {
  static constexpr std::string_view kEventName = "test.Shipment";
  int order_id = 0;
};
// Owns heap memory, so that a shallow copy would show under ASan.
struct Note {
  std::string text;
};

}  // namespace fnbus_event_recorder_test

template <>
struct fmt::formatter<fnbus_event_recorder_test::Fancy> {
  constexpr auto parse(fmt::format_parse_context& context) {
    return context.begin();
  }
  template <typename FormatContext>
  auto format(const fnbus_event_recorder_test::Fancy& fancy,
              FormatContext& context) const {
    return fmt::format_to(context.out(), "Fancy#{}", fancy.id);
  }
};

namespace fnbus_event_recorder_test {

static_assert(fnbus::testing::detail::Streamable<Order>);
static_assert(!fnbus::testing::detail::Printable<Plain>);
static_assert(!fnbus::testing::detail::Streamable<Fancy>);
static_assert(fnbus::testing::detail::FmtFormattable<Fancy>);

std::vector<int> ids(const std::vector<Order>& orders) {
  std::vector<int> out;
  for (const Order& order : orders) out.push_back(order.id);
  return out;
}

TEST_CASE("event_recorder: records copies of the events in order",
          "[event_recorder]") {
  auto bus = make_bus();
  EventRecorder<Order> orders(*bus);
  CHECK(orders.empty());
  CHECK(orders.size() == 0);

  bus->trigger(Order{1});
  bus->trigger(Order{2});
  bus->trigger(Order{3});

  CHECK_FALSE(orders.empty());
  REQUIRE(orders.size() == 3);
  CHECK(ids(orders.events()) == std::vector<int>{1, 2, 3});
  CHECK(orders.at(0).id == 1);
  CHECK(orders.at(2).id == 3);
  CHECK(orders.last().id == 3);
  CHECK(orders.traces().size() == 3);
  CHECK(orders.name() == "recorder");
}

// The documented timing: a recorder records at dispatch, like any other
// subscriber. With kManual a test sees a follow-up as published (stats)
// before it is recorded, and recorded once it has run.
TEST_CASE("event_recorder: records a follow-up when it is dispatched",
          "[event_recorder]") {
  auto bus = make_bus({.execution = fnbus::Execution::kManual});
  EventRecorder<Shipment> shipments(*bus);
  auto ship = bus->subscribe(
      [&bus](const Order& order) { return bus->publish(Shipment{order.id}); });
  REQUIRE(ship.active());

  REQUIRE(bus->publish(Order{7}).ok());
  REQUIRE(bus->run_one());  // the Order's handler publishes the Shipment
  CHECK(bus->stats().published == 2);
  CHECK(shipments.empty());  // queued, not yet dispatched

  REQUIRE(bus->run_one());  // the Shipment is dispatched
  REQUIRE(shipments.size() == 1);
  CHECK(shipments.last().order_id == 7);
}

TEST_CASE("event_recorder: keeps its own copy of the event",
          "[event_recorder]") {
  auto bus = make_bus();
  EventRecorder<Note> notes(*bus);
  {
    Note note{std::string(100, 'x')};  // not in the small-string buffer
    bus->trigger(note);
    note.text = "changed";
  }
  REQUIRE(notes.size() == 1);
  CHECK(notes.last().text == std::string(100, 'x'));
}

TEST_CASE("event_recorder: a predicate selects the events to record",
          "[event_recorder]") {
  auto bus = make_bus();
  EventRecorder<Order> even(
      *bus, [](const Order& order) { return order.id % 2 == 0; }, "even");
  EventRecorder<Order> all(*bus);
  for (int id = 1; id <= 6; ++id) bus->trigger(Order{id});

  CHECK(ids(even.events()) == std::vector<int>{2, 4, 6});
  CHECK(all.size() == 6);
  CHECK(even.name() == "even");
}

TEST_CASE("event_recorder: clear forgets what was recorded, recording goes on",
          "[event_recorder]") {
  auto bus = make_bus();
  EventRecorder<Order> orders(*bus);
  bus->trigger(Order{1});
  bus->trigger(Order{2});
  REQUIRE(orders.size() == 2);

  orders.clear();
  CHECK(orders.empty());
  CHECK(orders.traces().empty());

  bus->trigger(Order{3});
  CHECK(ids(orders.events()) == std::vector<int>{3});
}

TEST_CASE("event_recorder: at and last throw std::out_of_range",
          "[event_recorder]") {
  auto bus = make_bus();
  EventRecorder<Order> orders(*bus);
  CHECK_THROWS_AS(orders.last(), std::out_of_range);
  CHECK_THROWS_AS(orders.last_trace(), std::out_of_range);
  CHECK_THROWS_WITH(orders.last(),
                    Catch::Contains("EventRecorder<test.Order>"));

  bus->trigger(Order{1});
  CHECK(orders.at(0).id == 1);
  CHECK_THROWS_AS(orders.at(1), std::out_of_range);
  CHECK_THROWS_AS(orders.trace_at(1), std::out_of_range);
  CHECK_THROWS_WITH(orders.at(1), Catch::Contains("at(1)") &&
                                      Catch::Contains("only 1 recorded"));
}

TEST_CASE("event_recorder: unsubscribe and destruction stop recording",
          "[event_recorder]") {
  std::atomic<int> unhandled{0};
  fnbus::BusConfig config;
  config.unhandled_sink = [&](const fnbus::EventRef&) {
    unhandled.fetch_add(1);
  };
  auto bus = make_bus(std::move(config));

  SECTION("unsubscribe") {
    EventRecorder<Order> orders(*bus);
    CHECK(orders.subscribed());
    bus->trigger(Order{1});
    orders.unsubscribe();
    CHECK_FALSE(orders.subscribed());
    orders.unsubscribe();  // idempotent
    bus->trigger(Order{2});
    CHECK(ids(orders.events()) == std::vector<int>{1});  // kept
    CHECK(unhandled.load() == 1);
  }
  SECTION("destruction") {
    {
      EventRecorder<Order> orders(*bus);
      bus->trigger(Order{1});
      CHECK(unhandled.load() == 0);
    }
    bus->trigger(Order{2});
    CHECK(unhandled.load() == 1);
  }
}

TEST_CASE("event_recorder: may outlive its bus", "[event_recorder]") {
  auto bus = make_bus();
  EventRecorder<Order> orders(*bus);
  bus->trigger(Order{1});
  bus.reset();
  CHECK(orders.size() == 1);
  orders.unsubscribe();  // does nothing once the bus is gone
  CHECK(orders.last().id == 1);
}

TEST_CASE("event_recorder: records each event's trace ids",
          "[event_recorder]") {
  auto bus = make_bus();
  EventBus* raw = bus.get();
  EventRecorder<Order> orders(*bus);
  EventRecorder<Shipment> shipments(*bus);
  // Subscribed after the recorder: the Order is recorded before this runs.
  auto ship = bus->subscribe<Order>(
      [raw](const Order& order) { raw->trigger(Shipment{order.id}); });

  bus->trigger(Order{1});
  bus->trigger(Order{2});

  REQUIRE(orders.size() == 2);
  REQUIRE(shipments.size() == 2);
  const std::vector<EventTrace> order_traces = orders.traces();
  const std::vector<EventTrace> shipment_traces = shipments.traces();
  for (std::size_t i = 0; i < 2; ++i) {
    INFO("event " << i);
    const EventTrace& order = order_traces[i];
    const EventTrace& shipment = shipment_traces[i];
    CHECK(order.event_id != 0);
    CHECK(order.context.correlation_id != 0);
    CHECK(order.context.parent_id == 0);  // started outside any handler
    CHECK(shipment.event_id != 0);
    CHECK(shipment.event_id != order.event_id);
    CHECK(shipment.context.parent_id == order.event_id);
    CHECK(shipment.context.correlation_id == order.context.correlation_id);
  }
  // Two triggers from the test thread: two correlations.
  CHECK(order_traces[0].context.correlation_id !=
        order_traces[1].context.correlation_id);
  CHECK(orders.last_trace() == order_traces[1]);
  CHECK(orders.trace_at(0) == order_traces[0]);
}

TEST_CASE("event_recorder: wait_for returns at once when enough are recorded",
          "[event_recorder]") {
  auto bus = make_bus();
  EventRecorder<Order> orders(*bus);
  bus->trigger(Order{1});
  bus->trigger(Order{2});

  const WaitResult result = orders.wait_for(2, 0ms);
  CHECK(static_cast<bool>(result));
  CHECK(result.reached());
  CHECK(result.expected() == 2);
  CHECK(result.recorded() == 2);
  CHECK(result.message() ==
        "recorded 2 test.Order events (expected 2 within 0ms): "
        "[Order{id=1}, Order{id=2}]");
  CHECK(orders.wait_for(0, 0ms));
  CHECK(orders.wait_for(1, 0ms).recorded() == 2);
}

TEST_CASE("event_recorder: wait_for sees events published by the pool",
          "[event_recorder]") {
  constexpr int kEvents = 100;
  auto bus = make_bus({.workers = 2});
  EventRecorder<Order> orders(*bus);
  std::atomic<int> refused{0};  // the queue (4096 slots) never fills

  std::thread producer([&] {
    for (int id = 1; id <= kEvents; ++id) {
      if (!bus->publish(Order{id}).ok()) refused.fetch_add(1);
    }
  });
  // The waiting starts before (or while) the events arrive.
  const WaitResult result = orders.wait_for(kEvents, 10s);
  producer.join();
  REQUIRE(refused.load() == 0);
  REQUIRE(result);
  CHECK(result.recorded() >= kEvents);

  REQUIRE(bus->shutdown().ok());
  std::vector<int> seen = ids(orders.events());
  REQUIRE(seen.size() == kEvents);
  std::int64_t sum = 0;
  std::vector<int> count(kEvents + 1, 0);
  for (int id : seen) {
    REQUIRE(id >= 1);
    REQUIRE(id <= kEvents);
    ++count[id];
    sum += id;
  }
  CHECK(sum == std::int64_t{kEvents} * (kEvents + 1) / 2);
  for (int id = 1; id <= kEvents; ++id) CHECK(count[id] == 1);
  CHECK(orders.traces().size() == kEvents);
}

TEST_CASE("event_recorder: many producers, readers while recording",
          "[event_recorder]") {
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 500;
  constexpr int kTotal = kProducers * kPerProducer;
  auto bus = make_bus({.queue_capacity = 1024, .workers = 2});
  EventRecorder<Order> orders(*bus);
  EventRecorder<Order> odd(
      *bus, [](const Order& order) { return order.id % 2 == 1; }, "odd");
  std::atomic<int> refused{0};

  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        const int id = p * kPerProducer + i;
        // The queue may fill: retry, for a bounded time.
        if (!wait_until([&] { return bus->publish(Order{id}).ok(); })) {
          refused.fetch_add(1);
        }
      }
    });
  }
  // Reads race with the workers' recording (for TSan); what was recorded
  // only grows.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  std::size_t max_seen = 0;
  bool shrank = false;
  while (!orders.wait_for(kTotal, 1ms) &&
         std::chrono::steady_clock::now() < deadline) {
    const std::size_t seen = orders.events().size();
    if (seen < max_seen) shrank = true;
    max_seen = seen;
  }
  CHECK_FALSE(shrank);
  for (std::thread& producer : producers) producer.join();
  REQUIRE(refused.load() == 0);
  REQUIRE(orders.wait_for(kTotal, 10s));
  REQUIRE(odd.wait_for(kTotal / 2, 10s));
  REQUIRE(bus->shutdown().ok());

  std::int64_t sum = 0;
  for (const Order& order : orders.events()) sum += order.id;
  CHECK(sum == std::int64_t{kTotal} * (kTotal - 1) / 2);
  CHECK(orders.size() == kTotal);
  CHECK(odd.size() == kTotal / 2);
  for (const Order& order : odd.events()) CHECK(order.id % 2 == 1);
}

TEST_CASE("event_recorder: a failed wait_for says what it expected and saw",
          "[event_recorder]") {
  auto bus = make_bus();

  SECTION("events with operator<< are listed") {
    EventRecorder<Order> orders(*bus);
    bus->trigger(Order{1});
    bus->trigger(Order{2});
    const WaitResult result = orders.wait_for(3, 1ms);
    CHECK_FALSE(result);
    CHECK(result.expected() == 3);
    CHECK(result.recorded() == 2);
    CHECK(result.message() ==
          "expected 3 test.Order events within 1ms, recorded 2: "
          "[Order{id=1}, Order{id=2}]");
  }
  SECTION("events with an fmt::formatter are listed") {
    EventRecorder<Fancy> fancy(*bus);
    bus->trigger(Fancy{7});
    CHECK(fancy.wait_for(2, 1ms).message() ==
          "expected 2 test.Fancy events within 1ms, recorded 1: [Fancy#7]");
  }
  SECTION("other events are counted") {
    EventRecorder<Plain> plain(*bus);
    bus->trigger(Plain{1});
    CHECK(plain.wait_for(1, 1ms).message() ==
          "recorded 1 test.Plain event (expected 1 within 1ms)");
    CHECK(plain.wait_for(2, 1ms).message() ==
          "expected 2 test.Plain events within 1ms, recorded 1");
  }
  SECTION("nothing recorded") {
    EventRecorder<Order> orders(*bus);
    CHECK(orders.wait_for(1, 1ms).message() ==
          "expected 1 test.Order event within 1ms, recorded 0");
  }
  SECTION("long recordings are cut after 20 events") {
    EventRecorder<Order> orders(*bus);
    for (int id = 1; id <= 25; ++id) bus->trigger(Order{id});
    const std::string message = orders.wait_for(30, 1ms).message();
    CHECK_THAT(message, Catch::StartsWith("expected 30 test.Order events "
                                          "within 1ms, recorded 25: "
                                          "[Order{id=1}, "));
    CHECK_THAT(message, Catch::EndsWith("Order{id=20}, ... 5 more]"));
    CHECK_THAT(message, !Catch::Contains("Order{id=21}"));
  }
}

TEST_CASE("event_recorder: Catch2 prints a WaitResult through operator<<",
          "[event_recorder]") {
  // REQUIRE(expr) on a non-bool prints Catch::Detail::stringify(expr) as
  // the expansion; for a streamable type that is its operator<<.
  auto bus = make_bus();
  EventRecorder<Order> orders(*bus);
  bus->trigger(Order{4});
  const WaitResult result = orders.wait_for(2, 1ms);
  CHECK(Catch::Detail::stringify(result) == result.message());
  CHECK(Catch::Detail::stringify(result) ==
        "expected 2 test.Order events within 1ms, recorded 1: [Order{id=4}]");
  // REQUIRE_FALSE keeps the message too.
  REQUIRE_FALSE(orders.wait_for(2, 1ms));
}

}  // namespace fnbus_event_recorder_test
