#pragma once

// When a canary is worse than the stable version: the automatic-rollback
// rule, pure (no threads, locks or clocks), so that a simulator can
// replay it. CanaryJudge (canary_judge.hpp) keeps the windows it reads.
//
// Two tests, each of a hypothesis "the canary is worse by more than the
// allowed margin", over the last window_calls calls of each version:
//  - failures: the canary's failure rate exceeds the stable's by more
//    than max_failure_rate_margin, by at least `evidence` standard errors
//    taken at that boundary (a one-sided score test, as Farrington and
//    Manning's for a difference of proportions);
//  - latency: the canary's p99 exceeds max_p99_ratio times the stable's,
//    i.e. more than 1% of the canary's successful calls are slower than
//    that bound, with the Wilson score lower bound of that share (at
//    `evidence`) above 1%.
// Neither fires before the canary has min_calls calls in its window; the
// latency test also needs 100 successes of each version (a p99 of fewer
// is their maximum) and reads successes only (a failure that returns
// fast must not make a canary look quick). A stable version with no calls
// in its window is no baseline: its rate counts as 1 failure in 2 calls,
// so the failure test cannot fire against it at evidence 1.5 or more.
//
// Why a margin *and* evidence: a rule checked after every call would roll
// back a canary as good as the stable one by noise sooner or later; the
// margin keeps an equal canary several standard errors away from the
// threshold, the evidence keeps a rule that is just above it from firing
// on a lucky streak. tests/mesh/canary_judge_test.cpp measures both.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"

#include "fnbus/clock.hpp"

namespace fnbus::mesh {

// Successful calls each version needs before the latency test: a p99 of
// fewer is their maximum.
inline constexpr std::uint64_t kMinLatencyCalls = 100;

struct CanaryOptions {
  // Roll back when the canary's failure rate exceeds the stable's by more
  // than this: in [0, 1] (1: never on failures).
  double max_failure_rate_margin = 0.05;
  // ... or its p99 latency exceeds this times the stable's: >= 1, or
  // +infinity (never on latency).
  double max_p99_ratio = 1.5;
  // Calls per version the rule looks at (the latest): 1 to 1,000,000;
  // at least 100 unless max_p99_ratio is infinite. Longer windows make
  // false rollbacks rarer (a p99 of 1000 calls is far steadier than one
  // of 200) but forget a canary's good start more slowly.
  std::uint32_t window_calls = 1000;
  // The canary's calls in the window before either test may fire:
  // 1 to window_calls. Below ~50 the normal approximations the tests use
  // are poor for failure rates near 20%, and noise rolls canaries back.
  std::uint32_t min_calls = 50;
  // Standard errors of evidence each test needs: finite, > 0. Lower
  // detects sooner, higher rolls back fewer good canaries by noise; with
  // the other defaults, 2.5 catches a canary failing 20% of its calls
  // (stable 0%) within 190 of its calls, and rolled back no canary as good
  // as the stable version in 40 million of their calls (figures in
  // tests/mesh/canary_judge_test.cpp).
  double evidence = 2.5;
};

// InvalidArgument naming every bad field, its value and what to use.
[[nodiscard]] absl::Status check(const CanaryOptions& options);

// One version's window, as the rule reads it.
struct WindowView {
  std::uint64_t calls = 0;     // calls in the window
  std::uint64_t failures = 0;  // of them, failed
  // The latencies of the window's successful calls, in any order.
  std::span<const Duration> latencies;
};

struct Verdict {
  enum Kind {
    kTooFewCalls,  // the canary has fewer than min_calls calls
    kHealthy,      // neither test fires
    kRollback,     // a test fires; `reason` says which and by how much
  };
  Kind kind = kTooFewCalls;
  // For kRollback: "failure rate 0.210 > stable 0.000 + margin 0.050 over
  // 100 canary and 200 stable calls" or "p99 latency 31.2 ms > 1.5 x
  // stable p99 12.0 ms: 9 of 150 canary calls slower than 18.0 ms".
  std::string reason;
};

[[nodiscard]] std::string_view to_string(Verdict::Kind kind) noexcept;

// What the latency test needs of the stable version: its p99 and how
// many successful calls it was taken over.
struct LatencyBaseline {
  Duration p99 = Duration::zero();
  std::uint64_t successes = 0;
};

// The p99 of `latencies` (the ceil(0.99 n)-th smallest); 0 if empty.
// Allocates (a copy to partially sort).
[[nodiscard]] Duration p99(std::span<const Duration> latencies);
[[nodiscard]] LatencyBaseline baseline_of(std::span<const Duration> latencies);

// The rule. `options` must pass check().
[[nodiscard]] Verdict judge(const WindowView& stable, const WindowView& canary,
                            const CanaryOptions& options);
// The same with the stable p99 found already (stable.latencies unread):
// for a caller that keeps it between calls, as CanaryJudge does.
[[nodiscard]] Verdict judge(const WindowView& stable,
                            const LatencyBaseline& baseline,
                            const WindowView& canary,
                            const CanaryOptions& options);

}  // namespace fnbus::mesh
