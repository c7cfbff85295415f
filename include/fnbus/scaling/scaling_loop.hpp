#pragma once

// ScalingLoop: one controller tick's decision, without I/O -- the
// LoadEstimator turns an observation into a LoadSnapshot, the policy
// decides (an exception keeps the size), the Governor bounds the answer.
// The live Autoscaler and the policy lab's simulator both run this, so the
// lab scores exactly what production runs. Deterministic; not thread-safe
// (one controller owns it).

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/scaling/estimator.hpp"
#include "fnbus/scaling/policy.hpp"

namespace fnbus::scaling {

struct ScalingLoopOptions {
  GovernorOptions governor;
  // Time constants of the arrival-rate averages (see EstimatorOptions).
  Duration fast_window = std::chrono::seconds(6);
  Duration slow_window = std::chrono::seconds(60);
};

// What one step saw and decided.
struct ScalingStep {
  LoadSnapshot load;          // what the policy saw
  ScalingDecision decision;   // its answer ("policy-error" if it threw)
  GovernedDecision governed;  // the size to resize to
  absl::Status error;         // why the policy failed; OK if it did not
};

class ScalingLoop {
 public:
  // InvalidArgument for bad governor bounds or windows.
  static absl::StatusOr<ScalingLoop> Create(ScalingPolicy& policy,
                                            ScalingLoopOptions options);

  // The first observation: sets the estimator's baseline counts and
  // records the current size in the governor's down-stabilisation window
  // (as HPA does at start); asks the policy nothing.
  void start(const TickObservation& observation);
  // One tick: estimate, decide, govern.
  ScalingStep step(const TickObservation& observation);

  [[nodiscard]] const Governor& governor() const noexcept { return governor_; }
  [[nodiscard]] ScalingPolicy& policy() const noexcept { return *policy_; }

 private:
  ScalingLoop(ScalingPolicy& policy, Governor governor, LoadEstimator estimator)
      : policy_(&policy),
        governor_(std::move(governor)),
        estimator_(std::move(estimator)) {}

  ScalingPolicy* policy_;
  Governor governor_;
  LoadEstimator estimator_;
};

}  // namespace fnbus::scaling
