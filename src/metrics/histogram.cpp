#include "fnbus/metrics/histogram.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace fnbus::metrics {

double HistogramSnapshot::mean_nanos() const noexcept {
  if (count_ == 0) return 0;
  return static_cast<double>(sum_) / static_cast<double>(count_);
}

double HistogramSnapshot::quantile_nanos(double q) const noexcept {
  if (count_ == 0) return 0;
  if (!(q > 0)) q = 0;  // also NaN
  if (q > 1) q = 1;
  // The rank (1-based) of the sample asked for: ceil(q * count), at least 1.
  const double wanted = std::ceil(q * static_cast<double>(count_));
  const std::uint64_t rank =
      std::clamp<std::uint64_t>(static_cast<std::uint64_t>(wanted), 1, count_);
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    seen += buckets_[i];
    if (seen >= rank) {
      const double low = static_cast<double>(HistogramLayout::lower_bound(i));
      const double high = static_cast<double>(HistogramLayout::upper_bound(i));
      return std::min((low + high) / 2, static_cast<double>(max_));
    }
  }
  return static_cast<double>(max_);  // unreachable while count_ == sum
}

std::uint64_t HistogramSnapshot::count_at_or_below(
    std::uint64_t nanos) const noexcept {
  if (count_ == 0) return 0;
  if (nanos >= max_) return count_;
  // Buckets [0, end) lie wholly at or below `nanos`.
  std::size_t end = HistogramLayout::bucket_of(nanos);
  if (HistogramLayout::upper_bound(end) == nanos &&
      end + 1 < HistogramLayout::kBucketCount) {
    ++end;  // `nanos` closes its bucket (not the open-ended last one)
  }
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < end; ++i) total += buckets_[i];
  return total;
}

void HistogramSnapshot::merge(const HistogramSnapshot& other) {
  if (other.count_ == 0) return;
  if (buckets_.empty()) buckets_.resize(HistogramLayout::kBucketCount);
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    buckets_[i] += other.buckets_[i];
  }
  count_ += other.count_;
  sum_ += other.sum_;
  max_ = std::max(max_, other.max_);
}

void HistogramSnapshot::add(std::uint64_t nanos, std::uint64_t times) {
  if (times == 0) return;
  if (buckets_.empty()) buckets_.resize(HistogramLayout::kBucketCount);
  buckets_[HistogramLayout::bucket_of(nanos)] += times;
  count_ += times;
  sum_ += nanos * times;
  max_ = std::max(max_, nanos);
}

void LatencyRecorder::add_to(HistogramSnapshot& out) const {
  // The snapshot's count is the sum of the buckets read here, not count_,
  // so that its invariant (count == sum of buckets) holds even while
  // record() runs on another thread.
  // Only the buckets between the smallest and the largest sample can be
  // non-zero. relaxed: a sample whose min_/max_ store we miss, we may miss
  // in the buckets too (a torn view, as documented); after synchronising
  // with the writer every sample is in range.
  const std::uint64_t smallest = min_.load(std::memory_order_relaxed);
  const std::uint64_t largest = max_.load(std::memory_order_relaxed);
  if (smallest > largest) return;  // nothing recorded yet
  const std::size_t first = HistogramLayout::bucket_of(smallest);
  const std::size_t last = HistogramLayout::bucket_of(largest);
  std::uint64_t counted = 0;
  for (std::size_t i = first; i <= last; ++i) {
    // relaxed: a statistic; coherence gives a value the writer stored, no
    // older than one this thread read before.
    const std::uint64_t n = buckets_[i].load(std::memory_order_relaxed);
    if (n == 0) continue;
    if (out.buckets_.empty()) {
      out.buckets_.resize(HistogramLayout::kBucketCount);
    }
    out.buckets_[i] += n;
    counted += n;
  }
  if (counted == 0) return;
  out.count_ += counted;
  // relaxed: as above; sum and max may be read a few samples later than
  // the buckets (documented: a slightly torn view).
  out.sum_ += sum_.load(std::memory_order_relaxed);
  // relaxed: as above.
  out.max_ = std::max(out.max_, max_.load(std::memory_order_relaxed));
}

std::uint64_t LatencyRecorder::count() const noexcept {
  // relaxed: a statistic, as in add_to().
  return count_.load(std::memory_order_relaxed);
}

}  // namespace fnbus::metrics
