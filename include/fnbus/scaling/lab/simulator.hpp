#pragma once

// The policy lab's simulator: a single-threaded discrete-event model of a
// bus's queue and resizable pool, with integer-nanosecond time, driving the
// production LoadEstimator, ScalingPolicy and Governor once per tick. The
// same inputs give the same result on every run and platform (no threads,
// clocks or library random distributions; ties are broken in a fixed
// order).
//
// Only the pool is simulated: a worker asked for becomes available after
// `thread_start_delay`; a worker asked to go retires when idle, or after
// the event it is handling (never abandoning one); starting workers count
// as capacity. Events are served first come, first served.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/metrics/histogram.hpp"
#include "fnbus/scaling/estimator.hpp"
#include "fnbus/scaling/policy.hpp"

namespace fnbus::scaling::lab {

// The load: when events arrive, and how long each takes.
struct SimulationInput {
  // Arrival times in ns from the start, sorted ascending.
  std::vector<std::int64_t> arrivals_ns;
  // Service time (ns, >= 1) of an event that starts being handled at
  // `start_ns`. Called once per event, in start order (so a seeded
  // generator inside stays deterministic).
  std::function<std::int64_t(std::int64_t start_ns)> service_ns;
  // How long to simulate; arrivals after it are ignored, and events still
  // queued or running at the end count as handled when they finish
  // (the run goes on without arrivals until the queue is empty).
  std::int64_t duration_ns = 0;
};

struct SimulationOptions {
  Duration tick = std::chrono::milliseconds(100);  // controller period, > 0
  Duration thread_start_delay = std::chrono::milliseconds(2);  // >= 0
  Duration wait_slo = std::chrono::milliseconds(20);  // queue wait, > 0
  GovernorOptions governor;
  // Time constants of the estimator (its worker bounds come from
  // `governor`).
  Duration fast_window = std::chrono::seconds(6);
  Duration slow_window = std::chrono::seconds(60);
  // Workers at the start: clamped to the governor's bounds.
  std::size_t initial_workers = 1;
};

// One controller tick, for plots and CSV.
struct TimelineRow {
  double time_s = 0;
  double arrival_rate = 0;    // events/s arrived during the tick
  double estimated_rate = 0;  // the estimator's slow EWMA
  std::size_t workers = 0;    // running + starting after the decision
  double policy_target = 0;   // what the policy asked for
  std::size_t queue_depth = 0;
  double wait_p99_ms = 0;  // of the events taken during the tick
};

struct SimulationResult {
  std::uint64_t events = 0;          // handled
  std::uint64_t slo_violations = 0;  // events whose wait exceeded wait_slo
  [[nodiscard]] double violation_fraction() const noexcept {
    return events == 0 ? 0.0
                       : static_cast<double>(slo_violations) /
                             static_cast<double>(events);
  }
  metrics::HistogramSnapshot wait;      // queue wait, ns
  metrics::HistogramSnapshot response;  // wait + service, ns
  double worker_seconds = 0;  // cost: integral of (running + starting) dt
  std::uint64_t scaling_actions = 0;  // ticks whose decision changed R
  double actions_per_minute = 0;
  std::uint64_t policy_errors = 0;  // decide() threw: size kept
  std::uint64_t invalid_targets = 0;
  std::uint64_t clamped_targets = 0;
  std::vector<TimelineRow> timeline;
};

// Runs `policy` against `input`. InvalidArgument for bad options or input
// (unsorted or negative arrivals, no service function, duration <= 0).
absl::StatusOr<SimulationResult> simulate(const SimulationInput& input,
                                          ScalingPolicy& policy,
                                          const SimulationOptions& options);

}  // namespace fnbus::scaling::lab
