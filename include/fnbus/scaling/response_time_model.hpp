#pragma once

// The response-time model T_r = f(R, T): how long an event waits and is
// served, given R = c workers and the traffic T (arrival rate, service rate,
// service-time variability). Pure: no threads, clocks, locks or globals.
// Times are seconds, rates events per second.
//
// The model: a single FIFO queue shared by c identical workers, Poisson
// arrivals at rate lambda, service at rate mu per worker, in steady state
// (M/M/c; see docs/scaling.md, "The response-time model"):
//
//   a = lambda / mu (offered load), rho = a / c (utilisation)
//   B_0 = 1, B_k = a B_{k-1} / (k + a B_{k-1})   (Erlang B)
//   C = c B_c / (c - a (1 - B_c))                 (Erlang C = P(wait > 0))
//   E[Wq] = C / (c mu - lambda);  T_r = 1 / mu + E[Wq]
//   P(Wq > t) = C exp(-(c mu - lambda) t)
//   w_p = max(0, ln(C / (1 - p)) / (c mu - lambda))
//
// The recursion keeps every B_k in [0, 1]: no factorials or powers, so it
// is finite and accurate for c up to 10^5 and beyond (O(c) time).
//
// Service times that are not exponential (service_scv = c_s^2 != 1): the
// queue is then M/G/c, which has no closed form. The model uses Whitt's
// (Lee and Longton's) approximation E[Wq] ~ (1 + c_s^2) / 2 E[Wq]_M/M/c
// (the G/G/c factor (c_a^2 + c_s^2) / 2 with Poisson arrivals, c_a^2 = 1).
// Exactly what is approximated, with w = (1 + c_s^2) / 2:
// - P(wait > 0) is the M/M/c Erlang C: erlang_b(), erlang_c(),
//   utilisation() and stable() ignore c_s^2;
// - the wait of an arrival that waits is taken to be exponential with mean
//   w / (c mu - lambda), i.e. the M/M/c tail with its decay rate
//   c mu - lambda multiplied by 2 / (1 + c_s^2). So mean_wait() and
//   wait_quantile() are the M/M/c values times w, and
//   wait_probability_above(c, t) = C exp(-(c mu - lambda) t / w).
// Exact for c_s^2 = 1 (M/M/c) and for the mean wait of one worker (M/G/1,
// Pollaczek-Khinchine). Otherwise good at moderate to heavy load; at light
// load with many workers the Erlang C term dominates the error (e.g. for
// constant service times the true P(wait > 0) is below Erlang C), and the
// true tail is only asymptotically exponential. Nothing here describes the
// transient after the load changes.

#include <cstddef>

#include "absl/status/statusor.h"

namespace fnbus::scaling {

// The traffic offered to the pool.
struct QueueParams {
  double arrival_rate = 0;  // lambda >= 0: Poisson arrivals per second
  double service_rate = 1;  // mu > 0, per worker (1 / mean service time)
  double service_scv = 1;   // c_s^2 >= 0: variance / mean^2 of service time
                            // (1: exponential, 0: constant)
};

// The smallest worker count meeting a wait SLO, and whether it does.
struct Staffing {
  std::size_t workers = 0;
  bool met = false;  // false: even `max_workers` (returned) misses the SLO
};

// The M/M/c model (with Whitt's correction, above) for one QueueParams.
// A plain value, built only from validated parameters: copy it freely.
// Every query is const, pure, noexcept and never NaN; for c workers that
// do not keep up (c <= a, including c = 0) waits are +infinity,
// probabilities of waiting 1 and erlang_c() 1.
// Thread safety: any thread; concurrent queries on one model are fine.
class ResponseTimeModel {
 public:
  // InvalidArgument (naming each bad field) for a NaN, infinite or
  // negative rate, service_rate = 0, or a NaN, infinite or negative scv.
  // The offered load a = lambda / mu may still overflow to +infinity (a
  // huge lambda over a tiny mu): such a model is unstable for every c.
  static absl::StatusOr<ResponseTimeModel> Create(QueueParams params);

