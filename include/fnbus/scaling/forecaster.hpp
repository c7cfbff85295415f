#pragma once

// Predictive scaling, part one: what load to expect. A Forecaster learns
// the arrival rate's seasonal shape -- by time of day and day of week --
// from the LoadSnapshots a policy sees, and answers "what rate, and how
// high might it be, over the next horizon". The model and why it is
// buckets rather than Holt-Winters: docs/scaling.md, "Forecasting the
// load".

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/scaling/policy.hpp"

namespace fnbus::scaling {

struct ForecasterOptions {
  // The bus (or service) whose load is learnt: written to a saved file and
  // checked when one is loaded, so that one bus never starts from another
  // bus's shape. Non-empty, no whitespace.
  std::string name = "default";
  // The bus-clock instant at which day 0 of a week begins (e.g. Monday
  // 00:00 local time). Bus clocks are monotonic clocks with an arbitrary
  // epoch, so a live service sets this from the wall clock at start-up:
  // origin = clock.now() - (time since the start of this week).
  TimePoint origin{};
  // The season: a day of `day`, a week of `days_per_week` days. Compress
  // the day to test or simulate (the lab uses a "day" of minutes).
  Duration day = std::chrono::hours(24);  // > 0, at most 366 x 24 h
  int days_per_week = 7;                  // 1 .. 31; 1 = no weekly shape
  // The resolution: `day` is cut into buckets of this length. Make it at
  // least the time constant of the arrival average it learns from
  // (LoadSnapshot::arrival_rate_fast, 6 s by default), which smooths
  // anything shorter anyway.
  Duration bucket = std::chrono::minutes(15);  // > 0, divides `day`
  // The weight of the newest period in a bucket's averages (an EWMA across
  // days or weeks; the first periods are averaged equally): higher follows
  // a changing shape sooner, lower forgets one odd day sooner.
  double learning_rate = 0.2;  // in (0, 1]
  // The quantile RateForecast::upper estimates (a normal approximation:
  // mean + z(quantile) x standard deviation).
  double quantile = 0.95;  // in [0.5, 1)
};

// The expected arrival rate over a window, in events per second.
struct RateForecast {
  // The highest bucket mean in the window (what to staff for; a window
  // that ends in a peak forecasts the peak).
  double mean = 0;
  // The highest bucket's upper quantile (ForecasterOptions::quantile).
  double upper = 0;
  // The fewest periods any bucket of the window has learnt from; 0 when
  // some bucket has never been seen (then mean and upper cover only the
  // buckets that have).
  std::uint32_t periods = 0;

  // Every bucket of the window has been seen at least once.
  [[nodiscard]] bool known() const noexcept { return periods > 0; }
};

// Learns the arrival rate per bucket of the week (day of week x time of
// day) and per bucket of the day (all days pooled), online: each tick adds
// its rate, weighted by its length, to the bucket it falls in; when time
// leaves a bucket, that occurrence's mean and mean square update the
// bucket's exponentially weighted averages. A forecast uses a bucket of
// the week once that weekday has been seen, and until then the same time
// of any day.
//
// Memory: (days_per_week + 1) x (day / bucket) buckets of 24 bytes,
// allocated by Create() and never grown (the default, 15-minute buckets
// for a 7-day week, is 768 buckets, 18 KiB).
//
// Not thread-safe: one controller owns it (like Governor); save() from
// another thread needs the owner's lock.
class Forecaster {
 public:
  // InvalidArgument naming every bad option.
  static absl::StatusOr<Forecaster> Create(ForecasterOptions options = {});

  // Learns from one tick: load.arrival_rate_fast over load.tick, at
  // load.now. Returns false (and learns nothing) for a tick that is not
  // usable: tick <= 0, a rate that is negative or not finite, or a time
  // earlier than a tick already learnt from. O(1); never allocates.
  bool observe(const LoadSnapshot& load) noexcept;

  // The forecast for [from, from + horizon] (a horizon <= 0 means the
  // bucket of `from` alone; one longer than a week covers the week). The
  // bucket being filled now contributes what it learnt in earlier
  // periods, not the current occurrence. O(buckets in the window).
  [[nodiscard]] RateForecast forecast(TimePoint from,
                                      Duration horizon) const noexcept;

  // Writes the learnt state as a small versioned text file (see
  // docs/scaling.md). The occurrence being filled is not written.
  absl::Status save(std::ostream& out) const;
  // Replaces the learnt state with a saved one, or leaves it unchanged
  // and returns: DataLoss for a truncated or corrupt file,
  // FailedPrecondition for one written by another format version, for
  // another bus (ForecasterOptions::name) or with another season or
  // bucket.
  absl::Status load(std::istream& in);

  // save() to `path` through a temporary file and a rename, so that a
  // crash never leaves a truncated file; Unavailable if it cannot write.
  absl::Status save_file(const std::string& path) const;
  // load() from `path`; NotFound if there is no such file (start empty).
  absl::Status load_file(const std::string& path);

  [[nodiscard]] const ForecasterOptions& options() const noexcept {
    return options_;
  }
  // Buckets per day and per week.
  [[nodiscard]] std::size_t buckets_per_day() const noexcept {
    return day_.size();
  }
  [[nodiscard]] std::size_t buckets_per_week() const noexcept {
    return week_.size();
  }
  // Ticks learnt from, and ticks refused by observe().
  [[nodiscard]] std::uint64_t observed() const noexcept { return observed_; }
  [[nodiscard]] std::uint64_t ignored() const noexcept { return ignored_; }

 private:
  // One bucket's averages over the periods it has seen.
  struct Bucket {
    double mean = 0;     // EWMA of the occurrences' mean rate
    double mean_sq = 0;  // EWMA of their mean squared rate
    std::uint32_t periods = 0;
  };

  Forecaster(ForecasterOptions options, double z);
  // The bucket occurrence (bucket number since `origin`) of `t`.
  [[nodiscard]] std::int64_t occurrence_of(TimePoint t) const noexcept;
  // Folds the occurrence being filled into its buckets.
  void fold() noexcept;
  // The bucket a forecast for `occurrence` uses, or nullptr if unseen.
  [[nodiscard]] const Bucket* learnt(std::int64_t occurrence) const noexcept;
  [[nodiscard]] double upper_of(const Bucket& bucket) const noexcept;

  ForecasterOptions options_;
  double z_;                  // the quantile's standard normal deviate
  std::vector<Bucket> week_;  // days_per_week x buckets_per_day
  std::vector<Bucket> day_;   // buckets_per_day, all days pooled
  // The occurrence being filled (valid while filling_): its number and
  // the tick-weighted sums of its rates.
  bool filling_ = false;
  std::int64_t current_ = 0;
  double seconds_ = 0;
  double rate_seconds_ = 0;     // sum of rate x tick
  double rate_sq_seconds_ = 0;  // sum of rate^2 x tick
  std::uint64_t observed_ = 0;
  std::uint64_t ignored_ = 0;
};

}  // namespace fnbus::scaling
