#pragma once

// The response-time model T_r = f(R, T): an M/M/c queue (Poisson arrivals
// at rate lambda, c workers each serving at rate mu) with Erlang C computed
// by the numerically stable Erlang B recursion, and Whitt's G/G/c
// correction for service times that are not exponential. Pure: no threads,
// clocks or locks. Times are seconds, rates events per second.
//
//   a = lambda / mu (offered load), rho = a / c (utilisation)
//   B_0 = 1, B_k = a B_{k-1} / (k + a B_{k-1});  C = c B_c / (c - a (1 - B_c))
//   E[Wq] = C / (c mu - lambda);  T_r = 1 / mu + E[Wq]
//   P(Wq > t) = C exp(-(c mu - lambda) t)
// With service scv c_s^2 != 1 (Whitt, arrivals still Poisson): waits are
// scaled by (1 + c_s^2) / 2, i.e. the exponential tail's rate is divided
// by that factor; P(Wq > 0) = C is kept. An approximation, good for
// moderate to heavy load.

#include <cstddef>

#include "absl/status/statusor.h"

namespace fnbus::scaling {

struct QueueParams {
  double arrival_rate = 0;  // lambda >= 0
  double service_rate = 1;  // mu > 0, per worker (1 / mean service time)
  double service_scv = 1;   // squared coefficient of variation, >= 0
};

// The smallest worker count meeting a wait SLO, and whether it does.
struct Staffing {
  std::size_t workers = 0;
  bool met = false;  // false: even `max_workers` misses the SLO
};

class ResponseTimeModel {
 public:
  // InvalidArgument for NaN, infinite or negative rates, mu = 0, or a
  // negative scv.
  static absl::StatusOr<ResponseTimeModel> Create(QueueParams params);

  [[nodiscard]] const QueueParams& params() const noexcept { return params_; }
  [[nodiscard]] double offered_load() const noexcept {
    return params_.arrival_rate / params_.service_rate;
  }
  // rho = a / c; +infinity for c = 0 with load.
  [[nodiscard]] double utilisation(std::size_t c) const noexcept;
  // Whether c workers keep up (rho < 1). Every wait below is +infinity (and
  // every probability 1) when they do not.
  [[nodiscard]] bool stable(std::size_t c) const noexcept;

  [[nodiscard]] double erlang_b(std::size_t c) const noexcept;
  // P(an arrival waits); 1 when unstable.
  [[nodiscard]] double erlang_c(std::size_t c) const noexcept;
  [[nodiscard]] double mean_wait(std::size_t c) const noexcept;
  [[nodiscard]] double mean_response(std::size_t c) const noexcept;
  // P(wait > t) for t >= 0 (negative t counts as 0).
  [[nodiscard]] double wait_probability_above(std::size_t c,
                                              double t) const noexcept;
  // The p-quantile of the wait, p in (0, 1) (clamped into it).
  [[nodiscard]] double wait_quantile(std::size_t c, double p) const noexcept;

  // The smallest c in [1, max_workers] with P(wait > slo) <= epsilon.
  // InvalidArgument unless slo > 0, 0 < epsilon < 1 and max_workers >= 1.
  [[nodiscard]] absl::StatusOr<Staffing> smallest_workers_for_wait_slo(
      double slo, double epsilon, std::size_t max_workers) const;

 private:
  explicit ResponseTimeModel(QueueParams params) : params_(params) {}
  // (1 + scv) / 2: 1 for exponential service.
  [[nodiscard]] double whitt_factor() const noexcept {
    return (1.0 + params_.service_scv) / 2.0;
  }

  QueueParams params_;
};

}  // namespace fnbus::scaling
