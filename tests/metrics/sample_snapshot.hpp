// A realistic MetricsSnapshot built by hand, shared by exposition_test.cpp
// and prometheus_sample.cpp: several event types (one with a template-like
// name full of `<`, `>`, `::`, spaces and commas), functions whose names
// hold quotes, backslashes, newlines, a tab, UTF-8 and invalid UTF-8, and
// histograms with data from 300 ns to beyond the last finite `le` bound,
// and one function with circuit breakers (one open, one closed).
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <string>

#include "fnbus/metrics/snapshot.hpp"

namespace fnbus::testing_support {

// `count` samples around `median_nanos` (lognormal, fixed seed).
inline metrics::HistogramSnapshot sample_histogram(double median_nanos,
                                                   double sigma, int count,
                                                   std::uint32_t seed) {
  std::mt19937_64 random(seed);
  std::lognormal_distribution<double> dist(std::log(median_nanos), sigma);
  metrics::HistogramSnapshot h;
  for (int i = 0; i < count; ++i) {
    h.add(static_cast<std::uint64_t>(dist(random)));
  }
  return h;
}

inline metrics::MetricsSnapshot sample_snapshot() {
  using metrics::EventTypeMetrics;
  using metrics::FunctionMetrics;
  metrics::MetricsSnapshot s;
  s.taken_at = TimePoint(std::chrono::nanoseconds(1'234'567'890'123));
  s.latency_recorded = true;

  EventTypeMetrics order{.event = "OrderCreated",
                         .published = 10'000,
                         .rejected = 3,
                         .dispatched = 9'990,
                         .unhandled = 0,
                         .dead_lettered = 7};
  order.queue_wait = sample_histogram(2'000, 1.0, 9'990, 1);
  order.end_to_end = sample_histogram(40'000, 1.5, 9'990, 2);
  EventTypeMetrics templated{
      .event = "shop::Envelope<std::map<int, std::string>, 4>",
      .published = 5,
      .dispatched = 5,
      .unhandled = 5};
  templated.queue_wait = sample_histogram(300, 0.2, 5, 3);
  templated.end_to_end = sample_histogram(900, 0.2, 5, 4);
  EventTypeMetrics quoted{.event = "Odd \"event\" \\ name\nline two"};
  s.events = {order, templated, quoted};

  FunctionMetrics reserve{.event = "OrderCreated",
                          .function = "reserve_inventory",
                          .delivered = 9'980,
                          .failed = 10,
                          .filtered = 41,
                          .duplicates = 42,
                          .rejected = 43,
                          .fell_back = 44,
                          .timed_out = 45,
                          .late = 46,
                          .retried = 47,
                          .dead_lettered = 48,
                          .throttled = 49};
  reserve.dead_letter_reasons
      .by_reason[static_cast<std::size_t>(DeadLetterReason::kCircuitOpen)] = 43;
  reserve.dead_letter_reasons.by_reason[static_cast<std::size_t>(
      DeadLetterReason::kRetriesExhausted)] = 5;
  reserve.run_time = sample_histogram(30'000, 2.0, 9'990, 5);
  // Two subscriptions with breakers: one open, one closed.
  reserve.breakers = {.closed = 1, .half_open = 0, .open = 1};
  reserve.breaker_opened = 3;
  reserve.breaker_half_opened = 2;
  reserve.breaker_closed = 1;
  FunctionMetrics weird{.event = "OrderCreated",
                        .function = "say \"hi\" \\ back\\slash\nnext\tline",
                        .delivered = 9'990};
  weird.run_time = sample_histogram(5'000'000'000, 1.0, 9'990, 6);
  FunctionMetrics unicode{
      .event = "shop::Envelope<std::map<int, std::string>, 4>",
      .function = "caf\xC3\xA9 \xE2\x98\x95",
      .failed = 5};
  unicode.run_time = sample_histogram(700, 0.5, 5, 7);
  // Invalid UTF-8 (a truncated sequence, a stray byte): exposed as U+FFFD.
  FunctionMetrics broken{.event = "Odd \"event\" \\ name\nline two",
                         .function = "truncated \xE2\x98 stray \xFF"};
  s.functions = {reserve, weird, unicode, broken};

  s.gauges = {.queue_depth = 12,
              .queue_capacity = 4096,
              .in_flight = 2,
              .workers = 4,
              .workers_busy = 2,
              .workers_idle = 1,
              .workers_parked = 1};
  s.dead_letters
      .by_reason[static_cast<std::size_t>(DeadLetterReason::kCircuitOpen)] = 43;
  s.dead_letters
      .by_reason[static_cast<std::size_t>(DeadLetterReason::kWaitRefused)] = 2;
  return s;
}

}  // namespace fnbus::testing_support
