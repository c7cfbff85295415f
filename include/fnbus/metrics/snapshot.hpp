#pragma once

// What EventBus::metrics() returns: counters per event type and per
// function, latency histograms, and gauges, read at one moment.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fnbus/clock.hpp"
#include "fnbus/dead_letter_reason.hpp"
#include "fnbus/metrics/histogram.hpp"
#include "fnbus/resilience/breaker_state.hpp"

namespace fnbus::metrics {

// One event type. Counters are totals since the bus was created.
struct EventTypeMetrics {
  std::string event;                // event_type_name<E>()
  std::uint64_t published = 0;      // accepted by publish()
  std::uint64_t rejected = 0;       // refused by publish()
  std::uint64_t dispatched = 0;     // taken off the queue and run
  std::uint64_t unhandled = 0;      // dispatched with no subscriber
  std::uint64_t dead_lettered = 0;  // accepted, then given to the DLQ sink
  // From publish() accepting the event to a worker taking it.
  HistogramSnapshot queue_wait;
  // From publish() accepting the event to its last handler returning.
  HistogramSnapshot end_to_end;

  // Adds `other`'s counts and samples to these (keeps this name).
  void merge(const EventTypeMetrics& other);
};

// How many circuit breakers are in each state now (a gauge).
struct BreakerCounts {
  std::uint64_t closed = 0;
  std::uint64_t half_open = 0;
  std::uint64_t open = 0;
};

// Events given to the dead-letter sink, by reason: of the bus (every dead
// letter: a function's, a timer's, the queue's at shutdown;
// MetricsSnapshot::dead_letters), or of one function
// (FunctionMetrics::dead_letter_reasons); counted whether or not a sink is
// set.
struct DeadLetterCounts {
  std::array<std::uint64_t, kDeadLetterReasonCount> by_reason{};

  [[nodiscard]] std::uint64_t operator[](
      DeadLetterReason reason) const noexcept {
    return by_reason[static_cast<std::size_t>(reason)];
  }
  [[nodiscard]] std::uint64_t total() const noexcept {
    std::uint64_t sum = 0;
    for (std::uint64_t count : by_reason) sum += count;
    return sum;
  }
  void merge(const DeadLetterCounts& other) noexcept {
    for (std::size_t i = 0; i < by_reason.size(); ++i) {
      by_reason[i] += other.by_reason[i];
    }
  }
};

// One function: the subscriptions to one event type with one name.
struct FunctionMetrics {
  std::string event;
  std::string function;         // FunctionOptions::name
  std::uint64_t delivered = 0;  // calls that returned normally
  std::uint64_t failed = 0;     // calls that threw or returned non-OK
  // Outcomes of the function's stages (FunctionOptions; docs/resilience.md):
  std::uint64_t filtered = 0;    // turned down by its condition (`when`)
  std::uint64_t duplicates = 0;  // idempotency key seen before: not run
  // Breaker open, and no fallback (or it failed): dead-lettered.
  std::uint64_t rejected = 0;
  std::uint64_t fell_back = 0;  // handled by the fallback
  // Calls that returned or threw after their deadline (also in `failed`).
  std::uint64_t timed_out = 0;
  std::uint64_t late = 0;  // of those, calls that had succeeded
  // Failed calls followed by a retry (FunctionOptions::retry; also in
  // `failed`).
  std::uint64_t retried = 0;
  // Events this function gave up to the dead-letter sink, whatever the
  // reason (`rejected` ones included): dead_letter_reasons.total().
  std::uint64_t dead_lettered = 0;
  // The same, by DeadLetterReason (kCircuitOpen, kRetriesExhausted, ...).
  DeadLetterCounts dead_letter_reasons;
  // Events that found every call its concurrency limit allows running
  // (FunctionOptions::max_concurrency) and waited for one to end.
  std::uint64_t throttled = 0;
  HistogramSnapshot run_time;  // one handler call
  // Its circuit breakers (FunctionOptions::breaker; all 0 without one).
  // Each subscription with a breaker has a breaker of its own, so a
  // function whose subscriptions share a type and name may have several.
  // Gauge: its live breakers (of subscriptions not yet ended) by state.
  BreakerCounts breakers;
  // Counters: the transitions of its breakers (ended ones included), by
  // the state entered.
  std::uint64_t breaker_opened = 0;       // tripped, or a probe failed
  std::uint64_t breaker_half_opened = 0;  // cool-down over: probing
  std::uint64_t breaker_closed = 0;       // every probe succeeded

