#pragma once

// Policies built on the response-time model (scaling/response_time_model.hpp):
//
// ErlangSlo -- R = the smallest c whose predicted P(queue wait > slo) is at
//   most epsilon for the estimated arrival rate (M/M/c with Whitt's
//   correction for the measured service-time variability), and at least
//   a / max_utilisation workers, and enough to drain the current backlog
//   within `drain` on top of the arrivals: c >= a + backlog * S / drain.
//
// SloGuard (the recommended default) -- ErlangSlo on the slow (stable)
//   arrival rate, raised to ErlangSlo on the fast rate while a burst is on
//   (fast rate >= panic_ratio x slow rate, or the oldest queued event has
//   waited longer than the SLO), and then also to enough workers that the
//   queue clears within one SLO: c >= a_fast + backlog * S / slo (the
//   averages lag a burst; the queue does not). In a burst it never
//   shrinks and asks the governor to lift its scale-up rate limit
//   (ScalingDecision::panic). Scale-down follows the slow rate, so a short
//   lull does not shed workers.
//
// Both keep the current size until a service time has been measured.

#include <memory>

#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/scaling/policy.hpp"

namespace fnbus::scaling {

struct ErlangSloOptions {
  Duration wait_slo = std::chrono::milliseconds(20);  // > 0
  double epsilon = 0.01;                     // allowed P(wait > slo), in (0, 1)
  double max_utilisation = 0.95;             // in (0, 1]
  Duration drain = std::chrono::seconds(1);  // backlog drain time, > 0
};

class ErlangSlo final : public ScalingPolicy {
 public:
  // InvalidArgument naming each bad option.
  static absl::StatusOr<std::unique_ptr<ErlangSlo>> Create(
      ErlangSloOptions options = {});

  [[nodiscard]] std::string_view name() const noexcept override {
    return "erlang-slo";
  }
  [[nodiscard]] ScalingDecision decide(const LoadSnapshot& load) override;

  // The target for an arrival rate (what decide() computes on the slow
  // rate); used by SloGuard on the fast rate too.
  [[nodiscard]] double target_for(const LoadSnapshot& load,
                                  double arrival_rate) const;

 private:
  explicit ErlangSlo(ErlangSloOptions options) : options_(options) {}
  ErlangSloOptions options_;
};

struct SloGuardOptions {
  ErlangSloOptions slo;
  double panic_ratio = 2.0;  // fast / slow arrival rate that means a burst
};

class SloGuard final : public ScalingPolicy {
 public:
  static absl::StatusOr<std::unique_ptr<SloGuard>> Create(
      SloGuardOptions options = {});

  [[nodiscard]] std::string_view name() const noexcept override {
    return "slo-guard";
  }
  [[nodiscard]] ScalingDecision decide(const LoadSnapshot& load) override;

 private:
  SloGuard(SloGuardOptions options, std::unique_ptr<ErlangSlo> model)
      : options_(options), model_(std::move(model)) {}
  SloGuardOptions options_;
  std::unique_ptr<ErlangSlo> model_;
};

}  // namespace fnbus::scaling
