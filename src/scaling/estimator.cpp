#include "fnbus/scaling/estimator.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/chrono.h"
#include "fmt/format.h"

namespace fnbus::scaling {
namespace {

using metrics::HistogramLayout;
using metrics::HistogramSnapshot;

constexpr double kNanosPerSecond = 1e9;

double seconds(Duration d) noexcept {
  return std::chrono::duration<double>(d).count();
}

// The samples `current` has that `previous` had not (bucket midpoints;
// counts per bucket exact). Histograms only grow, so each difference is >= 0
// unless the snapshots come from different buses; those buckets are skipped.
HistogramSnapshot difference(const HistogramSnapshot& current,
                             const HistogramSnapshot& previous) {
  HistogramSnapshot out;
  const auto& now = current.buckets();
  const auto& before = previous.buckets();
  for (std::size_t i = 0; i < now.size(); ++i) {
    const std::uint64_t had = i < before.size() ? before[i] : 0;
    if (now[i] <= had) continue;
    const std::uint64_t mid =
        HistogramLayout::lower_bound(i) +
        (HistogramLayout::upper_bound(i) - HistogramLayout::lower_bound(i)) / 2;
    out.add(mid, now[i] - had);
  }
  return out;
}

// Mean and squared coefficient of variation of a histogram, in seconds,
// from its bucket midpoints.
struct Moments {
  double mean = 0;
  double scv = 1;
};
Moments moments(const HistogramSnapshot& h) {
  if (h.empty()) return {};
  double sum = 0;
  double sum_sq = 0;
  double n = 0;
  const auto& buckets = h.buckets();
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    if (buckets[i] == 0) continue;
    const double mid = (static_cast<double>(HistogramLayout::lower_bound(i)) +
                        static_cast<double>(HistogramLayout::upper_bound(i))) /
                       2 / kNanosPerSecond;
    const double count = static_cast<double>(buckets[i]);
    sum += mid * count;
    sum_sq += mid * mid * count;
    n += count;
  }
  const double mean = sum / n;
  const double variance = std::max(0.0, sum_sq / n - mean * mean);
  return {mean, mean > 0 ? variance / (mean * mean) : 1.0};
}

std::vector<std::string> option_problems(const EstimatorOptions& options) {
  std::vector<std::string> problems;
  if (options.fast_window <= Duration::zero()) {
    problems.push_back(
        fmt::format("fast_window is {}; use more than 0", options.fast_window));
  }
  if (options.slow_window <= Duration::zero()) {
    problems.push_back(
        fmt::format("slow_window is {}; use more than 0", options.slow_window));
  }
  if (options.min_workers < 1 || options.max_workers < options.min_workers) {
    problems.push_back(fmt::format(
        "workers bounds are [{}, {}]; use 1 <= min_workers <= max_workers",
        options.min_workers, options.max_workers));
  }
  return problems;
}

// Moves `average` towards `value` by the share a tick of `dt` seconds has
// in a window of `tau` seconds -- or, while the average is younger than
// its window (`age` seconds of ticks so far, this one included), by
// dt / age: the plain mean of every tick so far. So one tick at the start
// of a bus's life weighs what its length is worth, not a whole window's.
double ewma(double average, double value, double dt, double tau,
            double age) noexcept {
  const double alpha = std::max(1.0 - std::exp(-dt / tau), dt / age);
  return average + std::min(1.0, alpha) * (value - average);
}

// A tick's mean service time as the average takes it: at most
// kServiceStep times the current estimate. A machine stall stretches the
// events in flight by the stall's length, and in a tick of short events a
// few such events can multiply the tick's mean; a lasting change of
// service time still moves the average by 1 - e^{-dt/tau} of the way
// towards kServiceStep times it every tick: a tenfold slowdown reaches
// 90 % of the new time in about 3.4 windows instead of 2.2 (at ticks of a
// tenth of the window).
constexpr double kServiceStep = 2.0;
double robust_service(double tick_mean, double estimate) noexcept {
  return std::min(tick_mean, kServiceStep * estimate);
}

// How long the oldest of `queued` events has waited, estimated from the
// tick's `arrivals` over `tick` seconds (the queue itself is lock-free and
// not read here): a FIFO queue holds the latest arrivals, so with arrivals
// spread evenly the oldest came queued / arrivals of a tick ago. More
// queued than arrived means it came before the tick: the same rate is
// assumed for earlier ticks (with no arrival at all, one tick per queued
// event, a deliberately alarming figure for a queue that does not move).
double estimated_oldest_wait(std::uint64_t queued, std::uint64_t arrivals,
                             double tick) noexcept {
  if (queued == 0 || !(tick > 0)) return 0;
  const double per_arrival =
      tick / static_cast<double>(std::max<std::uint64_t>(arrivals, 1));
  return per_arrival * static_cast<double>(queued);
}

}  // namespace