  // The most open state of its live breakers: open if any is open, else
  // half-open if any is, else closed; nullopt without a live breaker.
  // (With several breakers, "some of its events are being turned away"
  // is what an alert wants to see; `breakers` says how many.)
  [[nodiscard]] std::optional<resilience::BreakerState> breaker_state()
      const noexcept;
  // Whether it has a live breaker or its breakers ever changed state: the
  // exposition writes breaker series for these functions alone.
  [[nodiscard]] bool has_breaker_metrics() const noexcept;

  // Adds `other`'s counts and samples to these (keeps these names).
  void merge(const FunctionMetrics& other);
};

// Instantaneous values.
struct Gauges {
  // Events waiting to be dispatched: queued, plus follow-ups held in
  // workers' headroom (so it may exceed queue_capacity).
  std::uint64_t queue_depth = 0;
  std::uint64_t queue_capacity = 0;    // slots in the queue
  std::uint64_t in_flight = 0;         // events being handled now
  std::uint64_t workers = 0;           // pool size: running + starting
  std::uint64_t workers_busy = 0;      // of `workers`, handling an event
  std::uint64_t workers_idle = 0;      // awake without an event (polling)
  std::uint64_t workers_parked = 0;    // asleep until work arrives
  std::uint64_t workers_starting = 0;  // of `workers`, not yet running
  std::uint64_t workers_retiring = 0;  // asked to leave, finishing an event
  std::uint64_t workers_max = 0;       // BusConfig::max_workers
};

// The bus's timers (EventBus::publish_after(), publish_at(),
// publish_every()). Every one-shot timer ends exactly once: fired,
// cancelled or dead-lettered; a periodic one fires any number of times,
// then is cancelled or stopped by shutdown().
struct TimerMetrics {
  std::uint64_t pending = 0;        // gauge: scheduled and not yet ended
  std::uint64_t scheduled = 0;      // timers created
  std::uint64_t fired = 0;          // events they published
  std::uint64_t cancelled = 0;      // ended by cancel() or their handle
  std::uint64_t dead_lettered = 0;  // events given to the dead-letter sink:
                                    // pending at shutdown, or refused when
                                    // published
  std::uint64_t stopped = 0;        // periodic timers ended by shutdown()
};

// Everything at once. Counters are exact; they are read at slightly
// different moments while the bus is busy, and are final after shutdown().
// Event types appear once published or subscribed to (trigger() records
// nothing), functions once subscribed; two types with the same name are
// reported as one. Both are sorted by name.
struct MetricsSnapshot {
  TimePoint taken_at{};           // the bus clock when read
  bool latency_recorded = false;  // BusConfig::record_latency
  std::vector<EventTypeMetrics> events;
  std::vector<FunctionMetrics> functions;
  Gauges gauges;
  TimerMetrics timers;
  DeadLetterCounts dead_letters;

  // Sums over all event types / functions: every counter added, every
  // histogram merged; the names are left empty.
  [[nodiscard]] EventTypeMetrics total_events() const;
  [[nodiscard]] FunctionMetrics total_functions() const;
  // The first entry for `event` (and `function`), or nullptr. A linear
  // search, so it also works on snapshots built by hand, unsorted.
  [[nodiscard]] const EventTypeMetrics* find_event(
      std::string_view event) const noexcept;
  [[nodiscard]] const FunctionMetrics* find_function(
      std::string_view event, std::string_view function) const noexcept;
};

}  // namespace fnbus::metrics