  [[nodiscard]] const QueueParams& params() const noexcept { return params_; }
  // a = lambda / mu, the mean number of busy workers; >= 0, may be +inf.
  [[nodiscard]] double offered_load() const noexcept {
    return params_.arrival_rate / params_.service_rate;
  }
  // rho = a / c; +infinity for c = 0 (zero workers never keep up).
  [[nodiscard]] double utilisation(std::size_t c) const noexcept;
  // Whether c workers keep up: c >= 1, rho < 1 and c mu - lambda > 0.
  [[nodiscard]] bool stable(std::size_t c) const noexcept;

  // Erlang B(c, a): the blocking probability of c servers with no queue,
  // in [0, 1] (B(0, a) = 1; 1 when a is +infinity). O(c).
  [[nodiscard]] double erlang_b(std::size_t c) const noexcept;
  // Erlang C(c, a) = P(an arrival waits), in [0, 1]; 1 when unstable. O(c).
  [[nodiscard]] double erlang_c(std::size_t c) const noexcept;
  // E[Wq], the mean time in the queue before a worker takes the event;
  // +infinity when unstable. O(c).
  [[nodiscard]] double mean_wait(std::size_t c) const noexcept;
  // T_r = 1 / mu + E[Wq], the mean time from arrival to the end of
  // service; +infinity when unstable. O(c).
  [[nodiscard]] double mean_response(std::size_t c) const noexcept;
  // P(Wq > t), in [0, 1]: erlang_c(c) at t = 0, falling to 0 as t grows;
  // 1 when unstable. t < 0 gives 1 (every wait is >= 0); NaN t gives 1
  // (the conservative answer). O(c).
  [[nodiscard]] double wait_probability_above(std::size_t c,
                                              double t) const noexcept;
  // The p-quantile of Wq: the smallest w >= 0 with P(Wq > w) <= 1 - p.
  // Precondition: 0 < p < 1. Outside it the result is still defined: when
  // unstable or p is NaN, +infinity; else p <= 0 (or p <= 1 - C: most
  // arrivals do not wait) gives 0 and p >= 1 gives +infinity (0 if no
  // arrival ever waits, lambda = 0). O(c).
  [[nodiscard]] double wait_quantile(std::size_t c, double p) const noexcept;

  // The smallest c in [1, max_workers] that is stable and has
  // P(Wq > slo) <= epsilon: {c, true}; {max_workers, false} when none is.
  // InvalidArgument unless 0 < slo < infinity (seconds),
  // 0 < epsilon < 1 and max_workers >= 1. O(answer) time (one pass of the
  // Erlang B recursion); it returns at once when a >= max_workers.
  [[nodiscard]] absl::StatusOr<Staffing> smallest_workers_for_wait_slo(
      double slo, double epsilon, std::size_t max_workers) const;

 private:
  explicit ResponseTimeModel(QueueParams params) : params_(params) {}

  // c mu - lambda, computed as mu (c - a) so that its sign agrees with
  // rho < 1; > 0 whenever stable(c).
  [[nodiscard]] double drain_rate(std::size_t c) const noexcept;
  // Erlang C from c and B_c; precondition: stable(c).
  [[nodiscard]] double erlang_c_from_b(std::size_t c, double b) const noexcept;
  // P(Wq > t) from c and C = erlang_c(c); precondition: stable(c), t >= 0.
  [[nodiscard]] double tail(std::size_t c, double erlang_c,
                            double t) const noexcept;
  // (1 + c_s^2) / 2: Whitt's factor on waits; 1 for exponential service.
  [[nodiscard]] double whitt_factor() const noexcept {
    return (1.0 + params_.service_scv) / 2.0;
  }

  QueueParams params_;
};

}  // namespace fnbus::scaling