TickObservation observe(const metrics::MetricsSnapshot& previous,
                        const metrics::MetricsSnapshot& current) {
  const metrics::EventTypeMetrics now = current.total_events();
  const metrics::EventTypeMetrics before = previous.total_events();
  TickObservation out;
  out.now = current.taken_at;
  out.arrivals_total = now.published;
  out.completions_total = now.dispatched + now.dead_lettered;
  out.queue_depth = current.gauges.queue_depth;
  out.in_flight = current.gauges.in_flight;
  // The pool's size counts threads still starting; the policy sees both.
  out.workers_starting =
      std::min(current.gauges.workers_starting, current.gauges.workers);
  out.workers_running = current.gauges.workers - out.workers_starting;
  if (current.gauges.workers > 0) {
    out.busy_fraction = static_cast<double>(current.gauges.workers_busy) /
                        static_cast<double>(current.gauges.workers);
  }

  const std::uint64_t e2e_count =
      now.end_to_end.count() -
      std::min(now.end_to_end.count(), before.end_to_end.count());
  if (e2e_count > 0) {
    // Service = end to end - queue wait, summed over the same events.
    const auto delta_sum = [](const HistogramSnapshot& a,
                              const HistogramSnapshot& b) {
      return static_cast<double>(a.sum_nanos() -
                                 std::min(a.sum_nanos(), b.sum_nanos()));
    };
    const double service_nanos =
        std::max(0.0, delta_sum(now.end_to_end, before.end_to_end) -
                          delta_sum(now.queue_wait, before.queue_wait));
    out.service_samples = e2e_count;
    out.service_time_mean =
        service_nanos / static_cast<double>(e2e_count) / kNanosPerSecond;
    const HistogramSnapshot run_time =
        difference(current.total_functions().run_time,
                   previous.total_functions().run_time);
    out.service_time_scv = moments(run_time).scv;
    out.service_time_p99 = run_time.quantile_nanos(0.99) / kNanosPerSecond;
  }
  const HistogramSnapshot waits = difference(now.queue_wait, before.queue_wait);
  out.wait_p99 = waits.quantile_nanos(0.99) / kNanosPerSecond;
  out.oldest_wait = estimated_oldest_wait(
      out.queue_depth,
      now.published - std::min(now.published, before.published),
      std::chrono::duration<double>(current.taken_at - previous.taken_at)
          .count());
  return out;
}

absl::StatusOr<LoadEstimator> LoadEstimator::Create(EstimatorOptions options) {
  if (auto problems = option_problems(options); !problems.empty()) {
    return absl::InvalidArgumentError("invalid EstimatorOptions: " +
                                      absl::StrJoin(problems, "; "));
  }
  return LoadEstimator(options);
}

LoadSnapshot LoadEstimator::update(const TickObservation& observation) {
  LoadSnapshot load;
  load.now = observation.now;
  load.min_workers = options_.min_workers;
  load.max_workers = options_.max_workers;
  load.queue_depth = observation.queue_depth;
  load.in_flight = observation.in_flight;
  load.service_time_p99 = observation.service_time_p99;
  load.wait_p99 = observation.wait_p99;
  load.oldest_wait = observation.oldest_wait;
  load.busy_fraction = std::clamp(observation.busy_fraction, 0.0, 1.0);
  load.workers_running = observation.workers_running;
  load.workers_starting = observation.workers_starting;

  if (started_ && observation.now > last_now_) {
    load.tick = observation.now - last_now_;
    const double dt = seconds(load.tick);
    // Counters only grow; a smaller one (another bus?) counts as 0.
    const auto delta = [](std::uint64_t now, std::uint64_t before) {
      return static_cast<double>(now - std::min(now, before));
    };
    const double arrivals =
        delta(observation.arrivals_total, last_arrivals_) / dt;
    load.arrival_rate_last = arrivals;
    const double completions =
        delta(observation.completions_total, last_completions_) / dt;
    rates_age_ += dt;
    if (!have_rates_) {
      // The first measured tick starts every average (rather than moving
      // it up from 0 over a whole window).
      arrival_fast_ = arrival_slow_ = arrivals;
      completion_ = completions;
      have_rates_ = true;
    } else {
      const double fast = seconds(options_.fast_window);
      arrival_fast_ = ewma(arrival_fast_, arrivals, dt, fast, rates_age_);
      arrival_slow_ = ewma(arrival_slow_, arrivals, dt,
                           seconds(options_.slow_window), rates_age_);
      completion_ = ewma(completion_, completions, dt, fast, rates_age_);
    }
    update_service(observation, dt);
  }
  if (!started_ || observation.now > last_now_) {
    started_ = true;
    last_now_ = observation.now;
    last_arrivals_ = observation.arrivals_total;
    last_completions_ = observation.completions_total;
  }
  load.arrival_rate_fast = arrival_fast_;
  load.arrival_rate_slow = arrival_slow_;
  load.completion_rate = completion_;
  load.service_time_mean = service_mean_;
  load.service_time_scv = service_scv_;
  return load;
}

void LoadEstimator::update_service(const TickObservation& observation,
                                   double dt) {
  if (observation.service_samples == 0) return;
  if (!have_service_) {
    service_mean_ = observation.service_time_mean;
    service_scv_ = observation.service_time_scv;
    have_service_ = true;
    return;
  }
  // The service time's averages need no warm-up (an infinite age): they
  // start at the first sample, which is a tick's events, not a rate.
  const double tau = seconds(options_.fast_window);
  constexpr double kNoWarmUp = std::numeric_limits<double>::infinity();
  service_mean_ =
      ewma(service_mean_,
           robust_service(observation.service_time_mean, service_mean_), dt,
           tau, kNoWarmUp);
  service_scv_ =
      ewma(service_scv_, observation.service_time_scv, dt, tau, kNoWarmUp);
}

}  // namespace fnbus::scaling
