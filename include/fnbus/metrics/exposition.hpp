#pragma once

// MetricsSnapshot as text for scrapers: Prometheus text format 0.0.4 and
// JSON. fnbus serves no HTTP itself; return this text from the endpoint your
// backend already has (see examples/metrics_endpoint).

#include <array>
#include <cstdint>
#include <string>

#include "fnbus/metrics/snapshot.hpp"

namespace fnbus::metrics {

// The finite `le` bounds of every Prometheus histogram, in nanoseconds:
// 1, 2.5 and 5 x 10^k seconds from 1 us to 50 s, then 60 s (25 bounds),
// written as seconds ("1e-06", "2.5e-06", ..., "50", "60"), followed by
// "+Inf". Each count is HistogramSnapshot::count_at_or_below(bound), so it
// is counted per internal bucket: the internal bucket that straddles a
// bound (at most 1/64 of an octave wide, e.g. [1000 ns, 1007 ns] at 1 us)
// counts in the next `le` above it, never below -- a `le` count may be
// slightly low, never high. (A bound at or above the histogram's max
// counts every sample.) `+Inf` equals `_count`.
inline constexpr std::array<std::uint64_t, 25> kPrometheusBucketBoundsNanos = {
    1'000,         2'500,          5'000,          10'000,
    25'000,        50'000,         100'000,        250'000,
    500'000,       1'000'000,      2'500'000,      5'000'000,
    10'000'000,    25'000'000,     50'000'000,     100'000'000,
    250'000'000,   500'000'000,    1'000'000'000,  2'500'000'000,
    5'000'000'000, 10'000'000'000, 25'000'000'000, 50'000'000'000,
    60'000'000'000};

// Prometheus text exposition format 0.0.4 (Content-Type
// "text/plain; version=0.0.4"). Metric names start with `fnbus_`; labels
// are `event` and `function`; latencies are histograms in seconds with
// `_bucket{le=...}`, `_sum` and `_count`. Families, each with `# HELP` and
// `# TYPE` once (a family with no series is left out):
// - counters per event type {event}: fnbus_events_published_total,
//   _rejected_total, _dispatched_total, _unhandled_total,
//   _dead_lettered_total;
// - counters per function {event, function}: fnbus_function_delivered_total,
//   _failed_total, _filtered_total, _duplicates_total, _rejected_total,
//   _fell_back_total, _timed_out_total, _late_total, _retried_total,
//   _dead_lettered_total, _throttled_total;
// - fnbus_function_dead_letters_total{event, function, reason}: a
//   function's dead letters by reason, only the reasons it has had;
// - circuit breakers per function, only for functions with
//   FunctionMetrics::has_breaker_metrics(): the gauge
//   fnbus_function_breaker_state{event, function} (the most open state
//   of its live breakers, FunctionMetrics::breaker_state(): 0 closed,
//   1 half-open, 2 open; only while it has a live breaker), the gauge
//   fnbus_function_breakers{event, function, state} (live breakers with
//   state "closed", "half_open" and "open"), and the counters
//   fnbus_function_breaker_opened_total, _half_opened_total and
//   _closed_total (transitions by the state entered);
// - histograms, only when snapshot.latency_recorded:
//   fnbus_queue_wait_seconds{event}, fnbus_end_to_end_seconds{event},
//   fnbus_handler_run_seconds{event, function}, with the `le` bounds of
//   kPrometheusBucketBoundsNanos;
// - gauges, always written, one sample each without labels (the fields of
//   Gauges): fnbus_queue_depth, fnbus_queue_capacity, fnbus_in_flight,
//   fnbus_workers, fnbus_workers_busy, fnbus_workers_idle,
//   fnbus_workers_parked, fnbus_workers_starting, fnbus_workers_retiring,
//   fnbus_workers_max;
// - the timers' gauge fnbus_timers_pending and counters
//   fnbus_timers_scheduled_total, _fired_total, _cancelled_total,
//   _dead_lettered_total, _stopped_total (TimerMetrics);
// - fnbus_dead_letters_total{reason} (DeadLetterCounts), one sample for
//   every reason (to_string(DeadLetterReason): "circuit_open", ...), 0s
//   included.
// Label values escape `\`, `"` and newline; invalid UTF-8 becomes U+FFFD.
// Passes `promtool check metrics` (tests/metrics: ctest metrics.promtool).
// Thread safety: any thread; allocates.
[[nodiscard]] std::string to_prometheus_text(const MetricsSnapshot& snapshot);

// The same content as one JSON object (one line, no trailing newline):
//   {"taken_at_ns": <bus clock, ns>, "latency_recorded": <bool>,
//    "events": [{"event", "published", "rejected", "dispatched",
//                "unhandled", "dead_lettered", "queue_wait", "end_to_end"}],
//    "functions": [{"event", "function", "delivered", "failed",
//                   "filtered", "duplicates", "rejected", "fell_back",
//                   "timed_out", "late", "retried", "dead_lettered",
//                   "throttled", "dead_letter_reasons": {<reason>: n,
//                   only those it has had}, "run_time", "breaker_state",
//                   "breakers": {"closed", "half_open", "open"},
//                   "breaker_opened", "breaker_half_opened",
//                   "breaker_closed"}],
//    "gauges": {"queue_depth", "queue_capacity", "in_flight", "workers",
//               "workers_busy", "workers_idle", "workers_parked",
//               "workers_starting", "workers_retiring", "workers_max"},
//    "timers": {"pending", "scheduled", "fired", "cancelled",
//               "dead_lettered", "stopped"},
//    "dead_letters": {<every reason>: <count>}}
// Latencies are objects {"count", "sum_ns", "max_ns", "p50_ns", "p90_ns",
// "p99_ns", "p999_ns"} (quantiles as HistogramSnapshot::quantile_nanos(),
// 0 when empty), present only when latency_recorded. "breaker_state" is
// "closed", "half_open" or "open" (FunctionMetrics::breaker_state()), or
// null without a live breaker; the breaker keys are always present. Strings
// escape `"`,
// `\` and control characters (as \u00XX); invalid UTF-8 becomes U+FFFD.
// Thread safety: any thread; allocates.
[[nodiscard]] std::string to_json(const MetricsSnapshot& snapshot);

}  // namespace fnbus::metrics
