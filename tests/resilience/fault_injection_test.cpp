// Fault injection under concurrency (run under TSan by .ci/run): several
// producers publish to a thread-pool bus whose functions fail a third of
// their invocations behind circuit breakers that open, half-open and close
// as a producer moves the ManualClock on. Whatever the interleaving, every
// event ends exactly once per function:
// - with a fallback: handled by the handler or by the fallback;
// - without: delivered, reported failed, or dead-lettered (open breaker);
// - with retries: delivered by some call, or dead-lettered once (retries
//   exhausted, open breaker, or a retry still waiting at shutdown);
// and the per-function counters add up to the same totals. Bounded: a
// fixed number of events, joined threads, bounded waits.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "../support/bus_support.hpp"
#include "absl/status/status.h"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace fnbus_fault_injection_test {

using fnbus::DeadLetter;
using fnbus::DeadLetterReason;
using fnbus::EventBus;
using fnbus::FunctionOptions;
using fnbus::HandlerError;
using fnbus::testing::ManualClock;
using fnbus::testing_support::make_bus;
using namespace std::chrono_literals;

constexpr std::size_t kProducers = 4;
constexpr std::size_t kPerProducer = 2'000;
constexpr std::size_t kEvents = kProducers * kPerProducer;

struct Job {
  std::uint32_t id = 0;
};

// A third of the invocations fail: which ones is fixed by the id, so the
// run is the same whatever the interleaving.
bool fails(std::uint32_t id) { return (id * 2654435761u >> 7) % 3 == 0; }

// One counter per event id and outcome. relaxed everywhere: each counter
// is only incremented by the workers and read after they are joined.
struct Tally {
  std::vector<std::atomic<std::uint32_t>> handled =
      std::vector<std::atomic<std::uint32_t>>(kEvents);
  std::vector<std::atomic<std::uint32_t>> fell_back =
      std::vector<std::atomic<std::uint32_t>>(kEvents);
  std::vector<std::atomic<std::uint32_t>> failed =
      std::vector<std::atomic<std::uint32_t>>(kEvents);
  std::vector<std::atomic<std::uint32_t>> dead_lettered =
      std::vector<std::atomic<std::uint32_t>>(kEvents);

  static void add(std::vector<std::atomic<std::uint32_t>>& counters,
                  std::uint32_t id) {
    counters.at(id).fetch_add(1, std::memory_order_relaxed);
  }
  static std::uint32_t at(const std::vector<std::atomic<std::uint32_t>>& c,
                          std::size_t id) {
    return c[id].load(std::memory_order_relaxed);
  }
};

fnbus::resilience::BreakerOptions breaker() {
  return {.failure_rate = 0.25,
          .minimum_calls = 20,
          .window = 10s,
          .window_buckets = 10,
          .open_for = 2s,
          .half_open_probes = 3};
}

