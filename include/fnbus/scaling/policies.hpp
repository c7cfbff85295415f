#pragma once

// Built-in scaling policies that need no queueing model, each R = f(T) as
// an existing autoscaler computes it (sources: docs/scaling.md, "Where the
// policies come from"):
//
// Fixed -- R = n.
//
// UtilizationRatio (Kubernetes HPA) -- m = (in_flight + queue_depth) / R,
//   R = max(1, workers()); R' = ceil(R * m / u*), held at R while
//   |1 - m / u*| <= tolerance.
//
// TargetConcurrency (Knative KPA, pkg/autoscaler/scaling/autoscaler.go) --
//   concurrency by Little's law, L = lambda * S; R' = ceil(L / (t * u*)) on
//   the slow (stable) arrival rate, raised to the fast (panic) rate's while
//   in panic; no scale-down while in panic.
//
// AdaptiveCap (Netflix concurrency-limits, Gradient2 or AIMD) -- a limit
//   that grows while the service time holds and backs off when it inflates
//   (contention); R' = max(min_workers, min(floor(limit), in_flight +
//   queue_depth)).
//
// Every policy is a pure function of its snapshots and its own state: no
// threads, locks or clocks (time comes from LoadSnapshot::now), so two fresh
// instances fed the same snapshots make the same decisions. Targets are
// whole numbers (ceil() forgives rounding error of 1e-9 relative, so that
// 2.1 / 0.7 gives 3, not 4); the Governor (scaling/policy.hpp) clamps and
// rate-limits them. Each class is not thread-safe: one controller calls
// decide() at a time, as ScalingPolicy requires.

#include <cstddef>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/scaling/policy.hpp"

namespace fnbus::scaling {

// R = n, whatever the load: a statically sized pool behind the same
// controller (the baseline the adaptive policies are scored against).
class Fixed final : public ScalingPolicy {
 public:
  // InvalidArgument unless 1 <= workers <= 1024 (the governor's ceiling).
  // Thread safety: none needed (a static factory).
  static absl::StatusOr<std::unique_ptr<Fixed>> Create(std::size_t workers);

  [[nodiscard]] std::string_view name() const noexcept override {
    return "fixed";
  }
  // {n, "fixed"}. Thread safety: const in effect; safe to call from any
  // thread.
  [[nodiscard]] ScalingDecision decide(const LoadSnapshot& load) override;

  [[nodiscard]] std::size_t workers() const noexcept { return workers_; }

 private:
  explicit Fixed(std::size_t workers) : workers_(workers) {}
  std::size_t workers_;
};

struct UtilizationRatioOptions {
  double target_utilisation = 0.7;  // u*, busy share per worker, in (0, 1]
  double tolerance = 0.1;           // hold band around u*, in [0, 1)
};

// Kubernetes HorizontalPodAutoscaler's algorithm on worker occupancy:
//
//   m  = (in_flight + queue_depth) / R          R = max(1, workers())
//   R' = ceil(R * m / u*)  = ceil((in_flight + queue_depth) / u*)
//   R' = R                 when |1 - m / u*| <= tolerance
//
// (HPA: desiredReplicas = ceil(currentReplicas * currentMetric /
// desiredMetric), no change within the 0.1 tolerance.) Queued events count
// as demand, so a saturated pool (m >= 1) keeps growing while a queue
// stands. HPA's 300 s scale-down stabilisation and its scale-up rate limit
// are the Governor's job. Stateless. An idle pool recommends 0 (the
// governor raises it to min_workers).
class UtilizationRatio final : public ScalingPolicy {
 public:
  // InvalidArgument naming each bad option (NaN included).
  static absl::StatusOr<std::unique_ptr<UtilizationRatio>> Create(
      UtilizationRatioOptions options = {});

  [[nodiscard]] std::string_view name() const noexcept override {
    return "utilization-ratio";
  }
  // Reason "utilization-ratio", or "utilization-hold" inside the tolerance
  // band. Never panics. Thread safety: stateless; safe from any thread.
  [[nodiscard]] ScalingDecision decide(const LoadSnapshot& load) override;

  [[nodiscard]] const UtilizationRatioOptions& options() const noexcept {
    return options_;
  }

 private:
  explicit UtilizationRatio(UtilizationRatioOptions options)
      : options_(options) {}
  UtilizationRatioOptions options_;
};

struct TargetConcurrencyOptions {
  double target = 1.0;              // t, events in service per worker, > 0
  double target_utilisation = 0.7;  // u*, in (0, 1]
  double panic_threshold = 2.0;     // panic desired / R that panics, > 1
  // Panic lasts this long after the last tick over the threshold, > 0.
  Duration stable_window = std::chrono::seconds(60);
};

// Knative's KPA (pkg/autoscaler/scaling/autoscaler.go) on worker
// concurrency. Observed concurrency is Little's law on the service time,
// L = lambda * S (the workers kept busy by the arrival rate), not the live
// in_flight + queue_depth: the queue's wait depends on R itself, and the
// estimator's two EWMAs stand in for KPA's two averaging windows:
//
//   stable desired = ceil(arrival_rate_slow * S / (t * u*))
//   panic desired  = ceil(arrival_rate_fast * S / (t * u*))
//
// With R = max(1, workers()), a tick is over the threshold when panic
// desired / R >= panic_threshold. Panic starts on such a tick and lasts
// until stable_window has passed since the last one (time from
// LoadSnapshot::now). In panic R' = max(stable, panic desired, workers())
// and the decision asks the governor to lift its scale-up limit (panic =
// true); otherwise R' = stable desired. (KPA also holds the highest panic
// recommendation; here workers() counts starting workers, so holding R
// does the same.) Until a service time has been measured it keeps the
// current size ("no-service-estimate").
class TargetConcurrency final : public ScalingPolicy {
 public:
  // InvalidArgument naming each bad option (NaN included).
  static absl::StatusOr<std::unique_ptr<TargetConcurrency>> Create(
      TargetConcurrencyOptions options = {});

