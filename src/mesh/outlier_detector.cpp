#include "fnbus/mesh/outlier_detector.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"

#include "fnbus/detail/saturating_time.hpp"

namespace fnbus::mesh {
namespace {

void check_into(const OutlierOptions& options,
                std::vector<std::string>& problems) {
  if (options.consecutive_failures == 0) {
    problems.push_back(
        "consecutive_failures is 0; use at least 1 (the failures in a row "
        "that eject a replica)");
  }
  if (options.base_ejection <= Duration::zero()) {
    problems.push_back(fmt::format(
        "base_ejection is {} ns; use more than 0 (the first cool-down)",
        options.base_ejection.count()));
  }
  if (options.max_ejection < options.base_ejection) {
    problems.push_back(fmt::format(
        "max_ejection is {} ns, below base_ejection ({} ns); use at least "
        "base_ejection",
        options.max_ejection.count(), options.base_ejection.count()));
  }
  if (!(options.max_ejected_share >= 0.0 && options.max_ejected_share <= 1.0)) {
    problems.push_back(fmt::format(
        "max_ejected_share is {}; use a share in [0, 1] (0.5: at most half "
        "the replicas ejected at once; 0: never eject)",
        options.max_ejected_share));
  }
}

std::int64_t nanos(TimePoint at) noexcept {
  return at.time_since_epoch().count();
}

}  // namespace

absl::Status check(const OutlierOptions& options) {
  std::vector<std::string> problems;
  check_into(options, problems);
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError("OutlierOptions: " +
                                    absl::StrJoin(problems, "; "));
}

std::size_t max_ejected(std::size_t replicas, double share) noexcept {
  if (replicas == 0 || !(share > 0.0)) return 0;
  // The epsilon keeps 0.29 * 100 (28.999999999999996 in double) at 29.
  const double allowed =
      std::floor(std::min(share, 1.0) * static_cast<double>(replicas) + 1e-9);
  return std::min(static_cast<std::size_t>(allowed), replicas - 1);
}

Duration ejection_time(const OutlierOptions& options,
                       std::uint32_t times) noexcept {
  const Duration::rep base = options.base_ejection.count();
  const Duration::rep cap = options.max_ejection.count();
  const Duration::rep n = std::max<std::uint32_t>(times, 1);
  // base > 0 (check()); compare by division so the product cannot overflow.
  if (base <= 0 || n > cap / base) return options.max_ejection;
  return Duration(base * n);
}

absl::StatusOr<std::unique_ptr<OutlierDetector>> OutlierDetector::Create(
    std::size_t replicas, OutlierOptions options) {
  std::vector<std::string> problems;
  if (replicas < 1 || replicas > kMaxReplicas) {
    problems.push_back(fmt::format("replicas is {}; use 1 to {} (kMaxReplicas)",
                                   replicas, kMaxReplicas));
  }
  check_into(options, problems);
  if (!problems.empty()) {
    return absl::InvalidArgumentError("OutlierDetector: " +
                                      absl::StrJoin(problems, "; "));
  }
  return std::unique_ptr<OutlierDetector>(
      new OutlierDetector(replicas, options));
}

OutlierDetector::OutlierDetector(std::size_t replicas, OutlierOptions options)
    : options_(options),
      replicas_(replicas),
      max_ejected_(mesh::max_ejected(replicas, options.max_ejected_share)),
      available_(all_replicas(replicas)),
      monitors_(std::make_unique<Monitor[]>(replicas)) {}

void OutlierDetector::record_failure(std::size_t replica, TimePoint now) {
  if (ejected(replica)) return;
  Monitor& monitor = monitors_[replica];
  // relaxed: see Monitor::streak.
  const std::uint64_t streak =
      monitor.streak.fetch_add(1, std::memory_order_relaxed) + 1;
  if ((streak & ~kReturned) < options_.consecutive_failures) return;

  std::lock_guard lock(mutex_);
  if (ejected(replica)) return;  // another failure of the streak did it
  if (ejected_ >= max_ejected_) {
    ++refused_;  // the streak lasts: its next failure asks again
    return;
  }
  monitor.ejections_in_a_row =
      (streak & kReturned) != 0 ? monitor.ejections_in_a_row + 1 : 1;
  monitor.ejected_until = detail::saturating_add(
      now, ejection_time(options_, monitor.ejections_in_a_row));
  monitor.streak.store(0, std::memory_order_relaxed);
  ++ejected_;
  ++ejections_;
  // ejected_ <= max_ejected_ < replicas_: a bit stays set (available()).
  available_.fetch_and(~replica_bit(replica), std::memory_order_relaxed);
  return_due_.store(std::min(return_due_.load(std::memory_order_relaxed),
                             nanos(monitor.ejected_until)),
                    std::memory_order_relaxed);
}

std::size_t OutlierDetector::tick(TimePoint now) {
  // relaxed: see return_due_.
  if (nanos(now) < return_due_.load(std::memory_order_relaxed)) return 0;
  std::lock_guard lock(mutex_);
  std::size_t returned = 0;
  for (std::size_t i = 0; i < replicas_; ++i) {
    Monitor& monitor = monitors_[i];
    if (!ejected(i) || monitor.ejected_until > now) continue;
    monitor.streak.store(kReturned, std::memory_order_relaxed);
    available_.fetch_or(replica_bit(i), std::memory_order_relaxed);
    --ejected_;
    ++returns_;
    ++returned;
  }
  return_due_.store(return_due_locked(), std::memory_order_relaxed);
  return returned;
}

std::int64_t OutlierDetector::return_due_locked() const noexcept {
  std::int64_t due = std::numeric_limits<std::int64_t>::max();
  for (std::size_t i = 0; i < replicas_; ++i) {
    if (ejected(i)) due = std::min(due, nanos(monitors_[i].ejected_until));
  }
  return due;
}

OutlierDetector::Stats OutlierDetector::stats() const {
  std::lock_guard lock(mutex_);
  return {.ejections = ejections_,
          .returns = returns_,
          .refused = refused_,
          .ejected = ejected_};
}

}  // namespace fnbus::mesh
