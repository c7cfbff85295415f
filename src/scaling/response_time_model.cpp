#include "fnbus/scaling/response_time_model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"

namespace fnbus::scaling {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();

bool finite_at_least(double value, double minimum) {
  return std::isfinite(value) && value >= minimum;
}

}  // namespace

absl::StatusOr<ResponseTimeModel> ResponseTimeModel::Create(
    QueueParams params) {
  std::vector<std::string> problems;
  if (!finite_at_least(params.arrival_rate, 0)) {
    problems.push_back(fmt::format("arrival_rate is {}; use a finite rate >= 0",
                                   params.arrival_rate));
  }
  if (!finite_at_least(params.service_rate, 0) || params.service_rate == 0) {
    problems.push_back(fmt::format(
        "service_rate is {}; use a finite rate > 0 (1 / mean service time)",
        params.service_rate));
  }
  if (!finite_at_least(params.service_scv, 0)) {
    problems.push_back(fmt::format(
        "service_scv is {}; use a finite number >= 0 (1: exponential)",
        params.service_scv));
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError("invalid QueueParams: " +
                                      absl::StrJoin(problems, "; "));
  }
  return ResponseTimeModel(params);
}

double ResponseTimeModel::utilisation(std::size_t c) const noexcept {
  const double a = offered_load();
  if (c == 0) return a > 0 ? kInfinity : 0;
  return a / static_cast<double>(c);
}

bool ResponseTimeModel::stable(std::size_t c) const noexcept {
  return c > 0 && utilisation(c) < 1.0;
}

double ResponseTimeModel::erlang_b(std::size_t c) const noexcept {
  // The recursion keeps every term in [0, 1]: no factorials, no overflow.
  const double a = offered_load();
  double b = 1.0;
  for (std::size_t k = 1; k <= c; ++k) {
    b = a * b / (static_cast<double>(k) + a * b);
  }
  return b;
}

double ResponseTimeModel::erlang_c(std::size_t c) const noexcept {
  if (!stable(c)) return 1.0;
  const double a = offered_load();
  const double b = erlang_b(c);
  const double cd = static_cast<double>(c);
  return std::clamp(cd * b / (cd - a * (1.0 - b)), 0.0, 1.0);
}

double ResponseTimeModel::mean_wait(std::size_t c) const noexcept {
  if (!stable(c)) return kInfinity;
  const double drain =
      static_cast<double>(c) * params_.service_rate - params_.arrival_rate;
  return erlang_c(c) / drain * whitt_factor();
}

double ResponseTimeModel::mean_response(std::size_t c) const noexcept {
  return 1.0 / params_.service_rate + mean_wait(c);
}

double ResponseTimeModel::wait_probability_above(std::size_t c,
                                                 double t) const noexcept {
  if (!stable(c)) return 1.0;
  const double drain =
      static_cast<double>(c) * params_.service_rate - params_.arrival_rate;
  const double at = std::isnan(t) ? 0.0 : std::max(0.0, t);
  return erlang_c(c) * std::exp(-drain * at / whitt_factor());
}

double ResponseTimeModel::wait_quantile(std::size_t c,
                                        double p) const noexcept {
  if (!stable(c)) return kInfinity;
  const double q = std::isnan(p) ? 0.5 : std::clamp(p, 1e-12, 1.0 - 1e-12);
  const double drain =
      static_cast<double>(c) * params_.service_rate - params_.arrival_rate;
  const double waiting = erlang_c(c);
  if (waiting <= 1.0 - q) return 0.0;
  return std::log(waiting / (1.0 - q)) / drain * whitt_factor();
}

absl::StatusOr<Staffing> ResponseTimeModel::smallest_workers_for_wait_slo(
    double slo, double epsilon, std::size_t max_workers) const {
  if (!(std::isfinite(slo) && slo > 0) || !(epsilon > 0 && epsilon < 1) ||
      max_workers < 1) {
    return absl::InvalidArgumentError(fmt::format(
        "smallest_workers_for_wait_slo(slo = {}, epsilon = {}, max_workers "
        "= {}): use slo > 0 seconds, 0 < epsilon < 1 and max_workers >= 1",
        slo, epsilon, max_workers));
  }
  // P(wait > slo) falls as c grows (more servers, faster drain), so the
  // first c that meets it is the smallest. Start where the queue is stable.
  const auto first = static_cast<std::size_t>(std::floor(offered_load())) + 1;
  for (std::size_t c = std::max<std::size_t>(1, first); c <= max_workers; ++c) {
    if (wait_probability_above(c, slo) <= epsilon) return Staffing{c, true};
  }
  return Staffing{max_workers, false};
}

}  // namespace fnbus::scaling
