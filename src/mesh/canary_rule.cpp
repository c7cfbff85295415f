#include "fnbus/mesh/canary_rule.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"

namespace fnbus::mesh {
namespace {

// The latency test's tail: p99 = 1% of calls above it.
constexpr double kTail = 0.01;

std::string format_latency(double nanos) {
  if (nanos >= 1e6) return fmt::format("{:.2f} ms", nanos / 1e6);
  if (nanos >= 1e3) return fmt::format("{:.2f} us", nanos / 1e3);
  return fmt::format("{:.0f} ns", nanos);
}

double rate(std::uint64_t part, std::uint64_t whole) {
  return whole == 0 ? 0.0
                    : static_cast<double>(part) / static_cast<double>(whole);
}

// A one-sided score test of "the canary fails more often than the stable
// version plus the margin": its standard error is taken at that boundary
// (canary rate = stable + margin), not at the rates seen, as in Farrington
// and Manning's test for a difference of proportions (1990). The stable
// rate is smoothed with one success and one failure (Agresti-Caffo), so a
// stable version with no failures yet is not taken as exactly 0.
bool failures_fire(const WindowView& stable, const WindowView& canary,
                   const CanaryOptions& options) {
  const auto n_c = static_cast<double>(canary.calls);
  const double n_s = static_cast<double>(stable.calls) + 2;
  const double p_c = static_cast<double>(canary.failures) / n_c;
  const double p_s = (static_cast<double>(stable.failures) + 1) / n_s;
  const double boundary = std::min(1.0, p_s + options.max_failure_rate_margin);
  const double se =
      std::sqrt(boundary * (1 - boundary) / n_c + p_s * (1 - p_s) / n_s);
  return p_c - p_s - options.max_failure_rate_margin > options.evidence * se;
}

// The Wilson score interval's lower bound of k successes in n (n > 0).
double wilson_lower(double k, double n, double z) {
  const double p = k / n;
  const double z2 = z * z;
  const double centre = p + z2 / (2 * n);
  const double spread = z * std::sqrt(p * (1 - p) / n + z2 / (4 * n * n));
  return (centre - spread) / (1 + z2 / n);
}

}  // namespace

absl::Status check(const CanaryOptions& options) {
  std::vector<std::string> problems;
  // Written so that NaN fails each comparison.
  if (!(options.max_failure_rate_margin >= 0.0 &&
        options.max_failure_rate_margin <= 1.0)) {
    problems.push_back(fmt::format(
        "max_failure_rate_margin is {}; use a rate in [0, 1] (0.05: roll "
        "back at 5 points above the stable version; 1: never on failures)",
        options.max_failure_rate_margin));
  }
  if (!(options.max_p99_ratio >= 1.0)) {
    problems.push_back(fmt::format(
        "max_p99_ratio is {}; use at least 1 (1.5: roll back at a p99 50% "
        "above the stable version's), or infinity to never roll back on "
        "latency",
        options.max_p99_ratio));
  }
  if (options.window_calls < 1 || options.window_calls > 1'000'000) {
    problems.push_back(fmt::format(
        "window_calls is {}; use 1 to 1000000 (the latest calls of each "
        "version the rule looks at)",
        options.window_calls));
  } else if (std::isfinite(options.max_p99_ratio) &&
             options.window_calls < kMinLatencyCalls) {
    problems.push_back(fmt::format(
        "window_calls is {}, too few for a p99; use at least {}, or set "
        "max_p99_ratio to infinity to judge failures alone",
        options.window_calls, kMinLatencyCalls));
  }
  if (options.min_calls < 1 || options.min_calls > options.window_calls) {
    problems.push_back(fmt::format(
        "min_calls is {}; use 1 to window_calls ({}): the canary's calls "
        "before it is judged",
        options.min_calls, options.window_calls));
  }
  if (!(options.evidence > 0.0 && std::isfinite(options.evidence))) {
    problems.push_back(fmt::format(
        "evidence is {}; use a finite number of standard errors above 0 "
        "(2.5 by default; higher: fewer false rollbacks, later detection)",
        options.evidence));
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError("CanaryOptions: " +
                                      absl::StrJoin(problems, "; "));
  }
  return absl::OkStatus();
}

std::string_view to_string(Verdict::Kind kind) noexcept {
  switch (kind) {
    case Verdict::kTooFewCalls:
      return "too_few_calls";
    case Verdict::kHealthy:
      return "healthy";
    case Verdict::kRollback:
      return "rollback";
  }
  return "unknown";
}

Duration p99(std::span<const Duration> latencies) {
  if (latencies.empty()) return Duration::zero();
  std::vector<Duration> sorted(latencies.begin(), latencies.end());
  // The ceil(0.99 n)-th smallest, 1-based.
  const std::size_t rank = (sorted.size() * 99 + 99) / 100;
  const auto nth = sorted.begin() + static_cast<std::ptrdiff_t>(rank - 1);
  std::nth_element(sorted.begin(), nth, sorted.end());
  return *nth;
}

LatencyBaseline baseline_of(std::span<const Duration> latencies) {
  return LatencyBaseline{.p99 = p99(latencies), .successes = latencies.size()};
}

Verdict judge(const WindowView& stable, const WindowView& canary,
              const CanaryOptions& options) {
  return judge(stable, baseline_of(stable.latencies), canary, options);
}

Verdict judge(const WindowView& stable, const LatencyBaseline& baseline,
              const WindowView& canary, const CanaryOptions& options) {
  if (canary.calls < options.min_calls) return {};
  if (failures_fire(stable, canary, options)) {
    return Verdict{
        .kind = Verdict::kRollback,
        .reason = fmt::format(
            "failure rate {:.3f} > stable {:.3f} + margin {:.3f} over {} "
            "canary and {} stable calls",
            rate(canary.failures, canary.calls),
            rate(stable.failures, stable.calls),
            options.max_failure_rate_margin, canary.calls, stable.calls)};
  }
  if (!std::isfinite(options.max_p99_ratio) ||
      baseline.successes < kMinLatencyCalls ||
      canary.latencies.size() < kMinLatencyCalls) {
    return Verdict{.kind = Verdict::kHealthy, .reason = {}};
  }
  const auto stable_p99 = static_cast<double>(baseline.p99.count());
  const double bound = options.max_p99_ratio * stable_p99;
  const auto slower = static_cast<std::uint64_t>(std::count_if(
      canary.latencies.begin(), canary.latencies.end(),
      [bound](Duration d) { return static_cast<double>(d.count()) > bound; }));
  const auto n = static_cast<double>(canary.latencies.size());
  if (!(wilson_lower(static_cast<double>(slower), n, options.evidence) >
        kTail)) {
    return Verdict{.kind = Verdict::kHealthy, .reason = {}};
  }
  return Verdict{
      .kind = Verdict::kRollback,
      .reason = fmt::format(
          "p99 latency {} > {} x stable p99 {}: {} of {} canary calls "
          "slower than {}",
          format_latency(static_cast<double>(p99(canary.latencies).count())),
          options.max_p99_ratio, format_latency(stable_p99), slower,
          canary.latencies.size(), format_latency(bound))};
}

}  // namespace fnbus::mesh
