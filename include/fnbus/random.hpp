#pragma once

// Deterministic randomness shared by the parts of fnbus that draw: retry
// jitter (resilience/backoff.hpp) and the policy lab's samplers
// (scaling/lab/random.hpp). Our own generator, so that a seed gives the
// same numbers on every platform (the standard library's distributions
// differ between implementations).
//
// Generator: xoshiro256** (Blackman & Vigna), seeded through splitmix64.
// Not for cryptography. Samplers use only it and IEEE double arithmetic
// (std::log, std::cos and std::sqrt are correctly rounded enough on glibc
// to give identical bits here).
//
// Thread safety: none; one Random per thread (or per owner that
// serialises its draws).

#include <cstdint>

namespace fnbus {

class Random {
 public:
  explicit Random(std::uint64_t seed) noexcept;

  // The next 64 random bits.
  std::uint64_t next() noexcept;
  // Uniform in [0, 1), 53 bits.
  double uniform01() noexcept;
  // Uniform in (0, 1]: safe for log().
  double uniform_open0() noexcept { return 1.0 - uniform01(); }
  // Uniform in [0, bound] (inclusive), without modulo bias; bound may be
  // UINT64_MAX.
  std::uint64_t uniform_to(std::uint64_t bound) noexcept;
  // Exponential with the given mean (> 0).
  double exponential(double mean) noexcept;
  // Standard normal (Box-Muller; one of each pair is used).
  double normal() noexcept;

 private:
  std::uint64_t state_[4];
};

namespace detail {
// One generator per thread, seeded from std::random_device (else from the
// thread and the time): retry jitter and replica picks draw from it with
// no lock.
[[nodiscard]] Random& thread_random() noexcept;
}  // namespace detail

}  // namespace fnbus
