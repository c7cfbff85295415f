#include "fnbus/scaling/policy.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/chrono.h"
#include "fmt/format.h"

#include "fnbus/detail/saturating_time.hpp"

namespace fnbus::scaling {
namespace {

constexpr std::size_t kMaxWorkers = 1024;

class CallablePolicy final : public ScalingPolicy {
 public:
  CallablePolicy(std::string name,
                 absl::AnyInvocable<ScalingDecision(const LoadSnapshot&)> fn)
      : name_(std::move(name)), fn_(std::move(fn)) {}
  [[nodiscard]] std::string_view name() const noexcept override {
    return name_;
  }
  [[nodiscard]] ScalingDecision decide(const LoadSnapshot& load) override {
    return fn_(load);
  }

 private:
  std::string name_;
  absl::AnyInvocable<ScalingDecision(const LoadSnapshot&)> fn_;
};

std::vector<std::string> option_problems(const GovernorOptions& options) {
  std::vector<std::string> problems;
  if (options.min_workers < 1 || options.min_workers > kMaxWorkers) {
    problems.push_back(fmt::format("min_workers is {}; use 1 to {}",
                                   options.min_workers, kMaxWorkers));
  }
  if (options.max_workers < options.min_workers ||
      options.max_workers > kMaxWorkers) {
    problems.push_back(
        fmt::format("max_workers is {}; use min_workers ({}) to {}",
                    options.max_workers, options.min_workers, kMaxWorkers));
  }
  if (!(options.max_up_factor >= 1.0) || std::isinf(options.max_up_factor)) {
    problems.push_back(fmt::format(
        "max_up_factor is {}; use a finite number >= 1 (any value of at least "
        "max_workers lifts the factor limit)",
        options.max_up_factor));
  }
  if (!(options.max_down_fraction > 0.0 && options.max_down_fraction <= 1.0)) {
    problems.push_back(
        fmt::format("max_down_fraction is {}; use more than 0 and at most 1",
                    options.max_down_fraction));
  }
  if (options.down_stabilisation < Duration::zero()) {
    problems.push_back(fmt::format("down_stabilisation is {}; use 0 or more",
                                   options.down_stabilisation));
  }
  return problems;
}

// ceil(current * factor), at most `ceiling`. A huge factor (1e300 is
// valid) makes the product exceed SIZE_MAX or even overflow to +inf, and
// casting such a double to an integer is undefined: compare first.
std::size_t grown_by_factor(std::size_t current, double factor,
                            std::size_t ceiling) noexcept {
  const double grown = std::ceil(static_cast<double>(current) * factor);
  if (!(grown < static_cast<double>(ceiling))) return ceiling;  // NaN too
  return static_cast<std::size_t>(grown);
}

// current + step, at most `ceiling`: a step of SIZE_MAX means "no limit"
// and must not wrap round to a small size.
std::size_t grown_by_step(std::size_t current, std::size_t step,
                          std::size_t ceiling) noexcept {
  if (current >= ceiling || step >= ceiling - current) return ceiling;
  return current + step;
}

// What the down-stabilisation window remembers of a decision whose target
// came to `wanted` workers (rounded and clamped): the part it may hold,
// rounded up, at most `wanted` (NaN: all of it; <= 0: none).
std::size_t held_part(const ScalingDecision& decision,
                      std::size_t wanted) noexcept {
  const double part = decision.hold;
  if (std::isnan(part) || !(part < static_cast<double>(wanted))) return wanted;
  return part <= 0 ? 0 : static_cast<std::size_t>(std::ceil(part));
}

}  // namespace

std::unique_ptr<ScalingPolicy> make_policy(
    std::string name,
    absl::AnyInvocable<ScalingDecision(const LoadSnapshot&)> decide) {
  return std::make_unique<CallablePolicy>(std::move(name), std::move(decide));
}

absl::StatusOr<Governor> Governor::Create(GovernorOptions options) {
  if (auto problems = option_problems(options); !problems.empty()) {
    return absl::InvalidArgumentError("invalid GovernorOptions: " +
                                      absl::StrJoin(problems, "; "));
  }
  return Governor(options);
}

std::size_t Governor::window_max(TimePoint now, std::size_t recommendation) {
  recent_.emplace_back(now, recommendation);
  // Saturating: a window of Duration::max() (valid: "never forget")
  // reaches back past TimePoint::min() from any instant before the epoch.
  // down_stabilisation >= 0 (validated), so negating it cannot overflow.
  const TimePoint start =
      detail::saturating_add(now, -options_.down_stabilisation);
  while (!recent_.empty() && recent_.front().first < start) {
    recent_.pop_front();
  }
  std::size_t highest = 0;
  for (const auto& [when, size] : recent_) highest = std::max(highest, size);
  return highest;
}

GovernedDecision Governor::apply(const ScalingDecision& decision,
                                 const LoadSnapshot& load) {
  const std::size_t current =
      std::clamp(load.workers(), options_.min_workers, options_.max_workers);
  GovernedDecision out;
  out.reason = decision.reason;
  // A target that is no number of workers: keep the size, and say so.
  if (std::isnan(decision.target) || decision.target < 0) {
    ++invalid_;
    out.invalid = true;
    out.reason = "invalid-target";
    out.workers = current;
    (void)window_max(load.now, current);
    return out;
  }
  // Round up (a fraction of a worker is a worker) and clamp; +inf clamps
  // to the maximum.
  std::size_t wanted = options_.max_workers;
  // The cast below sees 0 <= target < max_workers (NaN and negatives left
  // above), so it is in range.
  if (decision.target < static_cast<double>(options_.max_workers)) {
    wanted = static_cast<std::size_t>(std::ceil(decision.target));
  }
  if (decision.target > static_cast<double>(options_.max_workers) ||
      wanted < options_.min_workers) {
    ++clamped_;
    out.clamped = true;
  }
  wanted = std::clamp(wanted, options_.min_workers, options_.max_workers);

  // The window remembers what was recommended, before rate limits (the
  // part the decision lets it hold).
  const std::size_t held = window_max(load.now, held_part(decision, wanted));
  std::size_t next = wanted;
  if (wanted > current && !decision.panic) {
    // Both bounds saturate at max_workers: the size cannot go beyond it
    // anyway, and huge options mean "no limit".
    const std::size_t limit = std::max(
        grown_by_factor(current, options_.max_up_factor, options_.max_workers),
        grown_by_step(current, options_.max_up_step, options_.max_workers));
    if (next > limit) {
      next = limit;
      out.rate_limited = true;
    }
  } else if (wanted < current) {
    if (held > wanted) {
      next = std::min(current, held);
      out.stabilised = next != wanted;
    }
    // In range: current <= 1024 and max_down_fraction in (0, 1].
    const auto max_drop = std::max<std::size_t>(
        1, static_cast<std::size_t>(static_cast<double>(current) *
                                    options_.max_down_fraction));
    if (next < current && current - next > max_drop) {
      next = current - max_drop;
      out.rate_limited = true;
    }
  }
  out.workers = std::clamp(next, options_.min_workers, options_.max_workers);
  return out;
}

}  // namespace fnbus::scaling