TEST_CASE("fault injection: every event ends exactly once per function",
          "[fault_injection]") {
  auto clock = std::make_shared<ManualClock>();
  Tally with_fallback;
  Tally without_fallback;
  Tally with_retries;
  fnbus::BusConfig config{.queue_capacity = 1024,
                          .workers = 2,
                          .overflow = fnbus::OverflowPolicy::kBlock,
                          // On the ManualClock, which the first producer
                          // moves 20 s on: far longer, never reached.
                          .block_timeout = 1h,
                          .clock = clock};
  config.error_sink = [&](const HandlerError& error) {
    if (error.function_name != "no_fallback") return;
    Tally::add(without_fallback.failed, error.event.get<Job>()->id);
  };
  // Catch2 is not thread-safe: the sinks count, the test thread checks.
  std::atomic<std::uint32_t> unexpected_letters{0};
  config.dead_letter_sink = [&](const DeadLetter& letter) {
    if (letter.function == "with_retries") {
      Tally::add(with_retries.dead_lettered, letter.event.get<Job>()->id);
      return;
    }
    if (letter.reason != DeadLetterReason::kCircuitOpen ||
        letter.function != "no_fallback") {
      // relaxed: read after the workers are joined.
      unexpected_letters.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    Tally::add(without_fallback.dead_lettered, letter.event.get<Job>()->id);
  };
  auto bus = make_bus(std::move(config));

  FunctionOptions fallback_options;
  fallback_options.name = "with_fallback";
  fallback_options.breaker = breaker();
  fallback_options.fallback = [&](const Job& job) {
    Tally::add(with_fallback.fell_back, job.id);
  };
  auto first = bus->subscribe(
      [&](const Job& job) {
        if (fails(job.id)) return absl::UnavailableError("injected");
        Tally::add(with_fallback.handled, job.id);
        return absl::OkStatus();
      },
      std::move(fallback_options));
  FunctionOptions plain_options;
  plain_options.name = "no_fallback";
  plain_options.breaker = breaker();
  auto second = bus->subscribe(
      [&](const Job& job) {
        if (fails(job.id + 1)) throw std::runtime_error("injected");
        Tally::add(without_fallback.handled, job.id);
      },
      std::move(plain_options));
  FunctionOptions retry_options;
  retry_options.name = "with_retries";
  retry_options.breaker = breaker();
  retry_options.retry = fnbus::resilience::RetryOptions{
      .max_attempts = 3, .backoff = {.initial = 1ms, .max = 100ms}};
  auto third = bus->subscribe(
      [&](const Job& job, fnbus::Context& context) {
        // Each call of an event fails or not on its own.
        if (fails(job.id * 3 + context.attempt())) {
          return absl::UnavailableError("injected");
        }
        Tally::add(with_retries.handled, job.id);
        return absl::OkStatus();
      },
      std::move(retry_options));

  std::vector<std::thread> producers;
  std::atomic<std::size_t> refused{0};
  for (std::size_t p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (std::size_t i = 0; i < kPerProducer; ++i) {
        const auto id = static_cast<std::uint32_t>(p * kPerProducer + i);
        // relaxed: read after the join.
        if (!bus->publish(Job{id}).ok()) {
          refused.fetch_add(1, std::memory_order_relaxed);
        }
        // The first producer moves time on, so that the breakers' windows
        // roll and open breakers half-open.
        if (p == 0 && i % 50 == 0) clock->advance(500ms);
      }
    });
  }
  for (std::thread& producer : producers) producer.join();
  REQUIRE(refused.load(std::memory_order_relaxed) == 0);
  REQUIRE(bus->shutdown().ok());

  std::size_t wrong_with = 0;
  std::size_t wrong_without = 0;
  std::size_t wrong_retries = 0;
  std::uint64_t retries_dead_lettered = 0;
  std::uint64_t fell_back = 0;
  std::uint64_t dead_lettered = 0;
  for (std::size_t id = 0; id < kEvents; ++id) {
    const std::uint32_t a = Tally::at(with_fallback.handled, id) +
                            Tally::at(with_fallback.fell_back, id);
    const std::uint32_t b = Tally::at(without_fallback.handled, id) +
                            Tally::at(without_fallback.failed, id) +
                            Tally::at(without_fallback.dead_lettered, id);
    const std::uint32_t c = Tally::at(with_retries.handled, id) +
                            Tally::at(with_retries.dead_lettered, id);
    if (a != 1) ++wrong_with;
    if (b != 1) ++wrong_without;
    if (c != 1) ++wrong_retries;
    retries_dead_lettered += Tally::at(with_retries.dead_lettered, id);
    fell_back += Tally::at(with_fallback.fell_back, id);
    dead_lettered += Tally::at(without_fallback.dead_lettered, id);
  }
  CHECK(unexpected_letters.load(std::memory_order_relaxed) == 0);
  CHECK(wrong_with == 0);
  CHECK(wrong_without == 0);
  CHECK(wrong_retries == 0);
  // The faults did reach the fallback and the open breaker.
  CHECK(fell_back > 0);
  CHECK(dead_lettered > 0);

  const fnbus::metrics::MetricsSnapshot m = bus->metrics();
  const auto* f1 =
      m.find_function(fnbus::event_type_name<Job>(), "with_fallback");
  const auto* f2 =
      m.find_function(fnbus::event_type_name<Job>(), "no_fallback");
  REQUIRE(f1 != nullptr);
  REQUIRE(f2 != nullptr);
  CHECK(f1->delivered + f1->fell_back == kEvents);
  CHECK(f1->fell_back == fell_back);
  CHECK(f2->delivered + f2->failed + f2->rejected == kEvents);
  CHECK(f2->rejected == dead_lettered);
  const auto* f3 =
      m.find_function(fnbus::event_type_name<Job>(), "with_retries");
  REQUIRE(f3 != nullptr);
  CHECK(f3->delivered + f3->dead_lettered == kEvents);
  CHECK(f3->dead_lettered == retries_dead_lettered);
  CHECK(f3->retried > 0);
  // Each retry that ran was a queued delivery of its own.
  const auto* jobs = m.find_event(fnbus::event_type_name<Job>());
  REQUIRE(jobs != nullptr);
  CHECK(jobs->published == kEvents);
  CHECK(jobs->dispatched == kEvents);
  fnbus::testing_support::check_final_stats(bus->stats());
}

}  // namespace fnbus_fault_injection_test
