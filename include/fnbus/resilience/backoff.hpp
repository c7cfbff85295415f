#pragma once

// How long a retry waits: exponential backoff with a cap and jitter, as a
// pure value. The retry stage of a function's pipeline asks it for the
// delay before each retry; so can an application's own retry loop.
//
//   auto backoff = fnbus::resilience::Backoff::Create(
//       {.initial = 100ms, .multiplier = 2.0, .max = 10s});
//   fnbus::Random random(seed);
//   Duration wait = backoff->delay(retry, random);  // retry = 1, 2, ...
//
// The ceiling of retry n is min(max, initial * multiplier^(n-1)): 100 ms,
// 200 ms, 400 ms, ... 10 s, 10 s. Jitter spreads the retries of many
// callers that failed together, so they do not come back in step
// (AWS Architecture Blog, "Exponential Backoff and Jitter", 2015):
//   kFull:  uniform in [0, ceiling] (the default; the least total work);
//   kEqual: ceiling/2 + uniform in [0, ceiling/2] (never sooner than half);
//   kNone:  the ceiling itself.
//
// Thread safety: a Backoff is immutable; the Random passed in is the
// caller's (one per thread).

#include <chrono>
#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/random.hpp"

namespace fnbus::resilience {

enum class Jitter { kFull, kEqual, kNone };

std::string_view to_string(Jitter jitter) noexcept;

struct BackoffOptions {
  Duration initial = std::chrono::milliseconds(100);  // > 0: retry 1's ceiling
  double multiplier = 2.0;                  // >= 1 and finite: growth per retry
  Duration max = std::chrono::seconds(30);  // >= initial: the cap
  Jitter jitter = Jitter::kFull;
};

class Backoff {
 public:
  // InvalidArgument naming every bad option and what to use instead.
  static absl::StatusOr<Backoff> Create(BackoffOptions options);

  // The longest wait before retry `retry` (1 = the first retry; 0 is
  // treated as 1). Never overflows: saturates at options().max.
  [[nodiscard]] Duration ceiling(std::uint32_t retry) const noexcept;
  // The wait before retry `retry`, drawn with `random` per the jitter.
  // Always within [0, ceiling(retry)].
  [[nodiscard]] Duration delay(std::uint32_t retry,
                               Random& random) const noexcept;

  [[nodiscard]] const BackoffOptions& options() const noexcept {
    return options_;
  }

 private:
  explicit Backoff(BackoffOptions options) noexcept : options_(options) {}
  BackoffOptions options_;
};

}  // namespace fnbus::resilience
