#pragma once

// Deterministic randomness for the policy lab: our own generator and
// samplers, so that a seed gives the same run on every platform (the
// standard library's distributions differ between implementations).
//
// Generator: xoshiro256** (Blackman & Vigna), seeded through splitmix64.
// Samplers use only it and IEEE double arithmetic (std::log, std::exp,
// std::sqrt, std::cos are correctly rounded enough on glibc to give
// identical bits here; the lab's scores do not depend on the last bit).

#include <cstdint>

#include "absl/status/statusor.h"

namespace fnbus::scaling::lab {

class Random {
 public:
  explicit Random(std::uint64_t seed) noexcept;

  // The next 64 random bits.
  std::uint64_t next() noexcept;
  // Uniform in [0, 1), 53 bits.
  double uniform01() noexcept;
  // Uniform in (0, 1]: safe for log().
  double uniform_open0() noexcept { return 1.0 - uniform01(); }
  // Exponential with the given mean (> 0).
  double exponential(double mean) noexcept;
  // Standard normal (Box-Muller; one of each pair is used).
  double normal() noexcept;

 private:
  std::uint64_t state_[4];
};

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
