#pragma once

// Samplers for the policy lab, drawing from fnbus::Random (random.hpp),
// so that a seed gives the same run on every platform.

#include <cstdint>

#include "absl/status/statusor.h"

#include "fnbus/random.hpp"

namespace fnbus::scaling::lab {

// The lab's generator is fnbus's (random.hpp); the name stays for the
// lab's users.
using Random = fnbus::Random;

// How long one event takes to handle.
class ServiceTimeDistribution {
 public:
  enum class Kind { kExponential, kLognormal, kBimodal };

  // Mean > 0 (seconds).
  static absl::StatusOr<ServiceTimeDistribution> Exponential(double mean);
  // Mean > 0 and squared coefficient of variation > 0.
  static absl::StatusOr<ServiceTimeDistribution> Lognormal(double mean,
                                                           double scv);
  // With probability p the mean is `short_mean`, else `long_mean`; each
  // part exponential. 0 <= p <= 1, means > 0.
  static absl::StatusOr<ServiceTimeDistribution> Bimodal(double p,
                                                         double short_mean,
                                                         double long_mean);

  // One service time in integer nanoseconds (>= 1).
  std::int64_t sample_ns(Random& random) const noexcept;
  [[nodiscard]] double mean() const noexcept;  // seconds
  [[nodiscard]] double scv() const noexcept;
  [[nodiscard]] Kind kind() const noexcept { return kind_; }

 private:
  ServiceTimeDistribution(Kind kind, double a, double b, double c)
      : kind_(kind), a_(a), b_(b), c_(c) {}
  Kind kind_;
  // Exponential: a = mean. Lognormal: a = mu, b = sigma (of the log).
  // Bimodal: a = p, b = short mean, c = long mean.
  double a_;
  double b_;
  double c_;
};

}  // namespace fnbus::scaling::lab
