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
  if (options.settle < Duration::zero()) {
    return absl::InvalidArgumentError(
        fmt::format("invalid SloGuardOptions: settle is {}; use 0 or more "
                    "(e.g. 300ms, three ticks)",
                    options.settle));
  }
  auto model = ErlangSlo::Create(options.slo);
  if (!model.ok()) return model.status();
  return std::unique_ptr<SloGuard>(new SloGuard(options, *std::move(model)));
}

namespace {

// `last` if it is above `rate` by more than 3 Poisson standard deviations
// of a tick's count, else `rate`.
double risen(const LoadSnapshot& load, double rate) {
  const double tick = seconds(load.tick);
  const double last = load.arrival_rate_last;
  if (!(tick > 0) || !(last > rate)) return rate;
  const double noise = 3 * std::sqrt(rate * tick) / tick;
  return last > rate + noise ? last : rate;
}

}  // namespace

double SloGuard::sustained_rate(double rate, double last) {
  recent_[next_recent_] = last;
  next_recent_ = (next_recent_ + 1) % recent_.size();
  if (recent_count_ < recent_.size()) ++recent_count_;
  if (recent_count_ < recent_.size()) return 0;  // too young to tell
  return std::min(
      rate, kSustainSlack * *std::min_element(recent_.begin(), recent_.end()));
}

bool SloGuard::settling(const LoadSnapshot& load, bool late) {
  if (late) {
    last_late_ = load.now;
    was_late_ = true;
  }
  return was_late_ && load.now - last_late_ <= options_.settle;
}

ScalingDecision SloGuard::decide(const LoadSnapshot& load) {
  if (!(load.service_time_mean > 0)) {
    return {static_cast<double>(load.workers()), "no-service-estimate"};
  }
  // Up with the fast rate, down with the slow one: a short lull does not
  // shed workers. (target_for adds the workers that drain the queue
  // within `drain`.)
  const double rate = std::max(load.arrival_rate_slow, load.arrival_rate_fast);
  // The last tick's rate, when it is above the averages by more than
  // Poisson noise (3 standard deviations): the load is rising faster than
  // they follow.
  const double measured = risen(load, rate);
  const double steady = model_->target_for(load, measured);
  // The governor's window may hold the staffing of a rate that has lasted
  // (kept up for the last ticks), not of a backlog or of one tick's burst.
  LoadSnapshot arrivals_only = load;
  arrivals_only.queue_depth = 0;
  const double hold = model_->target_for(
      arrivals_only, sustained_rate(rate, load.arrival_rate_last));
  const bool burst =
      measured >= options_.panic_ratio * load.arrival_rate_slow && measured > 0;
  const bool late = load.oldest_wait > seconds(options_.slo.wait_slo);
  const bool calming = settling(load, late);
  if (!burst && !late && !calming) {
    panic_target_ = 0;
    return {steady, "slo-guard", false, hold};
  }
  const double service = load.service_time_mean;
  // Workers that clear the queue within one SLO, on top of the arrivals.
  const auto drain = [&](double arrivals) {
    return arrivals * service + static_cast<double>(load.queue_depth) *
                                    service / seconds(options_.slo.wait_slo);
  };
  // The averages lag a burst; the last tick's rate (in `steady`) and the
  // queue do not.
  double target = steady;
  if (burst) target = std::max(target, drain(measured));
  if (late) target = std::max(target, drain(rate));
  // Until the backlog has been gone for `settle`, keep the size it took:
  // shedding workers at once would bring the queue back.
  if (late || calming) target = std::max(target, panic_target_);
  panic_target_ = target;
  return {target, "slo-guard-panic", /*panic=*/true, hold};
}

}  // namespace fnbus::scaling
