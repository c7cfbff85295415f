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
//
// Two departures from an ideal machine, both off by default (so that a
// run without them is the same as before they existed), model what real
// runs showed: machine stalls (MachineStalls: every worker pauses at once
// for a while, as when the whole machine is descheduled) and service-time
// overshoot (handlers take a fixed factor longer than drawn, as sleeping
// handlers overshoot their sleeps).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/metrics/histogram.hpp"
#include "fnbus/scaling/estimator.hpp"
#include "fnbus/scaling/policy.hpp"

namespace fnbus::scaling::lab {

// A burst to score recovery from: the load is at its burst level from
// `start_ns` (for a load that rises over a while, when it gets there: no
// causal policy can staff for a peak it has not seen) until `end_ns`, and
// needs `workers` to be served, e.g. the clairvoyant oracle's staffing
// (ErlangSlo on the true arrival rate) at the burst level.
struct Burst {
  std::int64_t start_ns = 0;  // >= 0
  std::int64_t end_ns = 0;    // > start_ns
  std::size_t workers = 1;    // >= 1
};

// How fast a run recovered from one Burst, in ns after its start; empty
// when it did not recover before the burst ended.
//
// capacity_ns: until the running workers (taking events: not starting,
//   not retiring) first reach Burst::workers; 0 if they already had.
//   Measured at the event (a worker becoming ready), not at a tick.
// slo_ns: until the first run of SimulationOptions::recovery_ticks
//   consecutive ticks in which the queue wait was within the SLO -- the
//   tick's exact p99 (the ceil(0.99 n)-th smallest wait of the n events
//   taken in it) at most wait_slo; a tick that took none is within. The
//   time is when the run's first tick began (the burst's start if
//   earlier), so 0 means the SLO held from the start. Only ticks that
//   begin before end_ns count: the whole run lies inside the burst.
struct BurstRecovery {
  std::optional<std::int64_t> capacity_ns;
  std::optional<std::int64_t> slo_ns;
};

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
  // Bursts to score recovery from (SimulationResult::recoveries), in any
  // order; they may overlap.
  std::vector<Burst> bursts;
};

// Random pauses of every worker at once. During a stall no event starts,
// every event being handled finishes `length` later (and its measured
// service time grows by as much), and a thread that was starting becomes
// ready at the stall's end at the earliest; arrivals go on queueing, and
// the controller keeps ticking (it sees the stall as a queue, late events
// and, afterwards, stretched service times). Stalls start as a Poisson
// process of rate `per_second` from the run's start (the next one begins
// after the previous one ends), drawn from their own generator seeded with
// `seed`: enabling them leaves the arrivals and service times of a seeded
// run unchanged.
struct MachineStalls {
  double per_second = 0;  // >= 0 and finite; 0: no stalls
  Duration length = std::chrono::milliseconds(100);  // > 0 when enabled
  std::uint64_t seed = 1;
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
  // In-SLO ticks in a row that count as recovered from a burst (>= 1):
  // more than one, so that a lucky tick in a standing queue does not.
  std::size_t recovery_ticks = 3;
  // Machine stalls (none by default).
  MachineStalls stalls;
  // Every service time SimulationInput::service_ns draws is multiplied by
  // this (finite, >= 1; 1 by default: as drawn), e.g. 1.08 for handlers
  // that sleep and overshoot their sleeps by 8 %.
  double service_overshoot = 1.0;
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
  // One per SimulationInput::bursts, in its order.
  std::vector<BurstRecovery> recoveries;
  std::uint64_t stalls = 0;  // machine stalls that began during the run
};

// Runs `policy` against `input`. InvalidArgument for bad options or input
// (unsorted or negative arrivals, no service function, duration <= 0, a
// burst with start < 0, end <= start or workers 0, recovery_ticks 0, a
// stall rate that is negative or not finite, a stall length <= 0 with
// stalls enabled, a service_overshoot below 1 or not finite).
absl::StatusOr<SimulationResult> simulate(const SimulationInput& input,
                                          ScalingPolicy& policy,
                                          const SimulationOptions& options);

}  // namespace fnbus::scaling::lab
