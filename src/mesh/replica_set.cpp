#include "fnbus/mesh/replica_set.hpp"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"

namespace fnbus::mesh {

absl::StatusOr<std::unique_ptr<ReplicaSet>> ReplicaSet::Create(
    std::size_t replicas, ReplicaSetOptions options) {
  std::vector<std::string> problems;
  if (replicas < 1 || replicas > kMaxReplicas) {
    problems.push_back(fmt::format(
        "replicas must be >= 1 and <= {} (kMaxReplicas), got {}; give the "
        "function at least one instance",
        kMaxReplicas, replicas));
  }
  if (options.balancing != Balancing::kRoundRobin &&
      options.balancing != Balancing::kLeastOutstanding) {
    problems.push_back(
        "balancing is not a Balancing value; use kRoundRobin or "
        "kLeastOutstanding");
  }
  if (options.outlier) {
    if (absl::Status status = check(*options.outlier); !status.ok()) {
      problems.emplace_back(status.message());
    }
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError("ReplicaSet: " +
                                      absl::StrJoin(problems, "; "));
  }
  std::unique_ptr<OutlierDetector> detector;
  if (options.outlier) {
    auto created = OutlierDetector::Create(replicas, *options.outlier);
    if (!created.ok()) return created.status();  // checked above: never
    detector = *std::move(created);
  }
  return std::unique_ptr<ReplicaSet>(new ReplicaSet(
      replicas, make_balancer(options.balancing), std::move(detector)));
}

ReplicaSet::ReplicaSet(std::size_t replicas,
                       std::unique_ptr<LoadBalancer> balancer,
                       std::unique_ptr<OutlierDetector> detector)
    : loads_(replicas),
      balancer_(std::move(balancer)),
      detector_(std::move(detector)) {}

absl::StatusOr<ReplicaSet::Lease> ReplicaSet::pick(
    TimePoint now, Random& random, std::optional<std::size_t> avoid) {
  if (detector_) detector_->tick(now);
  ReplicaMask candidates = available();
  if (avoid && *avoid < size()) {
    const ReplicaMask others = candidates & ~replica_bit(*avoid);
    if (others != 0) candidates = others;
  }
  const std::optional<std::size_t> replica = balancer_->pick(
      {.available = candidates, .loads = loads_, .random = random});
  if (!replica) {
    return absl::UnavailableError(
        "ReplicaSet: no replica available (every one is ejected); retry "
        "after OutlierOptions::base_ejection, or lower max_ejected_share");
  }
  return Lease(detector_.get(), loads_.begin(*replica));
}

}  // namespace fnbus::mesh