  [[nodiscard]] std::string_view name() const noexcept override {
    return "target-concurrency";
  }
  // Reason "kpa-stable" or "kpa-panic" (panic = true). Updates the panic
  // state. Thread safety: not thread-safe; one caller at a time.
  [[nodiscard]] ScalingDecision decide(const LoadSnapshot& load) override;

  // Whether the last decide() was in panic. Thread safety: as decide().
  [[nodiscard]] bool in_panic() const noexcept { return in_panic_; }
  [[nodiscard]] const TargetConcurrencyOptions& options() const noexcept {
    return options_;
  }

 private:
  explicit TargetConcurrency(TargetConcurrencyOptions options)
      : options_(options) {}
  // Records whether `now` is over the threshold; true while in panic.
  bool update_panic(TimePoint now, bool over_threshold);

  TargetConcurrencyOptions options_;
  std::optional<TimePoint> last_over_threshold_;  // empty: not panicking
  bool in_panic_ = false;
};

enum class AdaptiveCapAlgorithm {
  kGradient2,  // gradient of long vs short service time, smoothed
  kAimd,       // additive increase, multiplicative decrease on inflation
};

struct AdaptiveCapOptions {
  AdaptiveCapAlgorithm algorithm = AdaptiveCapAlgorithm::kGradient2;
  // Inflation the limit tolerates: short <= tolerance * long, >= 1.
  double tolerance = 1.5;
  // The long service-time EWMA: weight 2 / (long_window + 1) per tick after
  // a plain mean over the first 10 ticks, >= 1.
  std::size_t long_window = 600;
  // Gradient2: headroom added each tick, >= 0 ...
  double queue_size_allowance = 4;
  // ... and the weight of the new limit, in (0, 1].
  double smoothing = 0.2;
  // AIMD: the factor applied on inflation, in [0.5, 1).
  double backoff_ratio = 0.9;
};

// Netflix concurrency-limits' Gradient2Limit and AIMDLimit, one sample per
// tick with S = service_time_mean: the long service time ("long RTT") is an
// EWMA of S, the short one is S itself.
//
//   Gradient2: g = clamp(tolerance * long / short, 0.5, 1)
//              new = limit * g + queue_size_allowance
//              limit = (1 - smoothing) * limit + smoothing * new
//     skipped while in_flight < limit / 2 (app-limited: no evidence);
//     when long / short > 2 the long EWMA is cut by 5 % so that it recovers
//     from a long slowdown.
//   AIMD:      limit = floor(backoff_ratio * limit)
//                        if short > tolerance * long (inflation),
//              limit = limit + 1
//                        else if in_flight * 2 >= limit.
//
// The limit starts at the first snapshot's workers() and stays within
// [min_workers, max_workers] of the snapshot. The decision
//
//   R' = max(min_workers, min(floor(limit), in_flight + queue_depth))
//
// follows demand below the limit, so the cap does not hold idle threads.
// Without a measured service time the limit is left as it is.
class AdaptiveCap final : public ScalingPolicy {
 public:
  // InvalidArgument naming each bad option (NaN included).
  static absl::StatusOr<std::unique_ptr<AdaptiveCap>> Create(
      AdaptiveCapOptions options = {});

  [[nodiscard]] std::string_view name() const noexcept override {
    return "adaptive-cap";
  }
  // Updates the limit, then decides. Reason "adaptive-cap-limit" when the
  // limit binds, "adaptive-cap-demand" when demand (or min_workers) does.
  // Never panics. Thread safety: not thread-safe; one caller at a time.
  [[nodiscard]] ScalingDecision decide(const LoadSnapshot& load) override;

  // The current limit (0 before the first decide()) and long service time
  // in seconds (0 before the first measured one). Thread safety: as
  // decide().
  [[nodiscard]] double limit() const noexcept { return limit_; }
  [[nodiscard]] double long_service_time() const noexcept { return long_; }
  [[nodiscard]] const AdaptiveCapOptions& options() const noexcept {
    return options_;
  }

 private:
  explicit AdaptiveCap(AdaptiveCapOptions options) : options_(options) {}
  // Adds one sample to the long EWMA and returns it.
  double add_long_sample(double service);
  void update_gradient2(double service, double in_flight);
  void update_aimd(double service, double in_flight);

  AdaptiveCapOptions options_;
  bool started_ = false;
  double limit_ = 0;
  double long_ = 0;               // EWMA of service_time_mean, seconds
  std::size_t long_samples_ = 0;  // samples in long_, up to the warmup
};

}  // namespace fnbus::scaling
