// The autoscaler's two targets (issue: live thread-pool scaling).
//
// (a) "The controller's tick costs under 1% of one core at a 100 ms
// period." BM_Autoscaler_Tick times Autoscaler::tick_now() -- metrics
// snapshot, estimator, SloGuard, governor -- on an idle bus that has
// handled events of 4 types through 8 functions, so that every histogram
// exists. The autoscaler is started with a 1-hour tick, so that only
// tick_now() ticks. `warmed` workers (the pool grown to that size during
// warm-up, then shrunk back to 2, as after a peak) have each dispatched
// every type: per-worker metrics exist in that many shards, and a snapshot
// merges them all. core_pct_at_100ms = thread CPU time per tick / 100 ms
// x 100. The baseline BM_Bus_MetricsSnapshot times EventBus::metrics()
// alone on the same bus, which shows where the tick's time goes.
//
// (b) "Live resizing does not lower throughput at a steady load compared
// with a fixed pool of the same size." The throughput harness of
// throughput_bench.cpp (1 producer, kBatch events per iteration, kBlock,
// wait until handled; every accepted event checked handled), on:
// - BM_Throughput_FixedPool/workers:N: BusConfig{.workers = N}, no
//   max_workers (a fixed pool), no autoscaler: the baseline.
// - BM_Throughput_ResizableNoAutoscaler/workers:2: workers 2, max_workers
//   8, no autoscaler (the resizable pool's own cost).
// - BM_Throughput_Autoscaled/workers:2: workers 2, max_workers 8, and an
//   Autoscaler with SloGuard at the default 100 ms tick on the real clock,
//   governor bounds min = max = 2: the controller runs and decides every
//   tick, and the pool stays the size of the fixed one.
// - BM_Throughput_AutoscaledChurn/workers:1to2 (the cost of resizing
//   itself, not a steady-load figure): a scripted policy resizes the pool
//   every tick, 2 -> 1 -> 2 -> ..., so half the time runs on each size;
//   compare with the mean of FixedPool/workers:1 and /workers:2.
// Counters: workers (the pool's size at the end), resizes and ticks (the
// autoscaler's), rejected/refused (expected 0), handoff_ns and
// handoff_end_ns (the host's near/far state before and after).
//
// (c) "The forecaster's decide() cost stays within the 100 us tick budget
// with a week of history." BM_Forecaster_ObserveForecast times one tick of
// the Forecaster (default season: 7 days of 24 h in 15-minute buckets)
// after a week of 100 ms ticks: observe() plus forecast() over the
// Predictive default horizon (10 s), the clock moving 100 ms per
// iteration. BM_Predictive_Decide times Predictive::decide() (the
// forecaster, the surge calendar with one announcement ahead, ErlangSlo on
// the plan and SloGuard) after a week of 60 s ticks, 40 workers' worth of
// load; its baseline BM_SloGuard_Decide is SloGuard::decide() alone on the
// same snapshots.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "baselines.hpp"
#include "support.hpp"
#include <benchmark/benchmark.h>

#include "fnbus/event_bus.hpp"
#include "fnbus/scaling/autoscaler.hpp"
#include "fnbus/scaling/forecaster.hpp"
#include "fnbus/scaling/policy.hpp"
#include "fnbus/scaling/predictive.hpp"
#include "fnbus/scaling/slo_policies.hpp"

namespace fnbus_bench {
namespace {

using fnbus::scaling::Autoscaler;
using fnbus::scaling::AutoscalerStats;

// ---------------------------------------------------------------------------
// (a) The cost of one tick.

constexpr double kTickPeriodNs = 100e6;  // the default 100 ms tick
constexpr std::int64_t kGateTimeoutNs = 10'000'000'000;  // 10 s

// CPU time of the calling thread, in nanoseconds.
std::int64_t thread_cpu_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Makes `target` workers take one event each: every gated handler arrives
// and waits (up to kGateTimeoutNs) until `target` handlers have arrived, so
// no worker can take a second gated event first.
struct Gate {
  // Gated handlers that have arrived: bumped by each of them, read by them
  // and by the benchmark thread. relaxed: a count that only decides when
  // to stop waiting; no other data is read on the strength of it.
  std::atomic<std::size_t> arrived{0};
  // Written by the benchmark thread before it publishes the gated events
  // (publish() makes it visible to their handlers).
  std::size_t target = 0;

