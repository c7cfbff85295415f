// mesh::VersionSplit and mesh::CanaryJudge: what a versioned function adds
// to each call. route() and route_key() are the dispatch path's part (a
// sequence-lock read, no shared write), swept over threads; record() is
// the outcome's part (the judge's mutex), with a 10% canary so that every
// 10th call is a canary's and every 100th runs the latency test over a
// full 1000-call window. The baseline (BM_Random_Next) is the draw alone.
// BM_VersionedHandler_Trigger is the whole composed handler through
// EventBus::trigger: /0 a plain handler (the baseline), /1 a
// mesh::VersionedHandler with the stable version only, /2 with a 10%
// canary; the handler body is the same counter increment.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "support.hpp"
#include <benchmark/benchmark.h>

#include "fnbus/event_bus.hpp"
#include "fnbus/mesh/canary_judge.hpp"
#include "fnbus/mesh/version_split.hpp"
#include "fnbus/mesh/versioned_handler.hpp"
#include "fnbus/random.hpp"

namespace fnbus_bench {
namespace {

using fnbus::Duration;
using fnbus::Random;
using fnbus::mesh::CanaryJudge;
using fnbus::mesh::VersionSplit;

std::unique_ptr<VersionSplit> split_with_canary() {
  auto split = *VersionSplit::Create("v1");
  (void)split->deploy_canary("v2", 0.1);
  return split;
}

void BM_Random_Next(benchmark::State& state) {
  Random random(static_cast<std::uint64_t>(state.thread_index()) + 1);
  for (auto _ : state) benchmark::DoNotOptimize(random.next());
}

void BM_VersionSplit_Route(benchmark::State& state) {
  static std::unique_ptr<VersionSplit> split;
  if (state.thread_index() == 0) split = split_with_canary();
  Random random(static_cast<std::uint64_t>(state.thread_index()) + 1);
  for (auto _ : state) benchmark::DoNotOptimize(split->route(random.next()));
}

void BM_VersionSplit_RouteKey(benchmark::State& state) {
  auto split = split_with_canary();
  std::vector<std::string> keys;
  for (int k = 0; k < 1024; ++k)
    keys.push_back("customer-" + std::to_string(k));
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(split->route_key(keys[i++ & 1023]));
  }
}

void BM_CanaryJudge_Record(benchmark::State& state) {
  auto judge = *CanaryJudge::Create({});  // window_calls 1000
  judge->set_versions(1, 2);
  Random random(1);
  std::uint64_t i = 0;
  for (auto _ : state) {
    const fnbus::mesh::VersionId version = i++ % 10 == 0 ? 2 : 1;
    const auto latency = Duration(1'000'000 + random.uniform_to(1'000'000));
    benchmark::DoNotOptimize(judge->record(version, true, latency));
  }
}

// This file's own event type (see run_trigger() in support.hpp).
struct VersionedTick {
  std::int64_t value = 1;
};

void BM_VersionedHandler_Trigger(benchmark::State& state) {
  auto bus = fnbus::EventBus::Create({.workers = 1});
  if (!bus.ok()) {
    state.SkipWithError(bus.status().ToString().c_str());
    return;
  }
  Sum sum;
  const AddToCounter<VersionedTick> body{&sum.value};
  fnbus::Subscription subscription;
  if (state.range(0) == 0) {
    subscription = (*bus)->subscribe<VersionedTick>(body);
  } else {
    auto versioned = fnbus::mesh::VersionedHandler<VersionedTick>::Create(
        "v1", body, {.clock = &(*bus)->clock()});
    if (state.range(0) == 2) {
      (void)versioned->deploy_canary("v2", body, 0.1);
    }
    subscription = (*bus)->subscribe<VersionedTick>(*versioned);
  }
  const VersionedTick tick;
  for (auto _ : state) (*bus)->trigger(tick);
  check_sums(state, &sum, 1);
}

}  // namespace

void register_mesh_versions_benchmarks() {
  benchmark::RegisterBenchmark("BM_Random_Next", BM_Random_Next)
      ->Threads(1)
      ->Threads(2);
  benchmark::RegisterBenchmark("BM_VersionSplit_Route", BM_VersionSplit_Route)
      ->Threads(1)
      ->Threads(2);
  benchmark::RegisterBenchmark("BM_VersionSplit_RouteKey",
                               BM_VersionSplit_RouteKey);
  benchmark::RegisterBenchmark("BM_CanaryJudge_Record", BM_CanaryJudge_Record);
  benchmark::RegisterBenchmark("BM_VersionedHandler_Trigger",
                               BM_VersionedHandler_Trigger)
      ->Arg(0)
      ->Arg(1)
      ->Arg(2);
}

}  // namespace fnbus_bench
