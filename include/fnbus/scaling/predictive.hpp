#pragma once

// Predictive scaling, part three: a policy that staffs ahead of the load it
// expects. Predictive learns the load's seasonal shape (Forecaster), holds
// the application's announced surges (SurgeCalendar) and asks for
//
//   max(ErlangSlo(forecast upper quantile x announced multiplier),
//       SloGuard(measured load))
//
// so the forecast can only add workers: SloGuard, with its burst handling,
// stays the reactive safety net for load nobody predicted. See
// docs/scaling.md, "The predictive policy".

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/scaling/forecaster.hpp"
#include "fnbus/scaling/policy.hpp"
#include "fnbus/scaling/slo_policies.hpp"
#include "fnbus/scaling/surge_calendar.hpp"

namespace fnbus::scaling {

struct PredictiveOptions {
  // The reactive safety net, and the SLO the forecast is staffed for.
  SloGuardOptions guard;
  // The seasonal model (its name, origin, day, week and bucket).
  ForecasterOptions forecast;
  SurgeCalendarOptions surges;
  // How far ahead the forecast is staffed: the fast arrival average it
  // learns from lags the load by about its time constant (6 s), so this
  // covers that lag plus the time to start workers. >= 0.
  Duration horizon = std::chrono::seconds(10);
  // How long before an announced surge its workers are asked for: enough
  // for the governor's growth limit (the pool at most doubles per tick)
  // and the thread start. >= 0.
  Duration lead = std::chrono::seconds(1);
  // A forecast is used once every bucket of the horizon has learnt from
  // this many periods (days or weeks). >= 1.
  std::uint32_t min_periods = 1;
};

// Thread safety: decide() from the controller's thread; announce(),
// cancel() and save_forecast() from any thread (a mutex guards the
// forecaster and the calendar; decide() holds it for one forecast, well
// under a microsecond, and calls no user code under it).
class Predictive final : public ScalingPolicy {
 public:
  // InvalidArgument naming each bad option (its own and its parts').
  static absl::StatusOr<std::unique_ptr<Predictive>> Create(
      PredictiveOptions options = {});

  [[nodiscard]] std::string_view name() const noexcept override {
    return "predictive";
  }

  // Learns from `load` (except during an announced surge, which is not the
  // usual shape), forgets passed surges, and returns the larger of the
  // planned and the reactive target. Reasons: "forecast" or
  // "announced-surge" when the plan is larger, else SloGuard's reason
  // (its panic flag included).
  [[nodiscard]] ScalingDecision decide(const LoadSnapshot& load) override;

  // SurgeCalendar::announce and cancel.
  absl::Status announce(const ScheduledSurge& surge, TimePoint now);
  absl::Status cancel(TimePoint start);

  // Forecaster::save_file (of a copy: decide() does not wait for the
  // disk) and load_file (which replaces what was learnt so far: call it at
  // start-up). On error the forecast is unchanged.
  absl::Status save_forecast(const std::string& path) const;
  absl::Status load_forecast(const std::string& path);

  // The rate the last decide() planned for (forecast x multiplier, or 0
  // with neither), for logs and tests. Thread safety: the controller's
  // thread only.
  [[nodiscard]] double planned_rate() const noexcept { return planned_rate_; }

 private:
  Predictive(PredictiveOptions options, std::unique_ptr<SloGuard> guard,
             std::unique_ptr<ErlangSlo> model, Forecaster forecaster,
             SurgeCalendar calendar);
  // The arrival rate to plan for at `load.now`; 0 for none. Needs mutex_.
  double plan(const LoadSnapshot& load, bool& surge);

  PredictiveOptions options_;
  std::unique_ptr<SloGuard> guard_;
  std::unique_ptr<ErlangSlo> model_;
  mutable std::mutex mutex_;  // guards forecaster_ and calendar_
  Forecaster forecaster_;
  SurgeCalendar calendar_;
  // The slow arrival average before any announced surge came within the
  // lead: the "normal rate" a surge multiplies when there is no forecast.
  double normal_rate_ = 0;
  double planned_rate_ = 0;
};

}  // namespace fnbus::scaling