  void arrive_and_wait() noexcept {
    // relaxed: see `arrived`.
    arrived.fetch_add(1, std::memory_order_relaxed);
    const std::int64_t deadline = now_ns() + kGateTimeoutNs;
    wait_until([&] {
      // relaxed: see `arrived`.
      return arrived.load(std::memory_order_relaxed) >= target ||
             now_ns() > deadline;
    });
  }
};

// Four event types, named as a service's would be.
constexpr std::string_view kTypeNames[] = {"order.placed", "payment.taken",
                                           "parcel.shipped", "audit.logged"};

template <std::size_t I>
struct TickEvent {
  static constexpr std::string_view kEventName = kTypeNames[I];
  Gate* gate = nullptr;    // non-null: a warm-up event for the gate
  std::uint32_t work = 0;  // spin iterations, spreads the run times
};

// One function: optional gate (the first function of each type), then
// `work` iterations of busy arithmetic.
template <std::size_t I>
struct Work {
  bool gated = false;
  void operator()(const TickEvent<I>& event) const noexcept {
    if (gated && event.gate != nullptr) event.gate->arrive_and_wait();
    std::uint64_t x = event.work;
    for (std::uint32_t i = 0; i < event.work; ++i) {
      x = x * 6364136223846793005u + 1442695040888963407u;
      benchmark::DoNotOptimize(x);
    }
  }
};

// Functions per type: 3 + 2 + 2 + 1 = 8.
constexpr std::size_t kFunctionsPerType[] = {3, 2, 2, 1};
constexpr std::uint32_t kWarmupEventsPerType = 2000;

// What the tick benchmarks share; members are destroyed in reverse order:
// the autoscaler stops before the bus goes.
struct TickRig {
  std::unique_ptr<fnbus::EventBus> bus;
  std::vector<fnbus::Subscription> subscriptions;
  // One per type: a gate is used once, so that a handler still leaving
  // one gate never sees the next one's count.
  Gate gates[std::size(kTypeNames)];
  std::unique_ptr<Autoscaler> autoscaler;
};

template <std::size_t I>
void subscribe_type(TickRig& rig) {
  for (std::size_t f = 0; f < kFunctionsPerType[I]; ++f) {
    rig.subscriptions.push_back(rig.bus->subscribe<TickEvent<I>>(
        Work<I>{.gated = f == 0},
        {.name = std::string(kTypeNames[I]) + ".fn" + std::to_string(f)}));
  }
}

// Publishes `warmed` gated events of type I (one per worker), then
// kWarmupEventsPerType ordinary ones with varied work. Returns false if the
// gate did not fill in time.
template <std::size_t I>
bool warm_type(TickRig& rig, std::size_t warmed) {
  Gate& gate = rig.gates[I];
  gate.target = warmed;
  for (std::size_t w = 0; w < warmed; ++w) {
    if (!rig.bus->publish(TickEvent<I>{.gate = &gate, .work = 10}).ok()) {
      return false;
    }
  }
  const std::int64_t deadline = now_ns() + kGateTimeoutNs;
  // relaxed (both loads): see Gate::arrived.
  wait_until([&] {
    return gate.arrived.load(std::memory_order_relaxed) >= warmed ||
           now_ns() > deadline;
  });
  if (gate.arrived.load(std::memory_order_relaxed) < warmed) return false;
  for (std::uint32_t i = 0; i < kWarmupEventsPerType; ++i) {
    // 0 .. 4095 iterations, a spread of run times over many buckets.
    const std::uint32_t work = (i * 2654435761u) >> 20;
    if (!rig.bus->publish(TickEvent<I>{.work = work}).ok()) return false;
  }
  return true;
}

// Builds the bus of the tick benchmarks; an error message, or empty.
std::string build_tick_rig(TickRig& rig, std::size_t max_workers,
                           std::size_t warmed) {
  auto bus =
      fnbus::EventBus::Create({.workers = 2,
                               .max_workers = max_workers,
                               .overflow = fnbus::OverflowPolicy::kBlock,
                               .block_timeout = std::chrono::seconds(10)});
  if (!bus.ok()) return bus.status().ToString();
  rig.bus = *std::move(bus);
  subscribe_type<0>(rig);
  subscribe_type<1>(rig);
  subscribe_type<2>(rig);
  subscribe_type<3>(rig);
  if (!rig.bus->resize_workers(warmed).ok()) return "resize to warm failed";
  if (!(warm_type<0>(rig, warmed) && warm_type<1>(rig, warmed) &&
        warm_type<2>(rig, warmed) && warm_type<3>(rig, warmed))) {
    return "warm-up: a gate did not fill (fewer workers than asked?)";
  }
  wait_until([&] {
    const fnbus::BusStats stats = rig.bus->stats();
    return stats.dispatched >= stats.published;
  });
  // After the peak: back to the size the autoscaler will hold.
  if (!rig.bus->resize_workers(2).ok()) return "resize to 2 failed";
  auto policy = fnbus::scaling::SloGuard::Create({});
  if (!policy.ok()) return policy.status().ToString();
  auto autoscaler = Autoscaler::Start(
      *rig.bus, *std::move(policy),
      {.tick = std::chrono::hours(1),
       .governor = {.min_workers = 2, .max_workers = max_workers}});
  if (!autoscaler.ok()) return autoscaler.status().ToString();
  rig.autoscaler = *std::move(autoscaler);
  return {};
}

// Times `body` per iteration in thread CPU time, and reports it as a share
// of one core at one call per 100 ms.
template <typename Body>
void run_tick_loop(benchmark::State& state, Body body) {
  const std::int64_t cpu_start = thread_cpu_ns();
  for (auto _ : state) body();
  const double cpu_per_call = static_cast<double>(thread_cpu_ns() - cpu_start) /
                              static_cast<double>(state.iterations());
  state.counters["cpu_ns"] = cpu_per_call;
  state.counters["core_pct_at_100ms"] = cpu_per_call / kTickPeriodNs * 100;
}

// build_tick_rig() with the benchmark's arguments -- range(0):
// BusConfig::max_workers; range(1): workers that dispatched every type
// during warm-up. False (and the benchmark skipped) on failure.
bool build_tick_rig(benchmark::State& state, TickRig& rig) {
  const std::string error =
      build_tick_rig(rig, static_cast<std::size_t>(state.range(0)),
                     static_cast<std::size_t>(state.range(1)));
  if (!error.empty()) state.SkipWithError(error.c_str());
  return error.empty();
}

void BM_Autoscaler_Tick(benchmark::State& state) {
  TickRig rig;
  if (!build_tick_rig(state, rig)) return;
  run_tick_loop(state, [&] {
    fnbus::scaling::AutoscalerTick tick = rig.autoscaler->tick_now();
    benchmark::DoNotOptimize(&tick);
  });
  const AutoscalerStats stats = rig.autoscaler->stats();
  // The bus is idle: no tick should have resized it.
  state.counters["resizes"] = static_cast<double>(stats.resizes);
  state.counters["workers"] = static_cast<double>(stats.workers);
  rig.autoscaler->stop();
  if (!rig.bus->shutdown().ok()) state.SkipWithError("shutdown failed");
}

// The baseline: EventBus::metrics() alone, on the same bus.
void BM_Bus_MetricsSnapshot(benchmark::State& state) {
  TickRig rig;
  if (!build_tick_rig(state, rig)) return;
  std::size_t functions = 0;
  run_tick_loop(state, [&] {
    fnbus::metrics::MetricsSnapshot snapshot = rig.bus->metrics();
    functions = snapshot.functions.size();
    benchmark::DoNotOptimize(&snapshot);
  });
  state.counters["functions"] = static_cast<double>(functions);
  rig.autoscaler->stop();
  if (!rig.bus->shutdown().ok()) state.SkipWithError("shutdown failed");
}

// ---------------------------------------------------------------------------
// (b) Throughput with and without live resizing.

struct Item {
  std::uint32_t value;
};

// One producer, and room for the threads a resized pool starts during a
// run: each growth after a shrink may start a new thread, which claims a
// new cell.
using ThreadCellCounter = BasicHandledCounter<256, 1>;

constexpr std::uint64_t kBatch = 1024;  // events per iteration

enum class Scaling {
  kNone,            // no autoscaler
  kPinnedSloGuard,  // SloGuard, governor min = max = workers
  kChurn,           // scripted: every tick, 2 -> 1 -> 2 -> ...
};

struct ThroughputSetup {
  std::size_t workers = 2;      // the pool's starting size
  std::size_t max_workers = 0;  // BusConfig::max_workers; 0: a fixed pool
  Scaling scaling = Scaling::kNone;
};

// Members are destroyed in reverse order: autoscaler, subscription, bus.
struct ThroughputRig {
  ThreadCellCounter handled;
  std::unique_ptr<fnbus::EventBus> bus;
  fnbus::Subscription subscription;
  std::unique_ptr<Autoscaler> autoscaler;
};

std::unique_ptr<fnbus::scaling::ScalingPolicy> churn_policy() {
  return fnbus::scaling::make_policy(
      "churn", [](const fnbus::scaling::LoadSnapshot& load) {
        return fnbus::scaling::ScalingDecision{
            .target = load.workers() >= 2 ? 1.0 : 2.0, .reason = "churn"};
      });
}

absl::Status start_autoscaler(ThroughputRig& rig, std::size_t workers,
                              Scaling scaling) {
  std::unique_ptr<fnbus::scaling::ScalingPolicy> policy;
  fnbus::scaling::GovernorOptions governor;
  if (scaling == Scaling::kPinnedSloGuard) {
    auto slo_guard = fnbus::scaling::SloGuard::Create({});
    if (!slo_guard.ok()) return slo_guard.status();
    policy = *std::move(slo_guard);
    governor = {.min_workers = workers, .max_workers = workers};
  } else {
    policy = churn_policy();
    // No stabilisation window, so every tick's shrink goes through.
    governor = {.min_workers = 1,
                .max_workers = 2,
                .down_stabilisation = fnbus::Duration::zero()};
  }
  auto autoscaler =
      Autoscaler::Start(*rig.bus, std::move(policy), {.governor = governor});
  if (!autoscaler.ok()) return autoscaler.status();
  rig.autoscaler = *std::move(autoscaler);
  return absl::OkStatus();
}

void BM_Throughput_Scaled(benchmark::State& state, ThroughputSetup setup) {
  const std::size_t workers = setup.workers;
  const double handoff_ns = handoff_p50_ns();
  auto rig = std::make_unique<ThroughputRig>();
  auto bus =
      fnbus::EventBus::Create({.workers = workers,
                               .max_workers = setup.max_workers,
                               .overflow = fnbus::OverflowPolicy::kBlock});
  if (!bus.ok()) {
    state.SkipWithError(bus.status().ToString().c_str());
    return;
  }
  rig->bus = *std::move(bus);
  rig->subscription = rig->bus->subscribe<Item>(
      [handled = &rig->handled](const Item&) noexcept { handled->add(0); },
      {.name = "count"});
  if (setup.scaling != Scaling::kNone) {
    if (absl::Status status = start_autoscaler(*rig, workers, setup.scaling);
        !status.ok()) {
      state.SkipWithError(status.ToString().c_str());
      return;
    }
  }

  std::uint64_t accepted = 0;
  std::uint64_t refused = 0;
  for (auto _ : state) {
    for (std::uint64_t i = 0; i < kBatch; ++i) {
      if (rig->bus->publish(Item{1}).ok()) {
        ++accepted;
      } else {
        ++refused;
      }
    }
    rig->handled.wait_for(0, accepted);
  }

  state.SetItemsProcessed(static_cast<std::int64_t>(accepted));
  state.counters["refused"] = static_cast<double>(refused);
  state.counters["workers"] =
      static_cast<double>(rig->bus->pool_stats().workers);
  if (rig->autoscaler != nullptr) {
    rig->autoscaler->stop();
    const AutoscalerStats stats = rig->autoscaler->stats();
    state.counters["ticks"] = static_cast<double>(stats.ticks);
    state.counters["resizes"] = static_cast<double>(stats.resizes);
    // Pinned: how often, and to what, the policy asked for another size.
    state.counters["clamped"] = static_cast<double>(stats.clamped_targets);
    state.counters["last_target"] = stats.last_target;
  }
  if (!rig->bus->shutdown().ok()) state.SkipWithError("shutdown failed");
  const fnbus::BusStats stats = rig->bus->stats();
  if (rig->handled.handled(0) != stats.published ||
      stats.dispatched != stats.published || stats.published != accepted) {
    state.SkipWithError("accepted events went unhandled");
  }
  state.counters["rejected"] = static_cast<double>(stats.rejected);
  state.counters["handoff_ns"] = handoff_ns;
  rig.reset();
  state.counters["handoff_end_ns"] = handoff_p50_ns();
}

// ---------------------------------------------------------------------------
// (c) The predictive policy's cost per tick.

// A day-and-week shape with noise: 20 000 events/s at the daily peak,
// weekends at 60 %, +-10 % noise (a fixed LCG, so every run sees the same
// load).
class WeeklyLoad {
 public:
  double rate(fnbus::TimePoint t) {
    const double day =
        std::chrono::duration<double>(std::chrono::hours(24)).count();
    const double s =
        std::chrono::duration<double>(t.time_since_epoch()).count();
    const double phase = std::fmod(s, day) / day;
    const bool weekend = std::fmod(s, 7 * day) >= 5 * day;
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
    const double noise =
        0.9 + 0.2 * static_cast<double>(state_ >> 11) * 0x1.0p-53;
    return 20'000 * (0.55 - 0.45 * std::cos(2 * 3.14159265358979 * phase)) *
           (weekend ? 0.6 : 1.0) * noise;
  }

