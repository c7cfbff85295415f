// Tests of the lab's deterministic randomness (scaling/lab/random.hpp).

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

TEST_CASE("lab_random: a seed gives one sequence, other seeds others",
          "[lab_random]") {
  Random a(7);
  Random b(7);
  Random c(8);
  std::vector<std::uint64_t> first;
  for (int i = 0; i < 100; ++i) {
    const std::uint64_t x = a.next();
    CHECK(x == b.next());
    first.push_back(x);
  }
  int same = 0;
  for (int i = 0; i < 100; ++i) same += c.next() == first[i] ? 1 : 0;
  CHECK(same == 0);
  CHECK(std::set<std::uint64_t>(first.begin(), first.end()).size() == 100);
}

TEST_CASE("lab_random: uniform01 is at least 0, below 1, with mean 1/2",
          "[lab_random]") {
  Random random(1);
  double sum = 0;
  double low = 1;
  double high = 0;
  for (int i = 0; i < 200'000; ++i) {
    const double u = random.uniform01();
    sum += u;
    low = std::min(low, u);
    high = std::max(high, u);
  }
  CHECK(low >= 0.0);
  CHECK(high < 1.0);
  CHECK(sum / 200'000 == Approx(0.5).epsilon(0.01));
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
