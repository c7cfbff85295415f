#include "fnbus/scaling/predictive.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/chrono.h"
#include "fmt/format.h"

namespace fnbus::scaling {

absl::StatusOr<std::unique_ptr<Predictive>> Predictive::Create(
    PredictiveOptions options) {
  std::vector<std::string> problems;
  if (options.horizon < Duration::zero()) {
    problems.push_back(
        fmt::format("horizon is {}; use 0 or more",
                    std::chrono::duration<double>(options.horizon)));
  }
  if (options.lead < Duration::zero()) {
    problems.push_back(
        fmt::format("lead is {}; use 0 or more",
                    std::chrono::duration<double>(options.lead)));
  }
  if (options.min_periods < 1) {
    problems.push_back("min_periods is 0; use 1 or more");
  }
  auto guard = SloGuard::Create(options.guard);
  auto model = ErlangSlo::Create(options.guard.slo);
  auto forecaster = Forecaster::Create(options.forecast);
  auto calendar = SurgeCalendar::Create(options.surges);
  for (const absl::Status& part :
       {guard.status(), forecaster.status(), calendar.status()}) {
    if (!part.ok()) problems.emplace_back(part.message());
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError("invalid PredictiveOptions: " +
                                      absl::StrJoin(problems, "; "));
  }
  return std::unique_ptr<Predictive>(
      new Predictive(std::move(options), *std::move(guard), *std::move(model),
                     *std::move(forecaster), *std::move(calendar)));
}

Predictive::Predictive(PredictiveOptions options,
                       std::unique_ptr<SloGuard> guard,
                       std::unique_ptr<ErlangSlo> model, Forecaster forecaster,
                       SurgeCalendar calendar)
    : options_(std::move(options)),
      guard_(std::move(guard)),
      model_(std::move(model)),
      forecaster_(std::move(forecaster)),
      calendar_(std::move(calendar)) {}

double Predictive::plan(const LoadSnapshot& load, bool& surge) {
  // An announced surge is not the usual shape: do not learn it.
  if (calendar_.multiplier_at(load.now) == 1.0) forecaster_.observe(load);
  calendar_.forget_passed(load.now);
  const double multiplier = calendar_.peak_multiplier(load.now, options_.lead);
  surge = multiplier != 1.0;
  if (!surge) normal_rate_ = load.arrival_rate_slow;
  const RateForecast forecast =
      forecaster_.forecast(load.now, options_.horizon);
  const bool usable = forecast.periods >= options_.min_periods;
  if (usable) return forecast.upper * multiplier;
  return surge ? normal_rate_ * multiplier : 0.0;
}

ScalingDecision Predictive::decide(const LoadSnapshot& load) {
  const ScalingDecision reactive = guard_->decide(load);
  bool surge = false;
  {
    std::lock_guard lock(mutex_);
    planned_rate_ = plan(load, surge);
  }
  if (!(planned_rate_ > 0)) return reactive;
  const double planned = model_->target_for(load, planned_rate_);
  if (!(planned > reactive.target)) return reactive;
  return {planned, surge ? "announced-surge" : "forecast", reactive.panic};
}

absl::Status Predictive::announce(const ScheduledSurge& surge, TimePoint now) {
  std::lock_guard lock(mutex_);
  return calendar_.announce(surge, now);
}

absl::Status Predictive::cancel(TimePoint start) {
  std::lock_guard lock(mutex_);
  return calendar_.cancel(start);
}

absl::Status Predictive::save_forecast(const std::string& path) const {
  // Copy under the lock (18 KiB by default), write without it: decide()
  // never waits for the disk.
  std::unique_lock lock(mutex_);
  const Forecaster copy = forecaster_;
  lock.unlock();
  return copy.save_file(path);
}

absl::Status Predictive::load_forecast(const std::string& path) {
  auto loaded = Forecaster::Create(options_.forecast);
  if (!loaded.ok()) return loaded.status();
  if (absl::Status status = loaded->load_file(path); !status.ok()) {
    return status;
  }
  std::lock_guard lock(mutex_);
  forecaster_ = *std::move(loaded);
  return absl::OkStatus();
}

}  // namespace fnbus::scaling
