#pragma once

// Outlier ejection for the replicas of one function (Envoy's consecutive
// failure detector): a replica whose last `consecutive_failures` calls
// all failed is ejected -- no balancer picks it -- for a cool-down, then
// returned. Its events fail over to the replicas still available.
//
//   auto detector = fnbus::mesh::OutlierDetector::Create(
//       4, {.consecutive_failures = 5, .base_ejection = 30s});
//   (*detector)->tick(clock.now());        // returns the cooled-down ones
//   ReplicaMask pickable = (*detector)->available();
//   ... call replica i ...
//   ok ? (*detector)->record_success(i)
//      : (*detector)->record_failure(i, clock.now());
//
// The k-th ejection of a replica in a row (with no success since its last
// return) lasts min(max_ejection, k * base_ejection): one that fails again
// at once is kept out longer each time. A returned replica needs a fresh
// streak of failures to be ejected again.
//
// At most max_ejected(replicas, max_ejected_share) replicas are ejected at
// once, and never all of them: an ejection that would exceed it is refused
// (counted) and retried at the replica's next failure, while the streak
// lasts. So available() always holds at least one replica.
//
// Made of a monitor per replica (its failure streak, fed with outcomes)
// and the detector's decisions: ejections at once, on the failure that
// completes a streak; returns on tick(now), which the owner calls on its
// controller tick or before each pick (ReplicaSet does the latter: cheap
// while no return is due). Time is passed in (the bus clock), so a
// testing::ManualClock drives it.
//
// Thread safety: every method from any thread. record_success() and
// available() are lock-free (a relaxed load, and a store only when a
// streak ends); record_failure() is lock-free until a streak is complete,
// then takes the detector's mutex; tick() takes it only when a return is
// due. Not guaranteed: "consecutive" counts outcomes in the order they
// are recorded, so concurrent calls on one replica finishing together are
// counted in either order; a pick that read available() just before an
// ejection may still send a call to the ejected replica (as if it had
// come a moment earlier), and that call's failure counts towards nothing.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/detail/config.hpp"
#include "fnbus/mesh/replica_mask.hpp"

namespace fnbus::mesh {

struct OutlierOptions {
  // Failures in a row that eject a replica: >= 1.
  std::uint32_t consecutive_failures = 5;
  // The first ejection's cool-down: > 0.
  Duration base_ejection = std::chrono::seconds(30);
  // The longest cool-down: >= base_ejection.
  Duration max_ejection = std::chrono::seconds(300);
  // The largest share of the replicas ejected at once: in [0, 1] (0: none
  // is ever ejected). One replica always stays, whatever the share.
  double max_ejected_share = 0.5;
};

// OK, or InvalidArgument naming every bad option and what to use instead.
[[nodiscard]] absl::Status check(const OutlierOptions& options);

// How many of `replicas` may be ejected at once: floor(share * replicas),
// at most replicas - 1. Pure.
[[nodiscard]] std::size_t max_ejected(std::size_t replicas,
                                      double share) noexcept;
// The cool-down of a replica's `times`-th ejection in a row (>= 1):
// min(max_ejection, times * base_ejection), without overflow. Pure.
[[nodiscard]] Duration ejection_time(const OutlierOptions& options,
                                     std::uint32_t times) noexcept;

class OutlierDetector {
 public:
  struct Stats {
    std::uint64_t ejections = 0;  // replicas ejected
    std::uint64_t returns = 0;    // replicas returned after a cool-down
    // Ejections refused because max_ejected() replicas were out already.
    std::uint64_t refused = 0;
    std::size_t ejected = 0;  // ejected now
  };

  // InvalidArgument for replicas outside [1, kMaxReplicas] or bad options
  // (every problem at once).
  static absl::StatusOr<std::unique_ptr<OutlierDetector>> Create(
      std::size_t replicas, OutlierOptions options);
  OutlierDetector(const OutlierDetector&) = delete;
  OutlierDetector& operator=(const OutlierDetector&) = delete;

