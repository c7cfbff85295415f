#include "fnbus/random.hpp"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <random>

namespace fnbus {
namespace {

std::uint64_t splitmix64(std::uint64_t& x) noexcept {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

std::uint64_t rotl(std::uint64_t x, int k) noexcept {
  return (x << k) | (x >> (64 - k));
}

}  // namespace

Random::Random(std::uint64_t seed) noexcept {
  for (std::uint64_t& word : state_) word = splitmix64(seed);
}

std::uint64_t Random::next() noexcept {
  const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
  const std::uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = rotl(state_[3], 45);
  return result;
}

double Random::uniform01() noexcept {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

std::uint64_t Random::uniform_to(std::uint64_t bound) noexcept {
  if (bound == std::numeric_limits<std::uint64_t>::max()) return next();
  // Rejection: draws past the largest multiple of `range` would make the
  // low values more likely than the high ones.
  const std::uint64_t range = bound + 1;
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() -
                              std::numeric_limits<std::uint64_t>::max() % range;
  std::uint64_t x = next();
  while (x >= limit) x = next();
  return x % range;
}

double Random::exponential(double mean) noexcept {
  return -mean * std::log(uniform_open0());
}

double Random::normal() noexcept {
  const double r = std::sqrt(-2.0 * std::log(uniform_open0()));
  return r * std::cos(2.0 * std::numbers::pi * uniform01());
}

namespace detail {

Random& thread_random() noexcept {
  thread_local Random random([]() noexcept -> std::uint64_t {
    try {
      std::random_device entropy;
      return (std::uint64_t{entropy()} << 32) ^ entropy();
    } catch (...) {  // no entropy source: distinct per thread and start
      static thread_local const int here = 0;
      return reinterpret_cast<std::uintptr_t>(&here) ^
             static_cast<std::uint64_t>(
                 std::chrono::steady_clock::now().time_since_epoch().count());
    }
  }());
  return random;
}

}  // namespace detail

}  // namespace fnbus
