#include "fnbus/scaling/policies.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/chrono.h"
#include "fmt/format.h"

namespace fnbus::scaling {
namespace {

// The governor accepts at most this many workers (GovernorOptions).
constexpr std::size_t kMaxWorkers = 1024;
// Gradient2's long-RTT EWMA is a plain mean over its first samples.
constexpr std::size_t kLongWarmupSamples = 10;

// ceil() that forgives rounding error: 2.1 / 0.7 is 3.0000000000000004 in
// doubles and must give 3 workers, not 4. [reasoning]
// Never -0 for x = 0.
double ceil_tolerant(double x) {
  return std::max(0.0, std::ceil(x - 1e-9 * std::max(1.0, std::abs(x))));
}

double demand_of(const LoadSnapshot& load) {
  return static_cast<double>(load.in_flight) +
         static_cast<double>(load.queue_depth);
}

// R for ratios: the current size, at least 1.
double current_size(const LoadSnapshot& load) {
  return static_cast<double>(std::max<std::size_t>(1, load.workers()));
}

bool usable_rate(double rate) { return std::isfinite(rate) && rate >= 0; }

absl::Status invalid(std::string_view options,
                     const std::vector<std::string>& problems) {
  return absl::InvalidArgumentError(
      fmt::format("invalid {}: {}", options, absl::StrJoin(problems, "; ")));
}

// A finite, positive fraction at most 1 (rejects NaN).
bool is_share(double x) { return x > 0 && x <= 1; }

std::vector<std::string> problems_of(const UtilizationRatioOptions& options) {
  std::vector<std::string> problems;
  if (!is_share(options.target_utilisation)) {
    problems.push_back(fmt::format(
        "target_utilisation is {}; use more than 0 and at most 1 (e.g. 0.7)",
        options.target_utilisation));
  }
  if (!(options.tolerance >= 0 && options.tolerance < 1)) {
    problems.push_back(fmt::format(
        "tolerance is {}; use at least 0 and less than 1 (e.g. 0.1)",
        options.tolerance));
  }
  return problems;
}

std::vector<std::string> problems_of(const TargetConcurrencyOptions& options) {
  std::vector<std::string> problems;
  if (!(options.target > 0) || !std::isfinite(options.target)) {
    problems.push_back(fmt::format(
        "target is {}; use a finite concurrency per worker above 0 (e.g. 1)",
        options.target));
  }
  if (!is_share(options.target_utilisation)) {
    problems.push_back(fmt::format(
        "target_utilisation is {}; use more than 0 and at most 1 (e.g. 0.7)",
        options.target_utilisation));
  }
  if (!(options.panic_threshold > 1) ||
      !std::isfinite(options.panic_threshold)) {
    problems.push_back(fmt::format(
        "panic_threshold is {}; use a finite ratio above 1 (e.g. 2)",
        options.panic_threshold));
  }
  if (options.stable_window <= Duration::zero()) {
    problems.push_back(
        fmt::format("stable_window is {}; use more than 0 (e.g. 60s)",
                    options.stable_window));
  }
  return problems;
}

std::vector<std::string> problems_of(const AdaptiveCapOptions& options) {
  std::vector<std::string> problems;
  if (options.algorithm != AdaptiveCapAlgorithm::kGradient2 &&
      options.algorithm != AdaptiveCapAlgorithm::kAimd) {
    problems.push_back(fmt::format("algorithm is {}; use kGradient2 or kAimd",
                                   static_cast<int>(options.algorithm)));
  }
  if (!(options.tolerance >= 1) || !std::isfinite(options.tolerance)) {
    problems.push_back(fmt::format(
        "tolerance is {}; use a finite ratio of at least 1 (e.g. 1.5)",
        options.tolerance));
  }
  if (options.long_window < 1) {
    problems.push_back(
        fmt::format("long_window is {}; use at least 1 tick (e.g. 600)",
                    options.long_window));
  }
  if (!(options.queue_size_allowance >= 0) ||
      !std::isfinite(options.queue_size_allowance)) {
    problems.push_back(fmt::format(
        "queue_size_allowance is {}; use a finite number of at least 0 "
        "(e.g. 4)",
        options.queue_size_allowance));
  }
  if (!is_share(options.smoothing)) {
    problems.push_back(
        fmt::format("smoothing is {}; use more than 0 and at most 1 (e.g. 0.2)",
                    options.smoothing));
  }
  if (!(options.backoff_ratio >= 0.5 && options.backoff_ratio < 1)) {
    problems.push_back(fmt::format(
        "backoff_ratio is {}; use at least 0.5 and less than 1 (e.g. 0.9)",
        options.backoff_ratio));
  }
  return problems;
}

}  // namespace

// ---------------------------------------------------------------- Fixed

absl::StatusOr<std::unique_ptr<Fixed>> Fixed::Create(std::size_t workers) {
  if (workers < 1 || workers > kMaxWorkers) {
    return invalid("Fixed", {fmt::format("workers is {}; use 1 to {}", workers,
                                         kMaxWorkers)});
  }
  return std::unique_ptr<Fixed>(new Fixed(workers));
}

ScalingDecision Fixed::decide(const LoadSnapshot& /*load*/) {
  return {static_cast<double>(workers_), "fixed"};
}

// ------------------------------------------------------ UtilizationRatio

absl::StatusOr<std::unique_ptr<UtilizationRatio>> UtilizationRatio::Create(
    UtilizationRatioOptions options) {
  if (auto problems = problems_of(options); !problems.empty()) {
    return invalid("UtilizationRatioOptions", problems);
  }
  return std::unique_ptr<UtilizationRatio>(new UtilizationRatio(options));
}

ScalingDecision UtilizationRatio::decide(const LoadSnapshot& load) {
  const double size = current_size(load);
  const double demand = demand_of(load);
  const double metric = demand / size;  // m: occupancy per worker
  const double ratio = metric / options_.target_utilisation;
  if (std::abs(1.0 - ratio) <= options_.tolerance) {
    return {size, "utilization-hold"};
  }
  // ceil(R * m / u*), with R * m computed exactly as the demand.
  return {ceil_tolerant(demand / options_.target_utilisation),
          "utilization-ratio"};
}

// ----------------------------------------------------- TargetConcurrency

absl::StatusOr<std::unique_ptr<TargetConcurrency>> TargetConcurrency::Create(
    TargetConcurrencyOptions options) {
  if (auto problems = problems_of(options); !problems.empty()) {
    return invalid("TargetConcurrencyOptions", problems);
  }
  return std::unique_ptr<TargetConcurrency>(new TargetConcurrency(options));
}

bool TargetConcurrency::update_panic(TimePoint now, bool over_threshold) {
  if (over_threshold) {
    last_over_threshold_ = now;  // enter, or extend the panic
  } else if (last_over_threshold_ &&
             now - *last_over_threshold_ > options_.stable_window) {
    last_over_threshold_.reset();  // the burst has reached the stable rate
  }
  in_panic_ = last_over_threshold_.has_value();
  return in_panic_;
}

ScalingDecision TargetConcurrency::decide(const LoadSnapshot& load) {
  const double service = load.service_time_mean;
  const double size = current_size(load);
  if (!(service > 0) || !std::isfinite(service) ||
      !usable_rate(load.arrival_rate_slow) ||
      !usable_rate(load.arrival_rate_fast)) {
    // Nothing to go by: keep the size; a panic still ends on time.
    return {static_cast<double>(load.workers()), "no-service-estimate",
            update_panic(load.now, /*over_threshold=*/false)};
  }
  const double per_worker = options_.target * options_.target_utilisation;
  const double stable =
      ceil_tolerant(load.arrival_rate_slow * service / per_worker);
  const double panic =
      ceil_tolerant(load.arrival_rate_fast * service / per_worker);
  const bool over = panic / size >= options_.panic_threshold;
  if (!update_panic(load.now, over)) return {stable, "kpa-stable"};
  // Provision for the larger window, and never shrink while panicking.
  const double target =
      std::max({stable, panic, static_cast<double>(load.workers())});
  return {target, "kpa-panic", /*panic=*/true};
}

// ----------------------------------------------------------- AdaptiveCap

absl::StatusOr<std::unique_ptr<AdaptiveCap>> AdaptiveCap::Create(
    AdaptiveCapOptions options) {
  if (auto problems = problems_of(options); !problems.empty()) {
    return invalid("AdaptiveCapOptions", problems);
  }
  return std::unique_ptr<AdaptiveCap>(new AdaptiveCap(options));
}

double AdaptiveCap::add_long_sample(double service) {
  if (long_samples_ < kLongWarmupSamples) {
    ++long_samples_;
    long_ += (service - long_) / static_cast<double>(long_samples_);
  } else {
    const double weight =
        2.0 / (static_cast<double>(options_.long_window) + 1.0);
    long_ = (1 - weight) * long_ + weight * service;
  }
  return long_;
}

void AdaptiveCap::update_gradient2(double service, double in_flight) {
  const double long_rtt = add_long_sample(service);
  // Service time back to normal after a long slowdown: let the long
  // average catch up faster than its EWMA would.
  if (long_rtt / service > 2) long_ *= 0.95;
  if (in_flight < limit_ / 2) return;  // app-limited: no evidence
  const double gradient =
      std::clamp(options_.tolerance * long_rtt / service, 0.5, 1.0);
  const double next = limit_ * gradient + options_.queue_size_allowance;
  limit_ = (1 - options_.smoothing) * limit_ + options_.smoothing * next;
}

void AdaptiveCap::update_aimd(double service, double in_flight) {
  const double long_rtt = add_long_sample(service);
  if (service > options_.tolerance * long_rtt) {
    limit_ = std::floor(limit_ * options_.backoff_ratio);
  } else if (in_flight * 2 >= limit_) {
    limit_ += 1;
  }
}

ScalingDecision AdaptiveCap::decide(const LoadSnapshot& load) {
  const double low =
      static_cast<double>(std::max<std::size_t>(1, load.min_workers));
  const double high = std::max(low, static_cast<double>(load.max_workers));
  if (!started_) {
    started_ = true;
    limit_ = std::clamp(static_cast<double>(load.workers()), low, high);
  }
  const double service = load.service_time_mean;
  if (service > 0 && std::isfinite(service)) {
    const auto in_flight = static_cast<double>(load.in_flight);
    if (options_.algorithm == AdaptiveCapAlgorithm::kAimd) {
      update_aimd(service, in_flight);
    } else {
      update_gradient2(service, in_flight);
    }
  }
  limit_ = std::clamp(limit_, low, high);
  const double cap = std::floor(limit_);
  const double demand = demand_of(load);
  if (demand >= cap) return {cap, "adaptive-cap-limit"};
  return {std::max(low, demand), "adaptive-cap-demand"};
}

}  // namespace fnbus::scaling
