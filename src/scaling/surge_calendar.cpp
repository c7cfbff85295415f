#include "fnbus/scaling/surge_calendar.hpp"

#include <algorithm>
#include <cmath>

#include "fmt/chrono.h"
#include "fmt/format.h"

namespace fnbus::scaling {
namespace {

constexpr std::size_t kMaxSurges = 4096;

// A time on the bus clock, for messages: seconds since the clock's epoch.
std::chrono::duration<double> since_epoch(TimePoint t) {
  return t.time_since_epoch();
}

}  // namespace

absl::StatusOr<SurgeCalendar> SurgeCalendar::Create(
    SurgeCalendarOptions options) {
  if (options.max_surges < 1 || options.max_surges > kMaxSurges) {
    return absl::InvalidArgumentError(fmt::format(
        "invalid SurgeCalendarOptions: max_surges is {}; use 1 to {}",
        options.max_surges, kMaxSurges));
  }
  return SurgeCalendar(options);
}

absl::Status SurgeCalendar::announce(const ScheduledSurge& surge,
                                     TimePoint now) {
  if (surge.start < now) {
    return absl::InvalidArgumentError(fmt::format(
        "surge starts at {}, before now ({}); announce a surge before it "
        "starts (the reactive policy handles one already under way)",
        since_epoch(surge.start), since_epoch(now)));
  }
  if (surge.duration <= Duration::zero() ||
      surge.duration > TimePoint::max() - surge.start) {
    return absl::InvalidArgumentError(fmt::format(
        "surge duration is {}; use more than 0 (and an end the clock can "
        "represent)",
        std::chrono::duration<double>(surge.duration)));
  }
  if (!std::isfinite(surge.multiplier) || !(surge.multiplier > 0)) {
    return absl::InvalidArgumentError(fmt::format(
        "surge multiplier is {}; use a finite number above 0 (e.g. 3 for "
        "three times the normal rate)",
        surge.multiplier));
  }
  const auto after = std::upper_bound(
      surges_.begin(), surges_.end(), surge.start,
      [](TimePoint start, const ScheduledSurge& s) { return start < s.start; });
  const auto overlaps = [&](const ScheduledSurge& other) {
    return other.start < surge.end() && surge.start < other.end();
  };
  const ScheduledSurge* clash = nullptr;
  if (after != surges_.end() && overlaps(*after)) clash = &*after;
  if (after != surges_.begin() && overlaps(*std::prev(after))) {
    clash = &*std::prev(after);
  }
  if (clash != nullptr) {
    return absl::FailedPreconditionError(fmt::format(
        "surge [{}, {}) overlaps the surge announced for [{}, {}); cancel "
        "that one first, or announce one surge covering both",
        since_epoch(surge.start), since_epoch(surge.end()),
        since_epoch(clash->start), since_epoch(clash->end())));
  }
  if (surges_.size() >= options_.max_surges) {
    return absl::ResourceExhaustedError(fmt::format(
        "{} surges are announced already (max_surges); wait for one to pass "
        "or raise SurgeCalendarOptions::max_surges",
        surges_.size()));
  }
  surges_.insert(after, surge);
  return absl::OkStatus();
}

absl::Status SurgeCalendar::cancel(TimePoint start) {
  const auto it = std::find_if(
      surges_.begin(), surges_.end(),
      [start](const ScheduledSurge& s) { return s.start == start; });
  if (it == surges_.end()) {
    return absl::NotFoundError(
        fmt::format("no surge is announced to start at {}; surges() lists them",
                    since_epoch(start)));
  }
  surges_.erase(it);
  return absl::OkStatus();
}

std::size_t SurgeCalendar::forget_passed(TimePoint now) noexcept {
  // Sorted by start and disjoint, so also sorted by end.
  const auto first_live =
      std::find_if(surges_.begin(), surges_.end(),
                   [now](const ScheduledSurge& s) { return s.end() > now; });
  const auto passed = static_cast<std::size_t>(first_live - surges_.begin());
  surges_.erase(surges_.begin(), first_live);
  return passed;
}

double SurgeCalendar::multiplier_at(TimePoint t) const noexcept {
  for (const ScheduledSurge& surge : surges_) {
    if (surge.start > t) break;
    if (t < surge.end()) return surge.multiplier;
  }
  return 1.0;
}

double SurgeCalendar::peak_multiplier(TimePoint from,
                                      Duration lead) const noexcept {
  const TimePoint to =
      lead > Duration::zero() && lead < TimePoint::max() - from
          ? from + lead
          : (lead > Duration::zero() ? TimePoint::max() : from);
  double peak = 0;
  bool gap = false;          // an instant of [from, to] outside every surge
  TimePoint covered = from;  // [from, covered) lies inside surges
  for (const ScheduledSurge& surge : surges_) {
    if (surge.start > to) break;
    if (surge.end() <= from) continue;
    gap = gap || surge.start > covered;
    covered = surge.end();
    peak = std::max(peak, surge.multiplier);
  }
  gap = gap || covered <= to;
  return gap ? std::max(peak, 1.0) : peak;
}

}  // namespace fnbus::scaling
