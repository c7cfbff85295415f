#pragma once

// Predictive scaling, part two: load the application knows is coming. A
// ScheduledSurge is an announcement -- "a sale starts at T and brings
// about N x the normal rate for D" -- and a SurgeCalendar holds the
// announcements of one bus and answers which multiplier applies at a time
// and over the lead time before it, so that a policy can start workers
// early enough to be running at T. See docs/scaling.md, "Announced
// surges".

#include <cstddef>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"

namespace fnbus::scaling {

// An announced change of the arrival rate: `multiplier` x the normal rate
// from `start` for `duration`, i.e. over [start, start + duration).
struct ScheduledSurge {
  TimePoint start{};      // on the bus clock; not before the announcement
  Duration duration{};    // > 0
  double multiplier = 1;  // finite, > 0 (below 1: an announced lull)

  // The first instant after the surge.
  [[nodiscard]] TimePoint end() const noexcept { return start + duration; }
};

struct SurgeCalendarOptions {
  // Announcements held at once (passed ones are forgotten); more is
  // ResourceExhausted. Bounds the calendar's memory and query cost.
  std::size_t max_surges = 64;  // 1 .. 4096
};

// The announced surges of one bus, sorted by start, none overlapping.
// Queries are O(surges held). Not thread-safe: one controller owns it;
// an application thread that announces needs the owner's lock (the
// Predictive policy provides one).
class SurgeCalendar {
 public:
  // InvalidArgument for max_surges outside 1 .. 4096.
  static absl::StatusOr<SurgeCalendar> Create(
      SurgeCalendarOptions options = {});

  // Adds `surge`, announced at `now`. InvalidArgument for a start before
  // `now`, a duration <= 0 (or one that overflows the clock), or a
  // multiplier that is not a finite number > 0; FailedPrecondition for one
  // overlapping a surge already announced (cancel that one first);
  // ResourceExhausted when max_surges are held. On error nothing changes.
  absl::Status announce(const ScheduledSurge& surge, TimePoint now);

  // Removes the surge that starts at `start`; NotFound if there is none.
  absl::Status cancel(TimePoint start);

  // Forgets every surge that has ended by `now` (end() <= now). Returns
  // how many.
  std::size_t forget_passed(TimePoint now) noexcept;

  // The multiplier at `t`: that of the surge covering `t`, else 1.
  [[nodiscard]] double multiplier_at(TimePoint t) const noexcept;

  // The highest multiplier_at(t) for t in [from, from + lead] (a lead
  // <= 0 means `from` alone), so that a policy asking at
  // `from` with the lead it needs to start workers sees a surge before it
  // begins, and a surge shorter than a tick is not stepped over.
  [[nodiscard]] double peak_multiplier(TimePoint from,
                                       Duration lead) const noexcept;

  // The surges held, sorted by start.
  [[nodiscard]] const std::vector<ScheduledSurge>& surges() const noexcept {
    return surges_;
  }
  [[nodiscard]] std::size_t size() const noexcept { return surges_.size(); }
  [[nodiscard]] bool empty() const noexcept { return surges_.empty(); }

 private:
  explicit SurgeCalendar(SurgeCalendarOptions options) : options_(options) {
    surges_.reserve(options.max_surges);
  }

  SurgeCalendarOptions options_;
  std::vector<ScheduledSurge> surges_;  // sorted by start, disjoint
};

}  // namespace fnbus::scaling
