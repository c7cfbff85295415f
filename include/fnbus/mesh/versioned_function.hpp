#pragma once

// The versions of one function: a VersionSplit that routes its calls, a
// CanaryJudge fed with their outcomes, and the automatic rollback that
// joins them (the canary's weight drops to 0 and it leaves the table when
// the judge's rule fires), with counters for the metrics.
//
//   auto fn = fnbus::mesh::VersionedFunction::Create(
//       "v1", {.max_failure_rate_margin = 0.05}, [&](const RollbackReport& r) {
//         sink(r);  // "v2 rolled back to v1: failure rate 0.21 > ..."
//       });
//   (*fn)->deploy_canary("v2", 0.1);
//   Route route = (*fn)->route(random.next());  // once per event
//   ... run the event on route.version ...
//   (*fn)->record(route, ok, latency);  // may roll back v2 by itself
//
// The caller keeps each version's handler and runs every routed call on
// the version in its Route, once, even if that version has left the
// table meanwhile (the calls in flight at a rollback or promotion finish
// where they were sent: none is lost or run twice).
//
// Thread safety: every method from any thread. route() is lock-free
// (VersionSplit); record() takes the judge's mutex; the changes and an
// automatic rollback take the function's mutex, so a manual promote and
// an automatic rollback of the same canary cannot both happen. The
// RollbackObserver is called on the thread whose record() fired the
// rule, after every mutex is released; it must not throw.

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/mesh/canary_judge.hpp"
#include "fnbus/mesh/canary_rule.hpp"
#include "fnbus/mesh/version_split.hpp"

namespace fnbus::mesh {

// An automatic rollback, as its observer hears it.
struct RollbackReport {
  VersionId canary = kNoVersion;
  std::string canary_label;
  VersionId stable = kNoVersion;  // takes every call again
  std::string stable_label;
  std::string reason;            // Verdict::reason
  std::uint64_t generation = 0;  // the table without the canary
};

using RollbackObserver = std::function<void(const RollbackReport&)>;

class VersionedFunction {
 public:
  // One version's counters, labelled for the metrics.
  struct VersionStats {
    VersionId id = kNoVersion;
    std::string label;
    std::uint64_t calls = 0;  // recorded, in flight at changes included
    std::uint64_t failures = 0;
    bool stable = false;  // live as the stable version
    bool canary = false;  // live as the canary
  };
  struct Stats {
    std::uint64_t deploys = 0;  // canaries deployed
    std::uint64_t promotions = 0;
    std::uint64_t rollbacks = 0;  // by rollback()
    std::uint64_t automatic_rollbacks = 0;
    SplitTable table;
    std::vector<VersionStats> versions;  // every version, by id
  };

  // InvalidArgument for an empty label or bad options (check()).
  // `observer`, if set, hears each automatic rollback.
  static absl::StatusOr<std::unique_ptr<VersionedFunction>> Create(
      std::string_view stable_label, CanaryOptions options,
      RollbackObserver observer = nullptr);

  // As VersionSplit's; the judge follows each change. Thread safety: any
  // thread (takes the function's mutex).
  absl::StatusOr<VersionId> deploy_canary(std::string_view label,
                                          double weight);
  absl::Status set_weight(double weight);
  absl::Status promote();
  absl::Status rollback();

  // As VersionSplit's: lock-free.
  [[nodiscard]] Route route(std::uint64_t draw) const noexcept {
    return split_->route(draw);
  }
  [[nodiscard]] Route route_key(std::string_view key) const noexcept {
    return split_->route_key(key);
  }

  // The outcome of a call routed by `route`. Returns whether it rolled
  // the canary back (then the observer has heard it).
  // Thread safety: any thread.
  bool record(const Route& route, bool ok, Duration latency);

  // Thread safety: any thread (takes the mutexes).
  [[nodiscard]] Stats stats() const;
  [[nodiscard]] const VersionSplit& split() const noexcept { return *split_; }
  [[nodiscard]] const CanaryJudge& judge() const noexcept { return *judge_; }

 private:
  VersionedFunction(std::unique_ptr<VersionSplit> split,
                    std::unique_ptr<CanaryJudge> judge,
                    RollbackObserver observer);
  // Under mutex_: tells the judge the split's live versions.
  void follow_split();
  // promote() or rollback(): `change`, counted in `counter` (a member
  // guarded by mutex_, which this takes).
  absl::Status end_canary(absl::Status (VersionSplit::*change)(),
                          std::uint64_t& counter);

  const std::unique_ptr<VersionSplit> split_;
  const std::unique_ptr<CanaryJudge> judge_;
  const RollbackObserver observer_;
  // Serialises the changes (the split's and the judge's together).
  mutable std::mutex mutex_;
  // All guarded by mutex_.
  std::uint64_t deploys_ = 0;
  std::uint64_t promotions_ = 0;
  std::uint64_t rollbacks_ = 0;
  std::uint64_t automatic_rollbacks_ = 0;
};

}  // namespace fnbus::mesh
