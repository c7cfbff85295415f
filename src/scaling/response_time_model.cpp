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

// One step of the Erlang B recursion: B_k from B_{k-1}. Stays in [0, 1]
// for finite a >= 0 (a b <= a, so nothing overflows).
double next_erlang_b(double previous, std::size_t k, double a) {
  const double ab = a * previous;
  return ab / (static_cast<double>(k) + ab);
}

}  // namespace

absl::StatusOr<ResponseTimeModel> ResponseTimeModel::Create(
    QueueParams params) {
  std::vector<std::string> problems;
  if (!finite_at_least(params.arrival_rate, 0)) {
    problems.push_back(fmt::format(
        "arrival_rate is {}; use a finite rate >= 0 (events per second)",
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
  if (c == 0) return kInfinity;
  return offered_load() / static_cast<double>(c);
}

bool ResponseTimeModel::stable(std::size_t c) const noexcept {
  // a < c is false for a = +infinity; the drain can only round to 0 with
  // a denormal mu.
  return c > 0 && offered_load() < static_cast<double>(c) && drain_rate(c) > 0;
}

double ResponseTimeModel::drain_rate(std::size_t c) const noexcept {
  return params_.service_rate * (static_cast<double>(c) - offered_load());
}

double ResponseTimeModel::erlang_b(std::size_t c) const noexcept {
  const double a = offered_load();
  if (std::isinf(a)) return 1.0;  // the limit; the recursion would be inf/inf
  double b = 1.0;
  for (std::size_t k = 1; k <= c; ++k) b = next_erlang_b(b, k, a);
  return b;
}

double ResponseTimeModel::erlang_c_from_b(std::size_t c,
                                          double b) const noexcept {
  // The denominator is at least c - a > 0 (stable), so C is finite; the
  // clamp only absorbs rounding.
  const double cd = static_cast<double>(c);
  return std::clamp(cd * b / (cd - offered_load() * (1.0 - b)), 0.0, 1.0);
}

double ResponseTimeModel::erlang_c(std::size_t c) const noexcept {
  if (!stable(c)) return 1.0;
  return erlang_c_from_b(c, erlang_b(c));
}

double ResponseTimeModel::tail(std::size_t c, double erlang_c,
                               double t) const noexcept {
  // drain > 0 (possibly +inf for a huge mu) and t >= 0: the exponent is
  // in [-inf, 0]; t = 0 is answered first so that inf * 0 never happens.
  if (t == 0) return erlang_c;
  return erlang_c * std::exp(-(drain_rate(c) / whitt_factor()) * t);
}

double ResponseTimeModel::mean_wait(std::size_t c) const noexcept {
  if (!stable(c)) return kInfinity;
  return erlang_c(c) / drain_rate(c) * whitt_factor();
}

double ResponseTimeModel::mean_response(std::size_t c) const noexcept {
  return 1.0 / params_.service_rate + mean_wait(c);
}

double ResponseTimeModel::wait_probability_above(std::size_t c,
                                                 double t) const noexcept {
  if (!stable(c) || !(t >= 0)) return 1.0;  // also NaN t
  return tail(c, erlang_c(c), t);
}

double ResponseTimeModel::wait_quantile(std::size_t c,
                                        double p) const noexcept {
  if (!stable(c) || std::isnan(p)) return kInfinity;
  const double waiting = erlang_c(c);
  const double above = 1.0 - std::min(p, 1.0);  // allowed P(Wq > w)
  if (waiting <= above) return 0.0;  // p <= 0, p <= 1 - C, lambda = 0
  if (above <= 0) return kInfinity;  // p >= 1 with some waiting
  // waiting > above > 0: the log is > 0 and finite.
  return std::log(waiting / above) / drain_rate(c) * whitt_factor();
}

absl::StatusOr<Staffing> ResponseTimeModel::smallest_workers_for_wait_slo(
    double slo, double epsilon, std::size_t max_workers) const {
  if (!(std::isfinite(slo) && slo > 0) || !(epsilon > 0 && epsilon < 1) ||
      max_workers < 1) {
    return absl::InvalidArgumentError(fmt::format(
        "smallest_workers_for_wait_slo(slo = {}, epsilon = {}, max_workers "
        "= {}): use 0 < slo < infinity (seconds), 0 < epsilon < 1 and "
        "max_workers >= 1",
        slo, epsilon, max_workers));
  }
  const double a = offered_load();
  // Every c <= max_workers is unstable: P(Wq > slo) = 1 > epsilon. (Also
  // keeps the loop below from running up to a huge a.)
  if (!(a < static_cast<double>(max_workers))) {
    return Staffing{max_workers, false};
  }
  // One pass of the recursion, with the same steps as erlang_b(c) and the
  // same tail as wait_probability_above(c, slo): the first c that meets
  // the SLO is the smallest, found in O(c) rather than O(c^2).
  double b = 1.0;
  for (std::size_t c = 1;; ++c) {
    b = next_erlang_b(b, c, a);
    if (stable(c) && tail(c, erlang_c_from_b(c, b), slo) <= epsilon) {
      return Staffing{c, true};
    }
    if (c == max_workers) break;  // (not c <= max_workers: no wrap-around)
  }
  return Staffing{max_workers, false};
}

}  // namespace fnbus::scaling
