// metrics::LatencyRecorder::record -- what each timed event costs the bus
// when BusConfig::record_latency is on -- against the same bucket
// arithmetic on a plain (non-atomic) array, and against keeping raw
// samples in a std::vector. Target: record() <= 10 ns per sample.
// Also the reader's side: one add_to() of a filled recorder.
//
// All three contenders record the same 16,384 pre-generated lognormal
// values (median 50 us, sigma 1.5), cycling through them; each iteration
// ends with benchmark::ClobberMemory() so that none of them can keep its
// counters in registers across samples.

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "support.hpp"
#include <benchmark/benchmark.h>

#include "fnbus/metrics/histogram.hpp"

namespace fnbus_bench {
namespace {

using fnbus::metrics::HistogramLayout;
using fnbus::metrics::HistogramSnapshot;
using fnbus::metrics::LatencyRecorder;

constexpr std::size_t kValues = std::size_t{1} << 14;  // 128 KiB: in L2

std::vector<std::uint64_t> lognormal_values() {
  std::mt19937_64 random(42);
  std::lognormal_distribution<double> dist(std::log(50e3), 1.5);
  std::vector<std::uint64_t> values(kValues);
  for (std::uint64_t& v : values) v = static_cast<std::uint64_t>(dist(random));
  return values;
}

// The baseline: LatencyRecorder's arithmetic on plain integers.
struct PlainHistogram {
  std::array<std::uint64_t, HistogramLayout::kBucketCount> buckets{};
  std::uint64_t count = 0;
  std::uint64_t sum = 0;
  std::uint64_t max = 0;

  void record(std::uint64_t nanos) noexcept {
    if (nanos > max) max = nanos;
    sum += nanos;
    ++count;
    ++buckets[HistogramLayout::bucket_of(nanos)];
  }
};

void BM_Histogram_Record(benchmark::State& state) {
  const std::vector<std::uint64_t> values = lognormal_values();
  auto recorder = std::make_unique<LatencyRecorder>();
  std::size_t i = 0;
  for (auto _ : state) {
    recorder->record(values[i++ & (kValues - 1)]);
    benchmark::ClobberMemory();
  }
  if (recorder->count() != static_cast<std::uint64_t>(state.iterations())) {
    state.SkipWithError("samples lost");
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Histogram_PlainArray(benchmark::State& state) {
  const std::vector<std::uint64_t> values = lognormal_values();
  auto histogram = std::make_unique<PlainHistogram>();
  std::size_t i = 0;
  for (auto _ : state) {
    histogram->record(values[i++ & (kValues - 1)]);
    benchmark::ClobberMemory();
  }
  if (histogram->count != static_cast<std::uint64_t>(state.iterations())) {
    state.SkipWithError("samples lost");
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Histogram_VectorPushBack(benchmark::State& state) {
  const std::vector<std::uint64_t> values = lognormal_values();
  std::vector<std::uint64_t> samples;
  samples.reserve(kValues);
  std::size_t i = 0;
  for (auto _ : state) {
    if (samples.size() == kValues) [[unlikely]]
      samples.clear();  // keeps the capacity: no allocation in the loop
    samples.push_back(values[i++ & (kValues - 1)]);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}

// One scrape of one recorder (the bus scrapes one per worker, event type
// and histogram): 1,984 relaxed loads into a fresh snapshot.
void BM_Histogram_AddTo(benchmark::State& state) {
  const std::vector<std::uint64_t> values = lognormal_values();
  auto recorder = std::make_unique<LatencyRecorder>();
  for (std::uint64_t v : values) recorder->record(v);
  for (auto _ : state) {
    HistogramSnapshot snapshot;
    recorder->add_to(snapshot);
    benchmark::DoNotOptimize(snapshot.count());
  }
}

}  // namespace

void register_histogram_benchmarks() {
  benchmark::RegisterBenchmark("BM_Histogram_Record", BM_Histogram_Record);
  benchmark::RegisterBenchmark("BM_Histogram_PlainArray",
                               BM_Histogram_PlainArray);
  benchmark::RegisterBenchmark("BM_Histogram_VectorPushBack",
                               BM_Histogram_VectorPushBack);
  benchmark::RegisterBenchmark("BM_Histogram_AddTo", BM_Histogram_AddTo);
}

}  // namespace fnbus_bench
