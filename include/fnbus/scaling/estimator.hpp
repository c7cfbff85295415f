#pragma once

// LoadEstimator: turns what a bus measured during one controller tick into
// the LoadSnapshot a ScalingPolicy decides on -- arrival and completion
// rates smoothed by exponentially weighted moving averages (EWMA) over a
// fast and a slow time constant, and service-time mean, squared coefficient
// of variation and tail.
//
// The same estimator runs in the live controller (fed from
// EventBus::metrics()) and in the policy lab (fed by the simulator), so
// that the lab tests the production code. Deterministic: time comes from
// the observations. Not thread-safe (one controller owns it).

#include <cstdint>

#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/metrics/snapshot.hpp"
#include "fnbus/scaling/policy.hpp"

namespace fnbus::scaling {

// What happened during one tick, and the state at its end.
struct TickObservation {
  TimePoint now{};
  // Cumulative counts since the bus started (the estimator differences
  // them): accepted publishes and events taken off the queue.
  std::uint64_t arrivals_total = 0;
  std::uint64_t completions_total = 0;
  std::uint64_t queue_depth = 0;
  std::uint64_t in_flight = 0;
  // Service time (all handlers of one event) of the events completed in
  // this tick: count, mean and squared coefficient of variation (seconds);
  // count 0 if none completed.
  std::uint64_t service_samples = 0;
  double service_time_mean = 0;
  double service_time_scv = 1;
  double service_time_p99 = 0;
  double wait_p99 = 0;  // queue wait of the events taken in this tick
  // Of the oldest event still queued: exact in the lab; observe()
  // estimates it from the queue depth and the tick's arrivals.
  double oldest_wait = 0;
  double busy_fraction = 0;  // busy worker time / running worker time
  std::size_t workers_running = 0;
  std::size_t workers_starting = 0;
};

// Builds a TickObservation from two successive metrics snapshots of one
// bus (all event types together): counts and histograms are differenced,
// service time is end-to-end minus queue wait (exact for the mean; the
// spread and p99 come from the handlers' run-time histograms); the oldest
// queued event's wait is estimated as queue_depth / (the tick's arrival
// rate), i.e. assuming a FIFO queue fed evenly.
[[nodiscard]] TickObservation observe(const metrics::MetricsSnapshot& previous,
                                      const metrics::MetricsSnapshot& current);

struct EstimatorOptions {
  // EWMA time constants (tau): a tick of length dt moves an average by
  // 1 - exp(-dt / tau) of the way to the tick's value.
  Duration fast_window = std::chrono::seconds(6);   // Knative's panic window
  Duration slow_window = std::chrono::seconds(60);  // its stable window
  std::size_t min_workers = 1;  // copied into every snapshot
  std::size_t max_workers = 1;
};

class LoadEstimator {
 public:
  // InvalidArgument for windows <= 0 or min > max.
  static absl::StatusOr<LoadEstimator> Create(EstimatorOptions options);

  // Folds in one tick and returns the snapshot for the policy. The first
  // observation only sets the baseline counts (its rates are 0 and its
  // tick is 0); the second starts the averages at its rates; an
  // observation not later than the previous one is a zero-length tick
  // (averages unchanged).
  //
  // Robustness: while the estimator has seen less than a window's worth
  // of ticks, each rate average is the plain mean of the ticks so far, so
  // that a burst in a bus's first ticks is not taken for a window's load
  // (after a start-up burst and then silence the slow rate falls as
  // 1 / age, not e^{-age / window}). A tick's mean service time counts
  // for at most twice the current estimate: a machine stall that
  // stretches the events in flight is one tick's outlier, not a new
  // service time, while a lasting slowdown still comes through, a little
  // later.
  LoadSnapshot update(const TickObservation& observation);

 private:
  explicit LoadEstimator(EstimatorOptions options) : options_(options) {}
  void update_service(const TickObservation& observation, double dt);

  EstimatorOptions options_;
  bool started_ = false;
  TimePoint last_now_{};
  std::uint64_t last_arrivals_ = 0;
  std::uint64_t last_completions_ = 0;
  bool have_rates_ = false;
  double rates_age_ = 0;  // seconds of measured ticks so far
  double arrival_fast_ = 0;
  double arrival_slow_ = 0;
  double completion_ = 0;
  bool have_service_ = false;
  double service_mean_ = 0;
  double service_scv_ = 1;
};

}  // namespace fnbus::scaling
