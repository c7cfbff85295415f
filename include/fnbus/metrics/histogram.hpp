#pragma once

// Log-linear latency histograms: a recorder written by one thread without
// contention, and a snapshot that merges recorders and answers quantiles.
//
// Buckets (HdrHistogram's layout, in nanoseconds): values below 2^7 have a
// bucket each; above, every power-of-two octave [2^k, 2^(k+1)) is split into
// 64 equal sub-buckets. A quantile is reported as the midpoint of its bucket,
// so its relative error is at most 1/128 (< 0.8%) for every value from 1 us
// to 60 s. Values above kMaxTrackable land in the last bucket (and in max()
// exactly).

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fnbus::metrics {

struct HistogramLayout {
  static constexpr unsigned kSubBucketBits = 6;  // 64 sub-buckets per octave
  static constexpr std::uint64_t kSubBuckets = std::uint64_t{1}
                                               << kSubBucketBits;
  // Values below this have a bucket each (2^7 = 128).
  static constexpr std::uint64_t kExactLimit = kSubBuckets * 2;
  // Largest value with its own bucket: 2^36 - 1 ns, about 68.7 s.
  static constexpr unsigned kMaxOctave = 35;
  static constexpr std::uint64_t kMaxTrackable =
      (std::uint64_t{1} << (kMaxOctave + 1)) - 1;
  // 2^7 exact buckets, then 64 per octave 7 .. 35.
  static constexpr std::size_t kBucketCount =
      (std::size_t{2} << kSubBucketBits) +
      (kMaxOctave - kSubBucketBits) * kSubBuckets;

  // The bucket of `nanos` (values above kMaxTrackable: the last one).
  // Branch-free: a count of leading zeros, two shifts and an add.
  [[nodiscard]] static constexpr std::size_t bucket_of(
      std::uint64_t nanos) noexcept;
  // Smallest and largest value of bucket `index` (< kBucketCount). The
  // last bucket also holds every value above kMaxTrackable.
  [[nodiscard]] static constexpr std::uint64_t lower_bound(
      std::size_t index) noexcept;
  [[nodiscard]] static constexpr std::uint64_t upper_bound(
      std::size_t index) noexcept;
};

// Counts of one histogram (or of several merged), read at one moment.
// A plain value: copy it, merge it, query it from any thread (const
// members; a non-const member needs the usual exclusive access).
// Invariant: count() is the sum of buckets().
class HistogramSnapshot {
 public:
  HistogramSnapshot() = default;

  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  [[nodiscard]] std::uint64_t sum_nanos() const noexcept { return sum_; }
  [[nodiscard]] std::uint64_t max_nanos() const noexcept { return max_; }
  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
  // sum / count; 0 when empty.
  [[nodiscard]] double mean_nanos() const noexcept;

  // The value at quantile q in [0, 1] (q outside is clamped), in ns: the
  // midpoint of the bucket holding the ceil(q * count)-th smallest value
  // (at least the first), never above max_nanos(). 0 when empty.
  [[nodiscard]] double quantile_nanos(double q) const noexcept;
  // Samples <= `nanos`, counting a bucket only if it lies wholly at or
  // below `nanos` (what Prometheus `le` buckets report): a bucket that
  // straddles `nanos` counts as above it. Exact (count()) once
  // `nanos` >= max_nanos().
  [[nodiscard]] std::uint64_t count_at_or_below(
      std::uint64_t nanos) const noexcept;

  // Adds `other`'s samples to this one. May allocate (the first time).
  void merge(const HistogramSnapshot& other);
  // Adds one sample `times` times (for building snapshots in tests and
  // tools). May allocate (the first time).
  void add(std::uint64_t nanos, std::uint64_t times = 1);

  // Per-bucket counts (HistogramLayout::kBucketCount of them, or none
  // while empty).
  [[nodiscard]] const std::vector<std::uint64_t>& buckets() const noexcept {
    return buckets_;
  }

 private:
  friend class LatencyRecorder;
  std::vector<std::uint64_t> buckets_;
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;
  std::uint64_t max_ = 0;
};

// The live histogram one thread records into. record() is a few plain
// loads and stores on memory no other writer touches (single writer: a
// relaxed load + store instead of a locked read-modify-write); readers on
// other threads call add_to() and see a recent, possibly slightly torn,
// view -- count, sum and buckets are each exact but read at different
// moments.
//
// Guarantees, for a writer thread W and a reader thread R:
// - each bucket, count and sum that R reads is a value W stored, and R's
//   successive reads of one of them never go backwards;
// - after R synchronises with W (e.g. a join, or a mutex W released after
//   recording), add_to() sees every sample W recorded before.
// Not guaranteed: that one add_to() sees count, sum, max and the buckets at
// the same moment (the snapshot's own count is the sum of the buckets it
// read, so its quantiles and Prometheus buckets are consistent).
// Size: about 16 KiB (kBucketCount counters).
class LatencyRecorder {
 public:
  LatencyRecorder() = default;
  LatencyRecorder(const LatencyRecorder&) = delete;
  LatencyRecorder& operator=(const LatencyRecorder&) = delete;

  // Adds one sample. Never allocates; a few nanoseconds.
  // Precondition: only one thread records into a given recorder (another
  // may take over after synchronising with the previous one).
  // Thread safety: one writer, concurrently with any number of add_to().
  // `weight` > 1 records a sample that stands for `weight` events (one
  // timed event in `weight`, see BusConfig::latency_sample_every).
  void record(std::uint64_t nanos, std::uint64_t weight = 1) noexcept;
  // Adds the recorder's current counts to `out`. May allocate (the first
  // time for `out`).
  // Thread safety: any thread, concurrently with record().
  void add_to(HistogramSnapshot& out) const;
  // Samples recorded so far. Thread safety: any thread.
  [[nodiscard]] std::uint64_t count() const noexcept;

 private:
  // Each field: written only by the recording thread (relaxed load +
  // relaxed store), read by add_to()/count() on any thread (relaxed: a
  // statistic; nothing else is published through it).
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_{0};
  std::atomic<std::uint64_t> max_{0};
  // The smallest sample (all ones until the first): with max_ it bounds
  // the buckets add_to() reads -- latencies occupy a few octaves, so a
  // scrape reads a few hundred counters instead of all 1984.
  std::atomic<std::uint64_t> min_{~std::uint64_t{0}};
  std::array<std::atomic<std::uint64_t>, HistogramLayout::kBucketCount>
      buckets_{};
};

// ---------------------------------------------------------------------------
// Implementation of the hot, inline parts.

constexpr std::size_t HistogramLayout::bucket_of(std::uint64_t nanos) noexcept {
  const std::uint64_t v = std::min(nanos, kMaxTrackable);
  // Octave k = bit_width(v) - 1 >= 7 keeps the top 7 bits: shift = k - 6.
  // Below 2^7 the `| (kExactLimit - 1)` makes shift 0 and the index v.
  const unsigned shift =
      static_cast<unsigned>(std::bit_width(v | (kExactLimit - 1))) -
      (kSubBucketBits + 1);
  return static_cast<std::size_t>((std::uint64_t{shift} << kSubBucketBits) +
                                  (v >> shift));
}

constexpr std::uint64_t HistogramLayout::lower_bound(
    std::size_t index) noexcept {
  if (index < kExactLimit) return index;
  const unsigned shift =
      static_cast<unsigned>(index >> kSubBucketBits) - 1;  // >= 1
  const std::uint64_t top = (index & (kSubBuckets - 1)) + kSubBuckets;
  return top << shift;
}

constexpr std::uint64_t HistogramLayout::upper_bound(
    std::size_t index) noexcept {
  if (index < kExactLimit) return index;
  const unsigned shift = static_cast<unsigned>(index >> kSubBucketBits) - 1;
  const std::uint64_t top = (index & (kSubBuckets - 1)) + kSubBuckets;
  return ((top + 1) << shift) - 1;
}

static_assert(HistogramLayout::kBucketCount == 1984);
static_assert(HistogramLayout::bucket_of(HistogramLayout::kMaxTrackable) ==
              HistogramLayout::kBucketCount - 1);
static_assert(HistogramLayout::upper_bound(HistogramLayout::kBucketCount - 1) ==
              HistogramLayout::kMaxTrackable);

inline void LatencyRecorder::record(std::uint64_t nanos,
                                    std::uint64_t weight) noexcept {
  // Every operation below is relaxed, and a load + store rather than a
  // fetch_add: this thread is the only writer, so nothing can come between
  // its load and its store; a reader only needs each counter's own latest
  // value, which coherence gives without ordering; and no other data is
  // published through these stores. (The bucket is written last so that on
  // x86 a reader that sees it also sees max_ and sum_; not relied upon.)
  //
  // relaxed: single writer, so the compare and the store cannot race with
  // another store; max_ only grows, min_ only shrinks.
  if (nanos > max_.load(std::memory_order_relaxed)) {
    max_.store(nanos, std::memory_order_relaxed);
  }
  // relaxed: as above.
  if (nanos < min_.load(std::memory_order_relaxed)) {
    min_.store(nanos, std::memory_order_relaxed);
  }
  // relaxed: single writer (wraps after 584 years of samples).
  sum_.store(sum_.load(std::memory_order_relaxed) + nanos * weight,
             std::memory_order_relaxed);
  // relaxed: single writer.
  count_.store(count_.load(std::memory_order_relaxed) + weight,
               std::memory_order_relaxed);
  std::atomic<std::uint64_t>& bucket =
      buckets_[HistogramLayout::bucket_of(nanos)];
  // relaxed: single writer; add_to() derives the snapshot's count from
  // these values, so each one must only be exact, not ordered.
  bucket.store(bucket.load(std::memory_order_relaxed) + weight,
               std::memory_order_relaxed);
}

}  // namespace fnbus::metrics
