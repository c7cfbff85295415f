#pragma once

// Resource allocation R = f(T): what a scaling policy sees (LoadSnapshot),
// what it answers (ScalingDecision), the interface policies implement, and
// the governor that every decision passes through before the pool is
// resized.
//
// A policy is a pure function of the snapshot plus its own state: no
// threads, locks or clocks (time comes in the snapshot), so that the same
// policy object runs in the live controller and, deterministically, in the
// policy lab.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"

namespace fnbus::scaling {

// The load at one controller tick. Rates are events per second, times are
// seconds (the queueing formulas work in those units).
struct LoadSnapshot {
  TimePoint now{};  // the bus clock at this tick
  Duration tick{};  // since the previous tick

  // Arrivals (accepted publishes): exponentially weighted moving averages
  // with a short (panic) and a long (stable) time constant.
  double arrival_rate_fast = 0;
  double arrival_rate_slow = 0;
  // Arrivals during the last tick alone, unsmoothed (0 on the first).
  double arrival_rate_last = 0;
  // Completions (dispatched events), EWMA.
  double completion_rate = 0;

  std::uint64_t queue_depth = 0;  // events waiting now
  std::uint64_t in_flight = 0;    // events being handled now

  // Service time of one event (all its handlers), EWMA of the mean, its
  // squared coefficient of variation (1 for exponential), and the p99 over
  // the last tick.
  double service_time_mean = 0;
  double service_time_scv = 1;
  double service_time_p99 = 0;
  double wait_p99 = 0;     // queue wait over the last tick
  double oldest_wait = 0;  // how long the oldest queued event has waited

  // Fraction of the running workers' time spent handling events during the
  // last tick, in [0, 1].
  double busy_fraction = 0;
  std::size_t workers_running = 0;
  std::size_t workers_starting = 0;  // asked for, not yet taking events

  // The governor's bounds, so that a policy can reason about them.
  std::size_t min_workers = 1;
  std::size_t max_workers = 1;

  // Workers that count as capacity: running plus starting.
  [[nodiscard]] std::size_t workers() const noexcept {
    return workers_running + workers_starting;
  }
};

// What a policy wants: a worker count (fractional and out-of-range values
// are allowed; the governor rounds up and clamps) and why, for logs and
// metrics. `reason` must point to static storage (a string literal).
struct ScalingDecision {
  double target = 0;
  std::string_view reason;
  // Asks the governor to lift its scale-up rate limit for this tick (a
  // burst the policy has recognised, e.g. a KPA-style panic).
  bool panic = false;
  // How much of `target` the governor's down-stabilisation window may
  // hold: workers asked for only until a backlog has cleared, or by a
  // policy that stabilises itself, should go as soon as the policy stops
  // asking for them, not a whole window later. NaN (the default): all of
  // `target`; values above it count as `target`, values <= 0 as none.
  double hold = std::numeric_limits<double>::quiet_NaN();
};

// A resource-allocation policy R = f(T). Called once per tick by one
// thread at a time; may keep state between calls. May throw: the
// controller then keeps the current size and reports the error.
class ScalingPolicy {
 public:
  virtual ~ScalingPolicy() = default;
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  [[nodiscard]] virtual ScalingDecision decide(const LoadSnapshot& load) = 0;
};

// A policy made of a callable, e.g. a lambda:
//   auto policy = fnbus::scaling::make_policy(
//       "little", [](const LoadSnapshot& load) -> ScalingDecision {
//         return {load.arrival_rate_slow * load.service_time_mean, "little"};
//       });
[[nodiscard]] std::unique_ptr<ScalingPolicy> make_policy(
    std::string name,
    absl::AnyInvocable<ScalingDecision(const LoadSnapshot&)> decide);

// Limits that apply to every policy's decisions.
struct GovernorOptions {
  std::size_t min_workers = 1;  // >= 1
  std::size_t max_workers = 8;  // >= min_workers, <= 1024
  // Growth per tick: to at most max(R * up_factor, R + up_step), unless the
  // decision asks for panic. Both saturate at max_workers, so a huge value
  // (a factor of 1e300, a step of SIZE_MAX) means "no limit".
  double max_up_factor = 2.0;  // finite, >= 1
  std::size_t max_up_step = 4;
  // Shrinking per tick: by at most this fraction of R (at least one worker).
  double max_down_fraction = 0.5;  // in (0, 1]
  // Never shrink below the highest recommendation of this window (HPA's
  // down-stabilisation), so that one quiet tick does not undo a burst.
  // A recommendation counts with its ScalingDecision::hold part.
  Duration down_stabilisation = std::chrono::seconds(30);  // >= 0
};

// The governor's verdict on one decision.
struct GovernedDecision {
  std::size_t workers = 0;    // the size to resize to
  std::string_view reason;    // the policy's, or the governor's when it
                              // overrode it ("invalid-target")
  bool invalid = false;       // NaN or negative target: size kept
  bool clamped = false;       // target outside [min, max]
  bool rate_limited = false;  // growth or shrink capped
  bool stabilised = false;    // shrink held by the stabilisation window
};

// Applies GovernorOptions to decisions: rounds up, clamps to [min, max],
// rate-limits, and holds scale-down to the window's highest recommendation
// (the part each decision lets it hold). Deterministic: time comes from the
// snapshots. Not thread-safe (one controller owns it).
class Governor {
 public:
  // InvalidArgument naming every bad option.
  static absl::StatusOr<Governor> Create(GovernorOptions options);

  // The size to use after `decision`, given the current load (whose
  // workers() is the current size R).
  GovernedDecision apply(const ScalingDecision& decision,
                         const LoadSnapshot& load);

  [[nodiscard]] const GovernorOptions& options() const noexcept {
    return options_;
  }
  // Decisions that were NaN/negative, and that fell outside [min, max].
  [[nodiscard]] std::uint64_t invalid_count() const noexcept {
    return invalid_;
  }
  [[nodiscard]] std::uint64_t clamped_count() const noexcept {
    return clamped_;
  }

 private:
  explicit Governor(GovernorOptions options) : options_(options) {}
  // The highest recommendation in the stabilisation window ending `now`,
  // after recording `recommendation`.
  std::size_t window_max(TimePoint now, std::size_t recommendation);

  GovernorOptions options_;
  std::deque<std::pair<TimePoint, std::size_t>> recent_;  // (time, size)
  std::uint64_t invalid_ = 0;
  std::uint64_t clamped_ = 0;
};

}  // namespace fnbus::scaling