  // The replicas not ejected now: never empty.
  // Thread safety: any thread, lock-free (one relaxed load).
  [[nodiscard]] ReplicaMask available() const noexcept {
    // relaxed: the mask publishes nothing; every value it takes has at
    // least one bit set, so any value read is a valid set to pick from.
    return available_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] bool ejected(std::size_t replica) const noexcept {
    return (available() & replica_bit(replica)) == 0;
  }

  // A call on `replica` (< replicas()) succeeded: its streak ends.
  // Thread safety: any thread, lock-free.
  void record_success(std::size_t replica) noexcept;
  // A call on `replica` failed at `now`: ejects it if that completes a
  // streak and max_ejected() allows. A failure of an ejected replica (a
  // call picked before its ejection) counts towards nothing.
  // Thread safety: any thread; takes the mutex once a streak is complete.
  void record_failure(std::size_t replica, TimePoint now);
  // Returns every ejected replica whose cool-down has ended by `now`;
  // returns how many. Cheap (one relaxed load) while none is due.
  // Thread safety: any thread; takes the mutex when one is due.
  std::size_t tick(TimePoint now);

  // Thread safety: any thread (takes the mutex).
  [[nodiscard]] Stats stats() const;
  [[nodiscard]] std::size_t replicas() const noexcept { return replicas_; }
  [[nodiscard]] std::size_t max_ejected() const noexcept {
    return max_ejected_;
  }
  [[nodiscard]] const OutlierOptions& options() const noexcept {
    return options_;
  }

 private:
  // Set in a monitor's streak while the replica has had no success since
  // its last return (so its next ejection is one more in a row).
  static constexpr std::uint64_t kReturned = std::uint64_t{1} << 63;

  struct alignas(detail::kCacheLineSize) Monitor {
    // Failures in a row (low 63 bits) | kReturned. Added to by
    // record_failure(), zeroed by record_success() and at an ejection,
    // set to kReturned at a return; from any thread. Relaxed: the count
    // orders nothing; the decisions it leads to are made under mutex_.
    std::atomic<std::uint64_t> streak{0};
    // Under mutex_.
    std::uint32_t ejections_in_a_row = 0;
    TimePoint ejected_until{};
  };

  OutlierDetector(std::size_t replicas, OutlierOptions options);
  std::int64_t return_due_locked() const noexcept;

  const OutlierOptions options_;
  const std::size_t replicas_;
  const std::size_t max_ejected_;
  // Bit i set: replica i is not ejected. Written under mutex_ (an
  // ejection clears a bit only while more than one is set), read by
  // available() from any thread: relaxed, see available().
  alignas(detail::kCacheLineSize) std::atomic<ReplicaMask> available_;
  // The earliest instant (ns since the clock's epoch) at which an ejected
  // replica is due back; INT64_MAX while none is ejected. Written under
  // mutex_, read by tick() first without it (relaxed: a stale value only
  // makes tick() take the mutex for nothing, or return a replica at its
  // next call; it is read again under the mutex).
  std::atomic<std::int64_t> return_due_{
      std::numeric_limits<std::int64_t>::max()};
  // On a line of its own: taken on the failure path, it would otherwise
  // move the line that every pick reads (available_, return_due_).
  alignas(detail::kCacheLineSize) mutable std::mutex mutex_;
  const std::unique_ptr<Monitor[]> monitors_;
  // Under mutex_.
  std::size_t ejected_ = 0;
  std::uint64_t ejections_ = 0;
  std::uint64_t returns_ = 0;
  std::uint64_t refused_ = 0;
};

inline void OutlierDetector::record_success(std::size_t replica) noexcept {
  std::atomic<std::uint64_t>& streak = monitors_[replica].streak;
  // relaxed: see Monitor::streak. Loaded first so that a healthy
  // replica's successes only read the shared line.
  if (streak.load(std::memory_order_relaxed) != 0) {
    streak.store(0, std::memory_order_relaxed);
  }
}

}  // namespace fnbus::mesh
