// Tests of fnbus::Random (random.hpp).

#include "fnbus/random.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <vector>

#include <catch2/catch.hpp>

namespace {

using fnbus::Random;

TEST_CASE("random: a seed gives one sequence, other seeds others", "[random]") {
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

TEST_CASE("random: uniform01 is at least 0, below 1, with mean 1/2",
          "[random]") {
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

TEST_CASE("random: uniform_to stays within [0, bound] and reaches both ends",
          "[random]") {
  Random random(3);
  std::vector<int> seen(6, 0);
  for (int i = 0; i < 60'000; ++i) {
    const std::uint64_t x = random.uniform_to(5);
    REQUIRE(x <= 5);
    ++seen[static_cast<std::size_t>(x)];
  }
  // Each of the 6 values about 10,000 times: no bias toward the low ones.
  for (const int count : seen) CHECK(count == Approx(10'000).epsilon(0.05));
  CHECK(random.uniform_to(0) == 0);
}

TEST_CASE("random: uniform_to with the largest bound uses all 64 bits",
          "[random]") {
  Random a(11);
  Random b(11);
  const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  // The whole range: the raw generator's output, nothing rejected.
  for (int i = 0; i < 100; ++i) CHECK(a.uniform_to(max) == b.next());
  // Just below: a bound where half the draws fall past the largest
  // multiple of the range and are drawn again.
  const std::uint64_t big = (max / 2) + 1;
  for (int i = 0; i < 1000; ++i) CHECK(a.uniform_to(big) <= big);
}

}  // namespace
