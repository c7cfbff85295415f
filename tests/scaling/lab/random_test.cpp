// Tests of the lab's samplers (scaling/lab/random.hpp); the generator's
// own tests are in tests/random_test.cpp.

#include "fnbus/scaling/lab/random.hpp"

#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace {

using fnbus::scaling::lab::Random;
using fnbus::scaling::lab::ServiceTimeDistribution;

// Mean and scv of `n` samples, in seconds.
struct Moments {
  double mean;
  double scv;
};
Moments moments_of(const ServiceTimeDistribution& d, int n,
                   std::uint64_t seed) {
  Random random(seed);
  double sum = 0;
  double sum_sq = 0;
  for (int i = 0; i < n; ++i) {
    const double s = static_cast<double>(d.sample_ns(random)) / 1e9;
    sum += s;
    sum_sq += s * s;
  }
  const double mean = sum / n;
  return {mean, (sum_sq / n - mean * mean) / (mean * mean)};
}

TEST_CASE("lab_random: samplers match their mean and scv", "[lab_random]") {
  const auto exponential = ServiceTimeDistribution::Exponential(0.002);
  const auto lognormal = ServiceTimeDistribution::Lognormal(0.002, 2.0);
  const auto bimodal = ServiceTimeDistribution::Bimodal(0.9, 0.001, 0.010);
  REQUIRE(exponential.ok());
  REQUIRE(lognormal.ok());
  REQUIRE(bimodal.ok());
  CHECK(exponential->mean() == Approx(0.002));
  CHECK(exponential->scv() == Approx(1.0));
  CHECK(lognormal->mean() == Approx(0.002));
  CHECK(lognormal->scv() == Approx(2.0));
  CHECK(bimodal->mean() == Approx(0.9 * 0.001 + 0.1 * 0.010));
  for (const ServiceTimeDistribution* d :
       {&*exponential, &*lognormal, &*bimodal}) {
    const Moments m = moments_of(*d, 400'000, 99);
    INFO("kind " << static_cast<int>(d->kind()));
    CHECK(m.mean == Approx(d->mean()).epsilon(0.02));
    CHECK(m.scv == Approx(d->scv()).epsilon(0.1));
  }
}

TEST_CASE("lab_random: samples are at least one nanosecond", "[lab_random]") {
  const auto tiny = ServiceTimeDistribution::Exponential(1e-12);
  REQUIRE(tiny.ok());
  Random random(3);
  for (int i = 0; i < 1000; ++i) CHECK(tiny->sample_ns(random) >= 1);
}

TEST_CASE("lab_random: bad parameters are InvalidArgument", "[lab_random]") {
  CHECK_FALSE(ServiceTimeDistribution::Exponential(0).ok());
  CHECK_FALSE(ServiceTimeDistribution::Exponential(std::nan("")).ok());
  CHECK_FALSE(ServiceTimeDistribution::Lognormal(0.001, 0).ok());
  CHECK_FALSE(ServiceTimeDistribution::Lognormal(-1, 1).ok());
  CHECK_FALSE(ServiceTimeDistribution::Bimodal(1.5, 0.001, 0.01).ok());
  CHECK_FALSE(ServiceTimeDistribution::Bimodal(0.5, 0.001, 0).ok());
  const auto status = ServiceTimeDistribution::Bimodal(-0.1, 1, 1).status();
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(status.message()).find("p is") != std::string::npos);
}

}  // namespace
