// Failures carry their event and Context, each function can handle its own
// (FunctionOptions::on_error), trigger() failures are counted like
// published ones, and the sinks can be replaced on a live bus.

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/metrics/exposition.hpp"

namespace fnbus_failure_test {

using fnbus::BusConfig;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::FunctionOptions;
using fnbus::HandlerError;
using fnbus::testing_support::make_bus;

struct PaymentRequested {
  int order_id = 0;
  std::string card;
};
struct RefundIssued {
  int order_id = 0;
};
struct Other {
  int n = 0;
};

// What a sink copies out of a HandlerError to keep.
struct KeptFailure {
  std::string function;
  std::string message;
  PaymentRequested event;
  std::uint64_t event_id = 0;
  std::string context_function;
};

TEST_CASE(
    "failure: HandlerError carries the failed event and the call's Context",
    "[failure]") {
  std::vector<KeptFailure> kept;
  BusConfig config{.execution = Execution::kManual};
  config.error_sink = [&](const HandlerError& error) {
    const PaymentRequested* payment = error.event.get<PaymentRequested>();
    REQUIRE(payment != nullptr);
    CHECK(error.event.get<Other>() == nullptr);
    kept.push_back(
        {std::string(error.function_name), std::string(error.message), *payment,
         error.context.event_id(), std::string(error.context.function_name())});
    CHECK(error.context.event_trace() == error.trace);
  };
  auto bus = make_bus(std::move(config));
  auto pay = bus->subscribe<PaymentRequested>(
      [](const PaymentRequested&) -> absl::Status {
        return absl::UnavailableError("gateway down");
      },
      {.name = "charge_card"});
  REQUIRE(bus->publish(PaymentRequested{42, "4111"}).ok());
  REQUIRE(bus->run_until_idle() == 1);
  REQUIRE(kept.size() == 1);
  CHECK(kept[0].function == "charge_card");
  CHECK(kept[0].message == "gateway down");
  CHECK(kept[0].event.order_id == 42);
  CHECK(kept[0].event.card == "4111");
  CHECK(kept[0].event_id != 0);
  CHECK(kept[0].context_function == "charge_card");
}

TEST_CASE(
    "failure: on_error runs for its own function before the error sink and "
    "may publish a compensation",
    "[failure]") {
  std::vector<std::string> calls;
  std::vector<int> refunds;
  EventBus* raw = nullptr;
  BusConfig config{.execution = Execution::kManual};
  config.error_sink = [&](const HandlerError& error) {
    calls.push_back("sink:" + std::string(error.function_name));
  };
  auto bus = make_bus(std::move(config));
  raw = bus.get();
  auto pay = bus->subscribe<PaymentRequested>(
      [](const PaymentRequested&) { throw std::runtime_error("declined"); },
      FunctionOptions{
          .name = "charge_card", .on_error = [&](const HandlerError& error) {
            calls.push_back("on_error:" + std::string(error.message));
            const auto* payment = error.event.get<PaymentRequested>();
            REQUIRE(payment != nullptr);
            CHECK(raw->publish(RefundIssued{payment->order_id}).ok());
          }});
  auto other = bus->subscribe<PaymentRequested>(
      [](const PaymentRequested&) { throw std::runtime_error("audit down"); },
      {.name = "audit"});
  auto refund = bus->subscribe<RefundIssued>(
      [&](const RefundIssued& r) { refunds.push_back(r.order_id); });
  REQUIRE(bus->publish(PaymentRequested{7, "x"}).ok());
  REQUIRE(bus->run_until_idle() == 2);  // the payment, then the refund
  CHECK(calls == std::vector<std::string>{"on_error:declined",
                                          "sink:charge_card", "sink:audit"});
  CHECK(refunds == std::vector<int>{7});
}

TEST_CASE(
    "failure: an on_error that throws is dropped and the error sink still "
    "runs",
    "[failure]") {
  int sink_calls = 0;
  BusConfig config{.execution = Execution::kManual};
  config.error_sink = [&](const HandlerError&) { ++sink_calls; };
  auto bus = make_bus(std::move(config));
  auto pay = bus->subscribe<PaymentRequested>(
      [](const PaymentRequested&) { throw std::runtime_error("declined"); },
      FunctionOptions{.name = "charge_card",
                      .on_error = [](const HandlerError&) {
                        throw std::runtime_error("compensation failed");
                      }});
  REQUIRE(bus->publish(PaymentRequested{}).ok());
  REQUIRE(bus->run_until_idle() == 1);
  CHECK(sink_calls == 1);
  CHECK(bus->stats().failed == 1);
}

TEST_CASE(
    "failure: trigger failures are counted in stats, per function and in the "
    "Prometheus text",
    "[failure]") {
  int sink_calls = 0;
  BusConfig config;
  config.error_sink = [&](const HandlerError&) { ++sink_calls; };
  auto bus = make_bus(std::move(config));
  auto pay = bus->subscribe<PaymentRequested>(
      [](const PaymentRequested& p) -> absl::Status {
        if (p.order_id % 2 == 0) return absl::OkStatus();
        return absl::InternalError("odd order");
      },
      {.name = "charge_card"});
  for (int i = 0; i < 10; ++i) bus->trigger(PaymentRequested{i, ""});
  CHECK(sink_calls == 5);
  CHECK(bus->stats().failed == 5);
  const fnbus::metrics::MetricsSnapshot snapshot = bus->metrics();
  const fnbus::metrics::FunctionMetrics totals = snapshot.total_functions();
  CHECK(totals.failed == 5);
  bool found = false;
  for (const auto& function : snapshot.functions) {
    if (function.function == "charge_card") {
      found = true;
      CHECK(function.failed == 5);
    }
  }
  CHECK(found);
  const std::string text = fnbus::metrics::to_prometheus_text(snapshot);
  CHECK(text.find("function=\"charge_card\"} 5") != std::string::npos);
}

TEST_CASE(
    "failure: the sinks can be replaced on a live bus while failures happen",
    "[failure]") {
  constexpr int kFailures = 20000;
  constexpr int kSinks = 50;
  // One counter per sink generation; a failure reaches exactly one sink.
  std::vector<std::atomic<int>> reached(kSinks + 1);
  std::atomic<int> done{0};
  BusConfig config{.workers = 2};
  config.error_sink = [&](const HandlerError&) {
    // relaxed: read after shutdown() joined the workers.
    reached[0].fetch_add(1, std::memory_order_relaxed);
  };
  auto bus = make_bus(std::move(config));
  auto fail = bus->subscribe<Other>([&](const Other&) {
    done.fetch_add(1, std::memory_order_relaxed);
    throw std::runtime_error("boom");
  });
  std::thread producer([&] {
    for (int i = 0; i < kFailures; ++i) {
      while (!bus->publish(Other{i}).ok()) std::this_thread::yield();
    }
  });
  for (int s = 1; s <= kSinks; ++s) {
    bus->set_error_sink([&reached, s](const HandlerError&) {
      reached[static_cast<std::size_t>(s)].fetch_add(1,
                                                     std::memory_order_relaxed);
    });
    bus->set_unhandled_sink([](const fnbus::EventRef&) {});
    bus->set_dead_letter_sink([](const fnbus::DeadLetter&) {});
  }
  producer.join();
  REQUIRE(bus->shutdown().ok());
  int total = 0;
  for (const auto& count : reached) total += count.load();
  CHECK(total == kFailures);
  CHECK(done.load() == kFailures);
  CHECK(bus->stats().failed == kFailures);
  // A failure after a replacement reaches the new sink only.
  int after = 0;
  bus->set_error_sink([&](const HandlerError&) { ++after; });
  bus->trigger(Other{});
  CHECK(after == 1);
  CHECK(total + 1 == static_cast<int>(bus->stats().failed));
}

TEST_CASE("failure: an empty replacement removes a sink", "[failure]") {
  int unhandled = 0;
  BusConfig config{.execution = Execution::kManual};
  config.unhandled_sink = [&](const fnbus::EventRef&) { ++unhandled; };
  auto bus = make_bus(std::move(config));
  bus->trigger(Other{});
  bus->set_unhandled_sink({});
  bus->trigger(Other{});
  CHECK(unhandled == 1);
  CHECK(bus->stats().unhandled == 0);  // trigger() counts no dispatches
}

}  // namespace fnbus_failure_test
