#include "fnbus/scaling/lab/random.hpp"

#include <algorithm>
#include <cmath>

#include "fmt/format.h"

namespace fnbus::scaling::lab {
namespace {

bool positive(double x) { return std::isfinite(x) && x > 0; }

}  // namespace

absl::StatusOr<ServiceTimeDistribution> ServiceTimeDistribution::Exponential(
    double mean) {
  if (!positive(mean)) {
    return absl::InvalidArgumentError(fmt::format(
        "exponential service time: mean is {}; use more than 0 seconds", mean));
  }
  return ServiceTimeDistribution(Kind::kExponential, mean, 0, 0);
}

absl::StatusOr<ServiceTimeDistribution> ServiceTimeDistribution::Lognormal(
    double mean, double scv) {
  if (!positive(mean) || !positive(scv)) {
    return absl::InvalidArgumentError(fmt::format(
        "lognormal service time: mean is {} and scv is {}; use more than 0 "
        "for both",
        mean, scv));
  }
  // For a lognormal, scv = exp(sigma^2) - 1 and mean = exp(mu + sigma^2/2).
  const double sigma2 = std::log1p(scv);
  const double mu = std::log(mean) - sigma2 / 2;
  return ServiceTimeDistribution(Kind::kLognormal, mu, std::sqrt(sigma2), 0);
}

absl::StatusOr<ServiceTimeDistribution> ServiceTimeDistribution::Bimodal(
    double p, double short_mean, double long_mean) {
  if (!(p >= 0 && p <= 1) || !positive(short_mean) || !positive(long_mean)) {
    return absl::InvalidArgumentError(fmt::format(
        "bimodal service time: p is {}, means {} and {}; use 0 <= p <= 1 and "
        "means above 0",
        p, short_mean, long_mean));
  }
  return ServiceTimeDistribution(Kind::kBimodal, p, short_mean, long_mean);
}

std::int64_t ServiceTimeDistribution::sample_ns(Random& random) const noexcept {
  double seconds = 0;
  switch (kind_) {
    case Kind::kExponential:
      seconds = random.exponential(a_);
      break;
    case Kind::kLognormal:
      seconds = std::exp(a_ + b_ * random.normal());
      break;
    case Kind::kBimodal:
      seconds = random.exponential(random.uniform01() < a_ ? b_ : c_);
      break;
  }
  const double nanos = std::min(seconds * 1e9, 9.0e18);
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(nanos));
}

double ServiceTimeDistribution::mean() const noexcept {
  switch (kind_) {
    case Kind::kExponential:
      return a_;
    case Kind::kLognormal:
      return std::exp(a_ + b_ * b_ / 2);
    case Kind::kBimodal:
      return a_ * b_ + (1 - a_) * c_;
  }
  return 0;
}

double ServiceTimeDistribution::scv() const noexcept {
  switch (kind_) {
    case Kind::kExponential:
      return 1.0;
    case Kind::kLognormal:
      return std::expm1(b_ * b_);
    case Kind::kBimodal: {
      // Each part exponential: E[S^2] = 2 (p m1^2 + (1-p) m2^2).
      const double m = mean();
      const double second = 2 * (a_ * b_ * b_ + (1 - a_) * c_ * c_);
      return second / (m * m) - 1;
    }
  }
  return 1.0;
}

}  // namespace fnbus::scaling::lab
