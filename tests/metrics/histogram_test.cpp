// Tests of fnbus::metrics histograms: the bucket layout, quantile accuracy
// against exact quantiles of generated data, merging, edge values, and a
// recorder read by another thread while it records.

#include "fnbus/metrics/histogram.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <latch>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

using fnbus::metrics::HistogramLayout;
using fnbus::metrics::HistogramSnapshot;
using fnbus::metrics::LatencyRecorder;

namespace {

constexpr std::uint64_t kMicrosecond = 1'000;
constexpr std::uint64_t kSecond = 1'000'000'000;

// A sample generator (nanoseconds) for one distribution.
using Generator = std::function<double(std::mt19937_64&)>;

// `count` values of `generator`, clamped to [1 us, 60 s].
std::vector<std::uint64_t> generate(const Generator& generator,
                                    std::size_t count, std::uint64_t seed) {
  std::mt19937_64 random(seed);
  std::vector<std::uint64_t> values(count);
  for (std::uint64_t& v : values) {
    const double x = std::clamp(generator(random), 1e3, 60e9);
    v = static_cast<std::uint64_t>(x);
  }
  return values;
}

// The ceil(q * n)-th smallest of `sorted` (at least the first): the rank
// that quantile_nanos() documents.
std::uint64_t exact_quantile(const std::vector<std::uint64_t>& sorted,
                             double q) {
  const auto rank = static_cast<std::size_t>(
      std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

HistogramSnapshot snapshot_of(const LatencyRecorder& recorder) {
  HistogramSnapshot snapshot;
  recorder.add_to(snapshot);
  return snapshot;
}

}  // namespace

TEST_CASE("histogram: layout is contiguous and monotone from 0 to the max",
          "[histogram]") {
  STATIC_REQUIRE(HistogramLayout::kBucketCount == 1984);
  REQUIRE(HistogramLayout::lower_bound(0) == 0);
  REQUIRE(HistogramLayout::upper_bound(HistogramLayout::kBucketCount - 1) ==
          HistogramLayout::kMaxTrackable);
  REQUIRE(HistogramLayout::kMaxTrackable == (std::uint64_t{1} << 36) - 1);
  for (std::size_t i = 0; i < HistogramLayout::kBucketCount; ++i) {
    const std::uint64_t low = HistogramLayout::lower_bound(i);
    const std::uint64_t high = HistogramLayout::upper_bound(i);
    INFO("bucket " << i << " = [" << low << ", " << high << "]");
    REQUIRE(low <= high);
    if (i + 1 < HistogramLayout::kBucketCount) {
      REQUIRE(HistogramLayout::lower_bound(i + 1) == high + 1);
    }
    if (i < 128) {
      REQUIRE(low == i);
      REQUIRE(high == i);
    } else {
      // Width at most 1/64 of the lower bound: midpoint error <= 1/128.
      REQUIRE((high - low + 1) * 64 <= low);
    }
  }
}

TEST_CASE("histogram: every value maps inside its bucket's bounds",
          "[histogram]") {
  // Each bucket's bounds and midpoint map back to the bucket.
  for (std::size_t i = 0; i < HistogramLayout::kBucketCount; ++i) {
    const std::uint64_t low = HistogramLayout::lower_bound(i);
    const std::uint64_t high = HistogramLayout::upper_bound(i);
    INFO("bucket " << i);
    REQUIRE(HistogramLayout::bucket_of(low) == i);
    REQUIRE(HistogramLayout::bucket_of(high) == i);
    REQUIRE(HistogramLayout::bucket_of(low + (high - low) / 2) == i);
  }
  // Every value below 2^16, then log-uniform values up to kMaxTrackable.
  for (std::uint64_t v = 0; v < (1u << 16); ++v) {
    const std::size_t i = HistogramLayout::bucket_of(v);
    REQUIRE(HistogramLayout::lower_bound(i) <= v);
    REQUIRE(v <= HistogramLayout::upper_bound(i));
  }
  std::mt19937_64 random(42);
  std::uniform_real_distribution<double> exponent(0.0, 36.0);
  for (int n = 0; n < 200'000; ++n) {
    const auto v =
        std::min(static_cast<std::uint64_t>(std::exp2(exponent(random))),
                 HistogramLayout::kMaxTrackable);
    const std::size_t i = HistogramLayout::bucket_of(v);
    INFO("value " << v << " in bucket " << i);
    REQUIRE(HistogramLayout::lower_bound(i) <= v);
    REQUIRE(v <= HistogramLayout::upper_bound(i));
  }
  // Beyond the last trackable value: the last bucket.
  const std::size_t last = HistogramLayout::kBucketCount - 1;
  REQUIRE(HistogramLayout::bucket_of(HistogramLayout::kMaxTrackable + 1) ==
          last);
  REQUIRE(HistogramLayout::bucket_of(
              std::numeric_limits<std::uint64_t>::max()) == last);
}

TEST_CASE("histogram: quantiles are within 1% of the exact ones",
          "[histogram]") {
  struct Case {
    std::string name;
    Generator generator;
  };
  const std::vector<Case> cases = {
      {"uniform 1 us .. 60 s",
       [](std::mt19937_64& r) {
         return std::uniform_real_distribution<double>(1e3, 60e9)(r);
       }},
      {"log-uniform 1 us .. 60 s",
       [](std::mt19937_64& r) {
         return std::exp(std::uniform_real_distribution<double>(
             std::log(1e3), std::log(60e9))(r));
       }},
      {"lognormal, median 1 ms, sigma 2.5",
       [](std::mt19937_64& r) {
         return std::lognormal_distribution<double>(std::log(1e6), 2.5)(r);
       }},
      {"exponential, mean 50 us",
       [](std::mt19937_64& r) {
         return std::exponential_distribution<double>(1.0 / 50e3)(r);
       }},
      {"bimodal: 90% ~10 us, 10% ~5 s",
       [](std::mt19937_64& r) {
         const bool slow = std::bernoulli_distribution(0.1)(r);
         return std::lognormal_distribution<double>(std::log(slow ? 5e9 : 1e4),
                                                    slow ? 0.5 : 0.3)(r);
       }},
  };
  const double quantiles[] = {0.5, 0.9, 0.99, 0.999};
  std::uint64_t seed = 1;
  for (const Case& c : cases) {
    for (int round = 0; round < 3; ++round, ++seed) {
      std::vector<std::uint64_t> values = generate(c.generator, 50'000, seed);
      auto recorder = std::make_unique<LatencyRecorder>();
      for (std::uint64_t v : values) recorder->record(v);
      const HistogramSnapshot snapshot = snapshot_of(*recorder);
      std::sort(values.begin(), values.end());
      REQUIRE(snapshot.count() == values.size());
      REQUIRE(snapshot.max_nanos() == values.back());
      for (double q : quantiles) {
        const auto exact = static_cast<double>(exact_quantile(values, q));
        const double estimate = snapshot.quantile_nanos(q);
        INFO(c.name << ", seed " << seed << ", q " << q << ": exact " << exact
                    << " ns, estimate " << estimate << " ns");
        REQUIRE(std::abs(estimate - exact) <= exact / 128);
        REQUIRE(std::abs(estimate - exact) <= exact * 0.01);
      }
    }
  }
}

TEST_CASE("histogram: merging equals recording both into one", "[histogram]") {
  const auto a = generate(
      [](std::mt19937_64& r) {
        return std::lognormal_distribution<double>(std::log(2e4), 1.0)(r);
      },
      20'000, 7);
  const auto b = generate(
      [](std::mt19937_64& r) {
        return std::exponential_distribution<double>(1.0 / 3e6)(r);
      },
      30'000, 8);
  auto recorder_a = std::make_unique<LatencyRecorder>();
  auto recorder_b = std::make_unique<LatencyRecorder>();
  auto recorder_all = std::make_unique<LatencyRecorder>();
  for (std::uint64_t v : a) recorder_a->record(v);
  for (std::uint64_t v : b) recorder_b->record(v);
  for (std::uint64_t v : a) recorder_all->record(v);
  for (std::uint64_t v : b) recorder_all->record(v);

  HistogramSnapshot merged = snapshot_of(*recorder_a);
  merged.merge(snapshot_of(*recorder_b));
  const HistogramSnapshot all = snapshot_of(*recorder_all);
  REQUIRE(merged.count() == all.count());
  REQUIRE(merged.sum_nanos() == all.sum_nanos());
  REQUIRE(merged.max_nanos() == all.max_nanos());
  REQUIRE(merged.buckets() == all.buckets());
  for (double q : {0.0, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    REQUIRE(merged.quantile_nanos(q) == all.quantile_nanos(q));
  }

  // add_to() into a non-empty snapshot merges too; so does add().
  HistogramSnapshot accumulated;
  recorder_a->add_to(accumulated);
  recorder_b->add_to(accumulated);
  REQUIRE(accumulated.buckets() == all.buckets());
  HistogramSnapshot added;
  for (std::uint64_t v : a) added.add(v);
  for (std::uint64_t v : b) added.add(v);
  REQUIRE(added.buckets() == all.buckets());
  REQUIRE(added.sum_nanos() == all.sum_nanos());
}

TEST_CASE("histogram: count, sum, max and mean are exact", "[histogram]") {
  LatencyRecorder recorder;
  for (std::uint64_t v : {5u, 1'000u, 123'456u, 999u, 5u}) recorder.record(v);
  REQUIRE(recorder.count() == 5);
  const HistogramSnapshot s = snapshot_of(recorder);
  REQUIRE(s.count() == 5);
  REQUIRE(s.sum_nanos() == 5 + 1'000 + 123'456 + 999 + 5);
  REQUIRE(s.max_nanos() == 123'456);
  REQUIRE(s.mean_nanos() == Approx(125'465.0 / 5));
  REQUIRE_FALSE(s.empty());
  // Values below 128 ns are exact; the minimum is reported as itself.
  REQUIRE(s.quantile_nanos(0) == 5);
  REQUIRE(s.quantile_nanos(0.4) == 5);
  // The top sample's bucket is [122880, 123903]: its midpoint.
  REQUIRE(s.quantile_nanos(1) == 123'391.5);
  // A bucket whose midpoint lies above the max reports the max.
  HistogramSnapshot low;
  low.add(122'900);
  REQUIRE(low.quantile_nanos(1) == 122'900);
  REQUIRE(s.quantile_nanos(0.8) == Approx(1'003.5));  // bucket [1000, 1007]

  HistogramSnapshot times;
  times.add(100, 3);
  times.add(7, 0);  // nothing
  REQUIRE(times.count() == 3);
  REQUIRE(times.sum_nanos() == 300);
  REQUIRE(times.max_nanos() == 100);
}

TEST_CASE("histogram: quantile arguments below 0 or above 1 are clamped",
          "[histogram]") {
  HistogramSnapshot s;
  for (std::uint64_t v = 1; v <= 100; ++v) s.add(v);
  REQUIRE(s.quantile_nanos(-1) == 1);
  REQUIRE(s.quantile_nanos(std::nan("")) == 1);
  REQUIRE(s.quantile_nanos(2) == 100);
  REQUIRE(s.quantile_nanos(0.5) == 50);
  REQUIRE(s.quantile_nanos(0.501) == 51);
}

TEST_CASE("histogram: count_at_or_below counts only whole buckets",
          "[histogram]") {
  // 1000 ns opens the bucket [1000, 1007]; 999 closes [992, 999].
  REQUIRE(HistogramLayout::lower_bound(HistogramLayout::bucket_of(1'000)) ==
          1'000);
  REQUIRE(HistogramLayout::upper_bound(HistogramLayout::bucket_of(1'000)) ==
          1'007);
  HistogramSnapshot s;
  s.add(999);
  s.add(1'000);
  s.add(1'003);
  s.add(2 * kSecond);
  REQUIRE(s.count_at_or_below(998) == 0);
  REQUIRE(s.count_at_or_below(999) == 1);
  REQUIRE(s.count_at_or_below(1'000) == 1);  // [1000, 1007] straddles: above
  REQUIRE(s.count_at_or_below(1'006) == 1);
  REQUIRE(s.count_at_or_below(1'007) == 3);
  REQUIRE(s.count_at_or_below(kSecond) == 3);
  REQUIRE(s.count_at_or_below(2 * kSecond - 1) == 3);
  REQUIRE(s.count_at_or_below(2 * kSecond) == 4);  // >= max: all
  REQUIRE(s.count_at_or_below(std::numeric_limits<std::uint64_t>::max()) == 4);
}

TEST_CASE("histogram: values above kMaxTrackable land in the last bucket",
          "[histogram]") {
  constexpr std::uint64_t kHuge = 1'000 * kSecond;  // 1000 s
  LatencyRecorder recorder;
  recorder.record(kMicrosecond);
  recorder.record(kHuge);
  const HistogramSnapshot s = snapshot_of(recorder);
  REQUIRE(s.count() == 2);
  REQUIRE(s.max_nanos() == kHuge);
  REQUIRE(s.sum_nanos() == kHuge + kMicrosecond);
  REQUIRE(s.buckets().back() == 1);
  const std::size_t last = HistogramLayout::kBucketCount - 1;
  REQUIRE(s.quantile_nanos(1) >=
          static_cast<double>(HistogramLayout::lower_bound(last)));
  REQUIRE(s.count_at_or_below(HistogramLayout::kMaxTrackable) == 1);
  REQUIRE(s.count_at_or_below(kHuge) == 2);
}

TEST_CASE(
    "histogram: add_to reads every bucket from the smallest to the largest "
    "sample",
    "[histogram]") {
  // add_to() scans only [bucket_of(min), bucket_of(max)]: samples at both
  // ends, at 0 and in the middle must all be found, also after the range
  // widens in either direction.
  LatencyRecorder recorder;
  recorder.record(5 * kMicrosecond);
  REQUIRE(snapshot_of(recorder).count() == 1);
  recorder.record(7 * kMicrosecond, 3);
  recorder.record(2 * kSecond);  // widens upwards
  recorder.record(0);            // and down to the first bucket
  recorder.record(kMicrosecond);
  const HistogramSnapshot s = snapshot_of(recorder);
  REQUIRE(s.count() == 7);
  CHECK(s.buckets()[0] == 1);
  CHECK(s.buckets()[HistogramLayout::bucket_of(2 * kSecond)] == 1);
  CHECK(s.buckets()[HistogramLayout::bucket_of(7 * kMicrosecond)] == 3);
  CHECK(s.count_at_or_below(2 * kSecond) == 7);
}

TEST_CASE("histogram: empty recorder and snapshot", "[histogram]") {
  HistogramSnapshot s;
  REQUIRE(s.empty());
  REQUIRE(s.count() == 0);
  REQUIRE(s.sum_nanos() == 0);
  REQUIRE(s.max_nanos() == 0);
  REQUIRE(s.mean_nanos() == 0);
  REQUIRE(s.quantile_nanos(0.5) == 0);
  REQUIRE(s.count_at_or_below(1'000) == 0);
  REQUIRE(s.buckets().empty());

  LatencyRecorder recorder;
  REQUIRE(recorder.count() == 0);
  recorder.add_to(s);
  REQUIRE(s.empty());
  REQUIRE(s.buckets().empty());  // nothing allocated

  HistogramSnapshot other;
  other.add(42);
  other.merge(s);  // merging an empty one changes nothing
  REQUIRE(other.count() == 1);
  s.merge(other);
  REQUIRE(s.count() == 1);
  REQUIRE(s.buckets().size() == HistogramLayout::kBucketCount);
}

TEST_CASE("histogram: add_to while another thread records stays bounded",
          "[histogram]") {
  constexpr std::uint64_t kSamples = 300'000;
  auto recorder = std::make_unique<LatencyRecorder>();
  std::atomic<bool> done{false};
  std::latch started(1);
  std::thread writer([&] {
    started.count_down();
    for (std::uint64_t i = 0; i < kSamples; ++i) {
      recorder->record(i % 5'000'000);
    }
    // release: pairs with the acquire load below; the reader's final
    // snapshot (after join) does not rely on it.
    done.store(true, std::memory_order_release);
  });
  started.wait();

  // Assertions stay on this thread: collect violations, check after join.
  std::uint64_t snapshots = 0, previous = 0, went_back = 0, too_many = 0,
                torn_count = 0, recorder_over = 0;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  // acquire: pairs with the release store in the writer.
  while (!done.load(std::memory_order_acquire) &&
         std::chrono::steady_clock::now() < deadline) {
    const HistogramSnapshot s = snapshot_of(*recorder);
    std::uint64_t bucket_sum = 0;
    for (std::uint64_t n : s.buckets()) bucket_sum += n;
    if (s.count() != bucket_sum) ++torn_count;
    if (s.count() < previous) ++went_back;
    if (s.count() > kSamples) ++too_many;
    if (recorder->count() > kSamples) ++recorder_over;
    previous = s.count();
    ++snapshots;
  }
  writer.join();
  INFO(snapshots << " snapshots taken while recording");
  REQUIRE(went_back == 0);
  REQUIRE(too_many == 0);
  REQUIRE(torn_count == 0);
  REQUIRE(recorder_over == 0);

  const HistogramSnapshot final_snapshot = snapshot_of(*recorder);
  std::uint64_t sum = 0;
  for (std::uint64_t i = 0; i < kSamples; ++i) sum += i % 5'000'000;
  REQUIRE(final_snapshot.count() == kSamples);
  REQUIRE(recorder->count() == kSamples);
  REQUIRE(final_snapshot.sum_nanos() == sum);
  REQUIRE(final_snapshot.max_nanos() == kSamples - 1);
}
