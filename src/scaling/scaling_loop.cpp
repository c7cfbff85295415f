#include "fnbus/scaling/scaling_loop.hpp"

#include <utility>

#include "fmt/format.h"

#include "fnbus/detail/exception_message.hpp"

namespace fnbus::scaling {

absl::StatusOr<ScalingLoop> ScalingLoop::Create(ScalingPolicy& policy,
                                                ScalingLoopOptions options) {
  auto governor = Governor::Create(options.governor);
  if (!governor.ok()) return governor.status();
  auto estimator =
      LoadEstimator::Create({.fast_window = options.fast_window,
                             .slow_window = options.slow_window,
                             .min_workers = options.governor.min_workers,
                             .max_workers = options.governor.max_workers});
  if (!estimator.ok()) return estimator.status();
  return ScalingLoop(policy, *std::move(governor), *std::move(estimator));
}

void ScalingLoop::start(const TickObservation& observation) {
  const LoadSnapshot load = estimator_.update(observation);
  // The starting size counts as a recommendation of the stabilisation
  // window: no shrink below it within the window's first stretch.
  (void)governor_.apply({static_cast<double>(load.workers()), "kept"}, load);
}

ScalingStep ScalingLoop::step(const TickObservation& observation) {
  ScalingStep step;
  step.load = estimator_.update(observation);
  try {
    step.decision = policy_->decide(step.load);
  } catch (...) {
    step.error = absl::InternalError(
        fmt::format("scaling policy {} threw ({}); the pool keeps its {} "
                    "workers; fix the policy",
                    policy_->name(), detail::current_exception_message(),
                    step.load.workers()));
    step.decision = {static_cast<double>(step.load.workers()), "policy-error"};
  }
  step.governed = governor_.apply(step.decision, step.load);
  return step;
}

}  // namespace fnbus::scaling
