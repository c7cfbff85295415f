#include "fnbus/resilience/backoff.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"

namespace fnbus::resilience {

std::string_view to_string(Jitter jitter) noexcept {
  switch (jitter) {
    case Jitter::kFull:
      return "full";
    case Jitter::kEqual:
      return "equal";
    case Jitter::kNone:
      return "none";
  }
  return "unknown";
}

absl::StatusOr<Backoff> Backoff::Create(BackoffOptions options) {
  std::vector<std::string> problems;
  if (options.initial <= Duration::zero()) {
    problems.push_back(fmt::format(
        "initial is {} ns; use more than 0 (the first retry's longest wait)",
        options.initial.count()));
  }
  if (!std::isfinite(options.multiplier) || options.multiplier < 1.0) {
    problems.push_back(fmt::format(
        "multiplier is {}; use a finite number of at least 1 (1 = constant "
        "backoff, 2 = doubling)",
        options.multiplier));
  }
  if (options.max < options.initial) {
    problems.push_back(
        fmt::format("max is {} ns, below initial ({} ns); use at least initial",
                    options.max.count(), options.initial.count()));
  }
  if (options.jitter != Jitter::kFull && options.jitter != Jitter::kEqual &&
      options.jitter != Jitter::kNone) {
    problems.push_back(
        "jitter is not a Jitter value; use kFull, kEqual or kNone");
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError("BackoffOptions: " +
                                      absl::StrJoin(problems, "; "));
  }
  return Backoff(options);
}

Duration Backoff::ceiling(std::uint32_t retry) const noexcept {
  const double exponent = retry <= 1 ? 0.0 : static_cast<double>(retry - 1);
  // In double, compared before converting: initial * multiplier^n leaves
  // the range of int64 nanoseconds long before n reaches UINT32_MAX (and
  // converting an out-of-range double is undefined behaviour).
  const double nanos = static_cast<double>(options_.initial.count()) *
                       std::pow(options_.multiplier, exponent);
  const auto max = static_cast<double>(options_.max.count());
  if (!(nanos < max)) return options_.max;  // also catches inf
  return Duration(static_cast<Duration::rep>(nanos));
}

Duration Backoff::delay(std::uint32_t retry, Random& random) const noexcept {
  const Duration top = ceiling(retry);
  // top >= initial > 0 (Create), so these casts are exact.
  const auto top_nanos = static_cast<std::uint64_t>(top.count());
  switch (options_.jitter) {
    case Jitter::kNone:
      return top;
    case Jitter::kEqual: {
      const std::uint64_t half = top_nanos / 2;
      return Duration(static_cast<Duration::rep>(top_nanos - half +
                                                 random.uniform_to(half)));
    }
    case Jitter::kFull:
      break;
  }
  return Duration(static_cast<Duration::rep>(random.uniform_to(top_nanos)));
}

}  // namespace fnbus::resilience
