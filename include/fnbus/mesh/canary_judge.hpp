#pragma once

// The monitor of a versioned function: fed with the outcome of every call
// (record()), it keeps each live version's latest calls and says when the
// canary should be rolled back (the rule in canary_rule.hpp).
//
//   auto judge = fnbus::mesh::CanaryJudge::Create({.window_calls = 200});
//   (*judge)->set_versions(stable_id, canary_id);
//   if (auto verdict = (*judge)->record(route.version, ok, latency)) {
//     split.rollback_canary(canary_id);  // verdict->reason says why
//   }
//
// The rule is checked when a canary call is recorded: the failure test
// on every one (a few arithmetic operations), the latency test on every
// kLatencyCheckEvery-th (it copies the canary's window; the stable p99 it
// compares with is found again once a quarter of the stable window is
// new). Recording a stable call never fires: a canary with no traffic is
// not judged.
//
// Thread safety: every method from any thread; each takes the judge's
// mutex for a few counter updates (set_versions() and the latency test
// for O(window_calls)). Calls nothing outside itself.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/mesh/canary_rule.hpp"
#include "fnbus/mesh/version_split.hpp"

namespace fnbus::mesh {

class CanaryJudge {
 public:
  // The latency test runs on every this-many-th canary call.
  static constexpr std::uint64_t kLatencyCheckEvery = 10;

  // Every call recorded for one version, window or not.
  struct Totals {
    std::uint64_t calls = 0;
    std::uint64_t failures = 0;
  };

  // InvalidArgument as check(options) says.
  static absl::StatusOr<std::unique_ptr<CanaryJudge>> Create(
      CanaryOptions options);

  // Judges `canary` against `stable` from now on (canary kNoVersion: no
  // canary, nothing to judge). A version that stays live, in either role
  // (a promoted canary), keeps its window; a new one starts empty; one
  // that leaves loses it (its later calls count in totals() alone).
  // Thread safety: any thread (takes the mutex).
  void set_versions(VersionId stable, VersionId canary);

  // Records one call of `version` (from a Route; not kNoVersion) that
  // succeeded (`ok`) or failed, and took `latency`.
  // Returns the kRollback verdict the first time the rule fires for the
  // current canary (once per set_versions() naming it), else nothing.
  // Thread safety: any thread (takes the mutex).
  [[nodiscard]] std::optional<Verdict> record(VersionId version, bool ok,
                                              Duration latency);

  // The rule's verdict on the windows now, both tests.
  // Thread safety: any thread (takes the mutex).
  [[nodiscard]] Verdict verdict() const;
  // What record() counted for `version`; zeros for one it never saw.
  // Thread safety: any thread (takes the mutex).
  [[nodiscard]] Totals totals(VersionId version) const;

  [[nodiscard]] const CanaryOptions& options() const noexcept {
    return options_;
  }

 private:
  // The latest calls of one version, in a ring.
  class Window {
   public:
    Window(VersionId id, std::uint32_t size);
    void add(bool ok, Duration latency);
    // calls and failures; latencies go into `scratch` if `with_latencies`.
    [[nodiscard]] WindowView view(std::vector<Duration>& scratch,
                                  bool with_latencies) const;
    const VersionId version;

   private:
    struct Call {
      Duration latency;
      bool ok;
    };
    std::vector<Call> ring_;
    std::size_t next_ = 0;  // where the next call goes
    std::uint64_t calls_ = 0;
    std::uint64_t failures_ = 0;
  };

  explicit CanaryJudge(CanaryOptions options) : options_(options) {}
  // Under mutex_: the window of `version` if it is live, else null.
  Window* window_of(VersionId version) noexcept;
  [[nodiscard]] std::unique_ptr<Window> take_or_make(VersionId version);
  [[nodiscard]] Verdict verdict_locked(bool with_latencies);
  // Under mutex_: finds baseline_ again if it is stale.
  void refresh_baseline();

  const CanaryOptions options_;
  mutable std::mutex mutex_;
  // All guarded by mutex_.
  std::unique_ptr<Window> stable_;
  std::unique_ptr<Window> canary_;    // null: no canary
  std::uint64_t canary_records_ = 0;  // since set_versions() named it
  bool fired_ = false;                // record() returned its verdict
  std::vector<Totals> totals_;        // totals_[version - 1]
  // The stable p99 the latency test compares with, found over the window
  // of baseline_version_, and the stable calls recorded since.
  LatencyBaseline baseline_;
  VersionId baseline_version_ = kNoVersion;
  std::uint64_t stable_records_ = 0;
  // Reused for the latencies the rule reads.
  mutable std::vector<Duration> stable_scratch_;
  mutable std::vector<Duration> canary_scratch_;
};

}  // namespace fnbus::mesh
