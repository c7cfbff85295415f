// Tests of fnbus::testing::ErrorRecorder, DeadLetterRecorder and
// UnhandledRecorder.
//
// As in event_bus_test.cpp: no Catch2 assertion off the test thread, no
// sleeps to order threads, every wait bounded.

#include "fnbus/testing/recording_sinks.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "../support/bus_support.hpp"
#include "absl/status/status.h"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/testing/wait_result.hpp"

namespace fnbus_recording_sinks_test {

using namespace std::chrono_literals;
using fnbus::BusConfig;
using fnbus::DeadLetterReason;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::HandlerError;
using fnbus::PublishOptions;
using fnbus::ShutdownMode;
using fnbus::TraceContext;
using fnbus::testing::DeadLetterRecorder;
using fnbus::testing::ErrorRecorder;
using fnbus::testing::RecordedDeadLetter;
using fnbus::testing::RecordedError;
using fnbus::testing::RecordedUnhandled;
using fnbus::testing::UnhandledRecorder;
using fnbus::testing_support::IdEvent;
using fnbus::testing_support::make_bus;

using Order = IdEvent<"test.Order">;
using Refund = IdEvent<"test.Refund">;

std::string text_of(const auto& value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

TEST_CASE("recording_sinks: ErrorRecorder keeps owned copies of failures",
          "[recording_sinks]") {
  ErrorRecorder errors;
  BusConfig config;
  config.error_sink = errors.sink();
  auto bus = make_bus(std::move(config));
  auto validate = bus->subscribe<Order>(
      [](const Order& order) -> absl::Status {
        if (order.id < 0) {
          // A temporary message: the recorder must copy it.
          return absl::InvalidArgumentError("bad order " +
                                            std::to_string(order.id));
        }
        return absl::OkStatus();
      },
      {.name = "validate"});
  auto explode = bus->subscribe<Refund>(
      [](const Refund&) { throw std::runtime_error("refunds are broken"); },
      {.name = "refund"});

  bus->trigger(Order{1});
  CHECK(errors.empty());
  bus->trigger(Order{-7});
  bus->trigger(Refund{3});

  REQUIRE(errors.size() == 2);
  const RecordedError first = errors.at(0);
  CHECK(first.function_name == "validate");
  CHECK(first.event_type == "test.Order");
  CHECK(first.code == absl::StatusCode::kInvalidArgument);
  CHECK(first.message == "bad order -7");
  CHECK(first.status() == absl::InvalidArgumentError("bad order -7"));
  CHECK(first.trace.event_id != 0);
  CHECK(text_of(first) ==
        "validate on test.Order: INVALID_ARGUMENT: bad order -7");

  const RecordedError second = errors.last();
  CHECK(second.function_name == "refund");
  CHECK(second.event_type == "test.Refund");
  CHECK(second.code == absl::StatusCode::kUnknown);  // a throw
  CHECK(second.message == "refunds are broken");
  CHECK(second.trace.event_id != first.trace.event_id);
  CHECK(errors.records().size() == 2);

  errors.clear();
  CHECK(errors.empty());
}

TEST_CASE("recording_sinks: copies share a recording that the sink keeps",
          "[recording_sinks]") {
  std::function<void(const HandlerError&)> sink;
  ErrorRecorder copy;
  {
    ErrorRecorder errors;
    sink = errors.sink();
    copy = errors;
  }
  // The original is gone; the sink and the copy still share its log.
  sink(HandlerError{.function_name = "f",
                    .event_type = "E",
                    .code = absl::StatusCode::kInternal,
                    .message = "boom",
                    .trace = {}});
  REQUIRE(copy.size() == 1);
  CHECK(copy.last().message == "boom");
}

TEST_CASE("recording_sinks: at and last throw std::out_of_range",
          "[recording_sinks]") {
  ErrorRecorder errors;
  DeadLetterRecorder dead;
  UnhandledRecorder unhandled;
  CHECK_THROWS_WITH(errors.last(), "ErrorRecorder::last(): nothing recorded");
  CHECK_THROWS_WITH(dead.at(0), "DeadLetterRecorder::at(0): only 0 recorded");
  CHECK_THROWS_AS(unhandled.last(), std::out_of_range);
}

TEST_CASE("recording_sinks: ErrorRecorder::wait_for on the thread pool",
          "[recording_sinks]") {
  constexpr int kFailures = 50;
  ErrorRecorder errors;
  BusConfig config;
  config.workers = 2;
  config.error_sink = errors.sink();
  auto bus = make_bus(std::move(config));
  auto fail = bus->subscribe<Order>(
      [](const Order& order) -> absl::Status {
        return absl::NotFoundError("no order " + std::to_string(order.id));
      },
      {.name = "lookup"});

  for (int id = 0; id < kFailures; ++id) {
    REQUIRE(bus->publish(Order{id}).ok());
  }
  REQUIRE(errors.wait_for(kFailures, 10s));
  REQUIRE(bus->shutdown().ok());
  CHECK(errors.size() == kFailures);
  CHECK(bus->stats().failed == kFailures);
  int sum = 0;
  for (const RecordedError& error : errors.records()) {
    CHECK(error.code == absl::StatusCode::kNotFound);
    sum += std::stoi(error.message.substr(std::string("no order ").size()));
  }
  CHECK(sum == kFailures * (kFailures - 1) / 2);
}

TEST_CASE("recording_sinks: a failed wait_for lists the records",
          "[recording_sinks]") {
  ErrorRecorder errors;
  BusConfig config;
  config.error_sink = errors.sink();
  auto bus = make_bus(std::move(config));
  auto fail = bus->subscribe<Order>(
      [](const Order&) { return absl::InvalidArgumentError("bad"); },
      {.name = "validate"});
  bus->trigger(Order{1});

  const fnbus::testing::WaitResult result = errors.wait_for(2, 1ms);
  CHECK_FALSE(result);
  CHECK(result.message() ==
        "expected 2 handler errors within 1ms, recorded 1: "
        "[validate on test.Order: INVALID_ARGUMENT: bad]");
}

TEST_CASE("recording_sinks: DeadLetterRecorder records cancelled events",
          "[recording_sinks]") {
  DeadLetterRecorder dead;
  dead.keep<Order>();
  BusConfig config;
  config.execution = Execution::kManual;  // nothing runs until run_*()
  config.dead_letter_sink = dead.sink();
  auto bus = make_bus(std::move(config));
  std::atomic<int> handled{0};
  auto handler = bus->subscribe<Order>([&](const Order&) { ++handled; });
  auto refund_handler =
      bus->subscribe<Refund>([&](const Refund&) { ++handled; });

  PublishOptions traced;
  traced.trace = TraceContext{.correlation_id = 42, .parent_id = 0};
  REQUIRE(bus->publish(Order{1}, traced).ok());
  REQUIRE(bus->publish(Refund{2}).ok());
  REQUIRE(bus->publish(Order{3}).ok());
  CHECK(dead.empty());
  REQUIRE(bus->shutdown(ShutdownMode::kCancelPending).ok());

  CHECK(handled.load() == 0);
  REQUIRE(dead.size() == 3);
  const RecordedDeadLetter first = dead.at(0);
  CHECK(first.event_type == "test.Order");
  CHECK(first.reason == DeadLetterReason::kCancelledAtShutdown);
  REQUIRE(first.get<Order>() != nullptr);
  CHECK(first.get<Order>()->id == 1);
  CHECK(first.get<Refund>() == nullptr);
  CHECK(first.trace.context.correlation_id == 42);
  CHECK(first.trace.event_id != 0);
  CHECK(text_of(first) == "test.Order (cancelled_at_shutdown)");

  const RecordedDeadLetter refund = dead.at(1);
  CHECK(refund.event_type == "test.Refund");
  CHECK_FALSE(refund.event.has_value());  // Refund was not kept
  CHECK(refund.get<Refund>() == nullptr);
  REQUIRE(dead.last().get<Order>() != nullptr);
  CHECK(dead.last().get<Order>()->id == 3);
  CHECK(bus->stats().dead_lettered == 3);
}

TEST_CASE("recording_sinks: UnhandledRecorder records events nobody handled",
          "[recording_sinks]") {
  UnhandledRecorder unhandled;
  unhandled.keep<Order>().keep<Refund>();
  BusConfig config;
  config.unhandled_sink = unhandled.sink();
  auto bus = make_bus(std::move(config));

  bus->trigger(Order{5});
  {
    auto sub = bus->subscribe<Refund>([](const Refund&) {});
    bus->trigger(Refund{6});  // handled
  }
  bus->trigger(Refund{7});

  REQUIRE(unhandled.size() == 2);
  const RecordedUnhandled order = unhandled.at(0);
  CHECK(order.event_type == "test.Order");
  REQUIRE(order.get<Order>() != nullptr);
  CHECK(order.get<Order>()->id == 5);
  const RecordedUnhandled refund = unhandled.last();
  CHECK(refund.event_type == "test.Refund");
  REQUIRE(refund.get<Refund>() != nullptr);
  CHECK(refund.get<Refund>()->id == 7);
  CHECK(text_of(refund) == "test.Refund");
  CHECK(unhandled.wait_for(3, 1ms).message() ==
        "expected 3 unhandled events within 1ms, recorded 2: "
        "[test.Order, test.Refund]");
}

}  // namespace fnbus_recording_sinks_test
