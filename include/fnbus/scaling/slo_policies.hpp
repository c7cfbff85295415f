#pragma once

// Policies built on the response-time model (scaling/response_time_model.hpp):
//
// ErlangSlo -- R = the smallest c whose predicted P(queue wait > slo) is at
//   most epsilon for the estimated arrival rate (M/M/c with Whitt's
//   correction for the measured service-time variability), and at least
//   a / max_utilisation workers, and enough to drain the current backlog
//   within `drain` on top of the arrivals: c >= a + backlog * S / drain.
//
// SloGuard (the recommended default) -- ErlangSlo on the higher of the
//   fast and slow arrival rates (so it grows with the fast one and
//   shrinks only as the slow one falls: a short lull sheds no workers),
//   or on the last tick's rate when that is above them by more than
//   Poisson noise. A burst (that rate >= panic_ratio x the slow rate) or
//   a late queue (the oldest queued event has waited longer than the SLO)
//   is a panic: the target rises to enough workers that the queue clears
//   within one SLO on top of the arrivals (c >= a + backlog * S / slo),
//   and the governor's scale-up limit is lifted
//   (ScalingDecision::panic). The size the drain took is kept until the
//   backlog has been gone for `settle` (300 ms), then those workers go:
//   the governor's down-stabilisation window may hold only the staffing
//   of a rate that has lasted (ScalingDecision::hold: the lowest per-tick
//   rate of the last 5 ticks, with 25 % slack for noise), not a backlog
//   or a one-tick burst -- so after a stall, or a burst in a bus's first
//   ticks, the extra workers leave within a few ticks instead of a window.
//
// Both keep the current size until a service time has been measured.
// SloGuard keeps state between ticks (the last ticks' rates, when the
// queue was last late, the panic's size): one instance per controller,
// called once per tick, as ScalingPolicy requires.

#include <array>
#include <cstddef>
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
  // Measured / slow arrival rate that means a burst (> 1, finite).
  double panic_ratio = 2.0;
  // How long after the backlog is gone (the oldest queued event within
  // the SLO again) the pool keeps the size it took to drain it, before
  // the workers added for it go (>= 0).
  Duration settle = std::chrono::milliseconds(300);
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
  // Records the last tick's rate; returns the lowest per-tick rate of the
  // last kSustainTicks ticks, at most `rate` (0 until that many).
  double sustained_rate(double rate, double last);
  // Whether the backlog was late within the last `settle`.
  bool settling(const LoadSnapshot& load, bool late);

  static constexpr std::size_t kSustainTicks = 5;
  // A rate counts as lasting if no tick of the last kSustainTicks fell
  // below it by more than Poisson noise does (1 / kSustainSlack).
  static constexpr double kSustainSlack = 1.25;

  SloGuardOptions options_;
  std::unique_ptr<ErlangSlo> model_;
  std::array<double, kSustainTicks> recent_{};  // per-tick rates, a ring
  std::size_t next_recent_ = 0;
  std::size_t recent_count_ = 0;
  bool was_late_ = false;
  TimePoint last_late_{};
  double panic_target_ = 0;  // the last tick's target in a panic
};

}  // namespace fnbus::scaling