 private:
  std::uint64_t state_ = 42;
};

fnbus::scaling::LoadSnapshot weekly_snapshot(WeeklyLoad& load,
                                             fnbus::TimePoint now,
                                             fnbus::Duration tick) {
  fnbus::scaling::LoadSnapshot snapshot;
  snapshot.now = now;
  snapshot.tick = tick;
  snapshot.arrival_rate_fast = load.rate(now);
  snapshot.arrival_rate_slow = snapshot.arrival_rate_fast;
  snapshot.service_time_mean = 0.002;
  snapshot.service_time_scv = 1.5;
  snapshot.workers_running = 40;
  snapshot.min_workers = 1;
  snapshot.max_workers = 64;
  return snapshot;
}

constexpr fnbus::Duration kWeek = std::chrono::hours(24 * 7);

void BM_Forecaster_ObserveForecast(benchmark::State& state) {
  auto forecaster = fnbus::scaling::Forecaster::Create();
  if (!forecaster.ok()) {
    state.SkipWithError("Forecaster::Create failed");
    return;
  }
  WeeklyLoad load;
  constexpr fnbus::Duration kTick = std::chrono::milliseconds(100);
  fnbus::TimePoint now{};
  for (; now < fnbus::TimePoint{} + kWeek; now += kTick) {
    forecaster->observe(weekly_snapshot(load, now, kTick));
  }
  double sink = 0;
  for (auto _ : state) {
    now += kTick;
    forecaster->observe(weekly_snapshot(load, now, kTick));
    sink += forecaster->forecast(now, std::chrono::seconds(10)).upper;
  }
  benchmark::DoNotOptimize(sink);
  state.counters["observed"] = static_cast<double>(forecaster->observed());
}

// Predictive (predictive = true) or SloGuard alone after a week of ticks.
void BM_Decide(benchmark::State& state, bool predictive) {
  std::unique_ptr<fnbus::scaling::ScalingPolicy> policy;
  fnbus::scaling::Predictive* planner = nullptr;
  if (predictive) {
    auto created = fnbus::scaling::Predictive::Create();
    if (created.ok()) {
      planner = created->get();
      policy = *std::move(created);
    }
  } else if (auto created = fnbus::scaling::SloGuard::Create(); created.ok()) {
    policy = *std::move(created);
  }
  if (policy == nullptr) {
    state.SkipWithError("Create failed");
    return;
  }
  WeeklyLoad load;
  constexpr fnbus::Duration kLearnTick = std::chrono::seconds(60);
  fnbus::TimePoint now{};
  for (; now < fnbus::TimePoint{} + kWeek; now += kLearnTick) {
    benchmark::DoNotOptimize(
        policy->decide(weekly_snapshot(load, now, kLearnTick)));
  }
  // One sale announced far ahead: the calendar is searched every tick.
  if (planner != nullptr &&
      !planner->announce({now + kWeek, std::chrono::hours(1), 3.0}, now).ok()) {
    state.SkipWithError("announce failed");
    return;
  }
  constexpr fnbus::Duration kTick = std::chrono::milliseconds(100);
  double sink = 0;
  for (auto _ : state) {
    now += kTick;
    sink += policy->decide(weekly_snapshot(load, now, kTick)).target;
  }
  benchmark::DoNotOptimize(sink);
  state.counters["mean_target"] =
      sink / static_cast<double>(state.iterations());
}

void BM_Predictive_Decide(benchmark::State& state) { BM_Decide(state, true); }
void BM_SloGuard_Decide(benchmark::State& state) { BM_Decide(state, false); }

}  // namespace

void register_scaling_benchmarks() {
  // (b) first, next to the throughput benchmarks (same host state). Each
  // run lasts at least 2 s at the speed of the first repetition (later
  // repetitions reuse its iteration count, so a repetition in a 4x faster
  // host state still sees about 5 ticks of the 100 ms controller; the
  // `ticks` counter says how many).
  const auto throughput = [](const char* name, ThroughputSetup setup) {
    benchmark::RegisterBenchmark(name, BM_Throughput_Scaled, setup)
        ->MinTime(2.0)
        ->UseRealTime();
  };
  throughput("BM_Throughput_FixedPool/workers:2", {.workers = 2});
  throughput("BM_Throughput_ResizableNoAutoscaler/workers:2",
             {.workers = 2, .max_workers = 8});
  throughput(
      "BM_Throughput_Autoscaled/workers:2",
      {.workers = 2, .max_workers = 8, .scaling = Scaling::kPinnedSloGuard});
  throughput("BM_Throughput_FixedPool/workers:1", {.workers = 1});
  // Starts at 2, then 1, 2, 1, ...: one resize per tick.
  throughput("BM_Throughput_AutoscaledChurn/workers:1to2",
             {.workers = 2, .max_workers = 8, .scaling = Scaling::kChurn});

  // (a) Single-threaded: thread CPU time per call.
  for (auto* benchmark :
       {benchmark::RegisterBenchmark("BM_Autoscaler_Tick", BM_Autoscaler_Tick),
        benchmark::RegisterBenchmark("BM_Bus_MetricsSnapshot",
                                     BM_Bus_MetricsSnapshot)}) {
    benchmark->ArgNames({"max_workers", "warmed"})
        ->Args({16, 2})
        ->Args({16, 16})
        ->Args({64, 64});
  }

  // (c) Single-threaded, no clock reads.
  benchmark::RegisterBenchmark("BM_Forecaster_ObserveForecast",
                               BM_Forecaster_ObserveForecast);
  benchmark::RegisterBenchmark("BM_Predictive_Decide", BM_Predictive_Decide);
  benchmark::RegisterBenchmark("BM_SloGuard_Decide", BM_SloGuard_Decide);
}

}  // namespace fnbus_bench
