#include "fnbus/scaling/slo_policies.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/chrono.h"
#include "fmt/format.h"

#include "fnbus/scaling/response_time_model.hpp"

namespace fnbus::scaling {
namespace {

double seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

std::vector<std::string> problems_of(const ErlangSloOptions& options) {
  std::vector<std::string> problems;
  if (options.wait_slo <= Duration::zero()) {
    problems.push_back(
        fmt::format("wait_slo is {}; use more than 0", options.wait_slo));
  }
  if (!(options.epsilon > 0 && options.epsilon < 1)) {
    problems.push_back(fmt::format(
        "epsilon is {}; use a probability between 0 and 1 (e.g. 0.01)",
        options.epsilon));
  }
  if (!(options.max_utilisation > 0 && options.max_utilisation <= 1)) {
    problems.push_back(
        fmt::format("max_utilisation is {}; use more than 0 and at most 1",
                    options.max_utilisation));
  }
  if (options.drain <= Duration::zero()) {
    problems.push_back(
        fmt::format("drain is {}; use more than 0", options.drain));
  }
  return problems;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ErlangSlo>> ErlangSlo::Create(
    ErlangSloOptions options) {
  if (auto problems = problems_of(options); !problems.empty()) {
    return absl::InvalidArgumentError("invalid ErlangSloOptions: " +
                                      absl::StrJoin(problems, "; "));
  }
  return std::unique_ptr<ErlangSlo>(new ErlangSlo(options));
}

double ErlangSlo::target_for(const LoadSnapshot& load,
                             double arrival_rate) const {
  const double service = load.service_time_mean;
  if (!(service > 0) || !std::isfinite(arrival_rate) || arrival_rate < 0) {
    return static_cast<double>(load.workers());  // nothing to go by yet
  }
  const double scv =
      std::isfinite(load.service_time_scv) && load.service_time_scv >= 0
          ? load.service_time_scv
          : 1.0;
  auto model = ResponseTimeModel::Create({arrival_rate, 1.0 / service, scv});
  if (!model.ok()) return static_cast<double>(load.workers());
  const double a = model->offered_load();
  const std::size_t max_workers = std::max<std::size_t>(1, load.max_workers);
  auto staffing = model->smallest_workers_for_wait_slo(
      seconds(options_.wait_slo), options_.epsilon, max_workers);
  const double for_slo = staffing.ok() ? static_cast<double>(staffing->workers)
                                       : static_cast<double>(max_workers);
  const double for_utilisation = a / options_.max_utilisation;
  const double for_backlog = a + static_cast<double>(load.queue_depth) *
                                     service / seconds(options_.drain);
  return std::max({for_slo, for_utilisation, for_backlog});
}

ScalingDecision ErlangSlo::decide(const LoadSnapshot& load) {
  if (!(load.service_time_mean > 0)) {
    return {static_cast<double>(load.workers()), "no-service-estimate"};
  }
  return {target_for(load, load.arrival_rate_slow), "erlang-slo"};
}

absl::StatusOr<std::unique_ptr<SloGuard>> SloGuard::Create(
    SloGuardOptions options) {
  if (!(options.panic_ratio > 1) || !std::isfinite(options.panic_ratio)) {
    return absl::InvalidArgumentError(fmt::format(
        "invalid SloGuardOptions: panic_ratio is {}; use a finite number "
        "above 1 (e.g. 2)",
        options.panic_ratio));
  }
  auto model = ErlangSlo::Create(options.slo);
  if (!model.ok()) return model.status();
  return std::unique_ptr<SloGuard>(new SloGuard(options, *std::move(model)));
}

ScalingDecision SloGuard::decide(const LoadSnapshot& load) {
  if (!(load.service_time_mean > 0)) {
    return {static_cast<double>(load.workers()), "no-service-estimate"};
  }
  const double stable = model_->target_for(load, load.arrival_rate_slow);
  const bool burst =
      load.arrival_rate_fast >= options_.panic_ratio * load.arrival_rate_slow &&
      load.arrival_rate_fast > 0;
  const bool late = load.oldest_wait > seconds(options_.slo.wait_slo);
  if (!burst && !late) return {stable, "slo-guard"};
  const double fast = model_->target_for(load, load.arrival_rate_fast);
  // The averages lag a burst; the queue does not: enough workers that the
  // backlog clears within one SLO, on top of the fast arrival rate.
  const double service = load.service_time_mean;
  const double backlog = load.arrival_rate_fast * service +
                         static_cast<double>(load.queue_depth) * service /
                             seconds(options_.slo.wait_slo);
  // In a burst never shrink: the slow rate has not caught up yet.
  const double target =
      std::max({stable, fast, backlog, static_cast<double>(load.workers())});
  return {target, "slo-guard-panic", /*panic=*/true};
}

}  // namespace fnbus::scaling
