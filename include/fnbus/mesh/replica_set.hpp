#pragma once

// The replicas of one function as the bus sees them: N instances of a
// handler, a load balancer over the available ones, their calls in flight
// and, optionally, outlier ejection. Each call takes a Lease on the
// replica picked for it and reports how the call went.
//
//   auto set = fnbus::mesh::ReplicaSet::Create(
//       4, {.balancing = Balancing::kLeastOutstanding,
//           .outlier = OutlierOptions{.consecutive_failures = 5}});
//   absl::StatusOr<ReplicaSet::Lease> lease = (*set)->pick(now, random);
//   absl::Status status = handlers[lease->replica()](event);
//   status.ok() ? lease->on_success() : lease->on_failure(clock.now());
//
// Failover: a replica that fails consecutive_failures calls in a row is
// ejected, so the next picks go to the others; a retry of an event can
// also pass the replica it failed on as `avoid`.
//
// Thread safety: pick() from any thread (lock-free but for the returns
// that OutlierDetector::tick() makes); each Lease from one thread at a
// time. The set must outlive its leases.

#include <cstddef>
#include <memory>
#include <optional>
#include <utility>

#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/mesh/load_balancer.hpp"
#include "fnbus/mesh/outlier_detector.hpp"
#include "fnbus/mesh/replica_loads.hpp"
#include "fnbus/mesh/replica_mask.hpp"
#include "fnbus/random.hpp"

namespace fnbus::mesh {

struct ReplicaSetOptions {
  Balancing balancing = Balancing::kLeastOutstanding;
  // Ejection of failing replicas (validated); unset: none is ever ejected.
  std::optional<OutlierOptions> outlier = OutlierOptions{};
};

class ReplicaSet {
 public:
  // One call on one replica: counted in flight until the lease reports
  // (on_success() / on_failure(), once) or is dropped (abandoned: no
  // outcome is recorded, the call stops counting). Movable, not copyable.
  class Lease {
   public:
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) noexcept = default;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() = default;

    [[nodiscard]] std::size_t replica() const noexcept {
      return in_flight_.replica();
    }
    // The call succeeded: ends its replica's failure streak.
    void on_success() noexcept;
    // The call failed at `now`: may eject its replica.
    void on_failure(TimePoint now);

   private:
    friend class ReplicaSet;
    Lease(OutlierDetector* detector, ReplicaLoads::InFlight in_flight) noexcept
        : detector_(detector), in_flight_(std::move(in_flight)) {}
    OutlierDetector* detector_;  // null: no ejection
    ReplicaLoads::InFlight in_flight_;
  };

  // InvalidArgument naming every problem: replicas outside
  // [1, kMaxReplicas], an unknown Balancing, bad OutlierOptions.
  static absl::StatusOr<std::unique_ptr<ReplicaSet>> Create(
      std::size_t replicas, ReplicaSetOptions options);
  ReplicaSet(const ReplicaSet&) = delete;
  ReplicaSet& operator=(const ReplicaSet&) = delete;

  // A lease on the replica for a call at `now`: first returns the ejected
  // replicas whose cool-down has ended (OutlierDetector::tick(now)), then
  // lets the balancer pick among the available ones, drawing from the
  // caller's `random`. `avoid`, if set, is not picked while another
  // replica is available (a retry's previous replica). Unavailable if no
  // replica is available (the detector never lets that happen).
  // Thread safety: any thread.
  [[nodiscard]] absl::StatusOr<Lease> pick(
      TimePoint now, Random& random,
      std::optional<std::size_t> avoid = std::nullopt);

  [[nodiscard]] std::size_t size() const noexcept { return loads_.size(); }
  // The replicas a pick may choose now (all of them without ejection).
  [[nodiscard]] ReplicaMask available() const noexcept {
    return detector_ ? detector_->available() : all_replicas(size());
  }
  [[nodiscard]] const ReplicaLoads& loads() const noexcept { return loads_; }
  // Null when ReplicaSetOptions::outlier is unset.
  [[nodiscard]] const OutlierDetector* detector() const noexcept {
    return detector_.get();
  }
  [[nodiscard]] Balancing balancing() const noexcept {
    return balancer_->balancing();
  }

 private:
  ReplicaSet(std::size_t replicas, std::unique_ptr<LoadBalancer> balancer,
             std::unique_ptr<OutlierDetector> detector);

  ReplicaLoads loads_;
  const std::unique_ptr<LoadBalancer> balancer_;
  const std::unique_ptr<OutlierDetector> detector_;
};

inline void ReplicaSet::Lease::on_success() noexcept {
  if (!in_flight_) return;  // reported already
  if (detector_ != nullptr) detector_->record_success(in_flight_.replica());
  in_flight_.end();
}

inline void ReplicaSet::Lease::on_failure(TimePoint now) {
  if (!in_flight_) return;
  const std::size_t replica = in_flight_.replica();
  // Ended first: the call is over, whatever the detector decides.
  in_flight_.end();
  if (detector_ != nullptr) detector_->record_failure(replica, now);
}

}  // namespace fnbus::mesh
