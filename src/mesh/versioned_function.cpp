#include "fnbus/mesh/versioned_function.hpp"

#include <optional>
#include <utility>

namespace fnbus::mesh {

absl::StatusOr<std::unique_ptr<VersionedFunction>> VersionedFunction::Create(
    std::string_view stable_label, CanaryOptions options,
    RollbackObserver observer) {
  absl::StatusOr<std::unique_ptr<VersionSplit>> split =
      VersionSplit::Create(stable_label);
  if (!split.ok()) return split.status();
  absl::StatusOr<std::unique_ptr<CanaryJudge>> judge =
      CanaryJudge::Create(options);
  if (!judge.ok()) return judge.status();
  return std::unique_ptr<VersionedFunction>(new VersionedFunction(
      *std::move(split), *std::move(judge), std::move(observer)));
}

VersionedFunction::VersionedFunction(std::unique_ptr<VersionSplit> split,
                                     std::unique_ptr<CanaryJudge> judge,
                                     RollbackObserver observer)
    : split_(std::move(split)),
      judge_(std::move(judge)),
      observer_(std::move(observer)) {
  std::lock_guard lock(mutex_);
  follow_split();
}

void VersionedFunction::follow_split() {
  const SplitTable table = split_->table();
  judge_->set_versions(table.stable, table.canary);
}

absl::StatusOr<VersionId> VersionedFunction::deploy_canary(
    std::string_view label, double weight) {
  std::lock_guard lock(mutex_);
  // The judge learns the canary before any call can be routed to it, so
  // that its first outcomes count in its window.
  const SplitTable table = split_->table();
  if (table.canary == kNoVersion) {
    judge_->set_versions(table.stable, split_->next_version());
  }
  absl::StatusOr<VersionId> id = split_->deploy_canary(label, weight);
  if (id.ok()) ++deploys_;
  follow_split();
  return id;
}

absl::Status VersionedFunction::set_weight(double weight) {
  std::lock_guard lock(mutex_);
  return split_->set_weight(weight);
}

absl::Status VersionedFunction::promote() {
  return end_canary(&VersionSplit::promote, promotions_);
}

absl::Status VersionedFunction::rollback() {
  return end_canary(&VersionSplit::rollback, rollbacks_);
}

absl::Status VersionedFunction::end_canary(
    absl::Status (VersionSplit::*change)(), std::uint64_t& counter) {
  std::lock_guard lock(mutex_);
  absl::Status status = (*split_.*change)();
  if (status.ok()) ++counter;
  follow_split();
  return status;
}

bool VersionedFunction::record(const Route& route, bool ok, Duration latency) {
  std::optional<Verdict> verdict = judge_->record(route.version, ok, latency);
  if (!verdict) [[likely]] {
    return false;
  }
  RollbackReport report;
  {
    std::lock_guard lock(mutex_);
    // The canary may have been promoted or rolled back since the verdict:
    // then there is nothing to do.
    if (!split_->rollback_canary(route.version).ok()) return false;
    ++automatic_rollbacks_;
    follow_split();
    const SplitTable table = split_->table();
    report = RollbackReport{.canary = route.version,
                            .canary_label = split_->label(route.version),
                            .stable = table.stable,
                            .stable_label = split_->label(table.stable),
                            .reason = std::move(verdict->reason),
                            .generation = table.generation};
  }
  if (observer_) observer_(report);
  return true;
}

VersionedFunction::Stats VersionedFunction::stats() const {
  std::lock_guard lock(mutex_);
  Stats stats{.deploys = deploys_,
              .promotions = promotions_,
              .rollbacks = rollbacks_,
              .automatic_rollbacks = automatic_rollbacks_,
              .table = split_->table(),
              .versions = {}};
  for (VersionId id = 1; id < split_->next_version(); ++id) {
    const CanaryJudge::Totals totals = judge_->totals(id);
    stats.versions.push_back(VersionStats{.id = id,
                                          .label = split_->label(id),
                                          .calls = totals.calls,
                                          .failures = totals.failures,
                                          .stable = id == stats.table.stable,
                                          .canary = id == stats.table.canary});
  }
  return stats;
}

}  // namespace fnbus::mesh
