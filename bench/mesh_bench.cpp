// Load balancing over the replicas of one function (issue 13).
//
// BM_MeshSim_*: a deterministic discrete-event simulation of 4 replicas of
// a stateful handler, each serving its calls one at a time in arrival
// order (one connection per replica); replicas 0-2 take 1 ms per call
// (exponential), replica 3 takes 5 ms: total capacity 3.2 calls per ms.
// Every call is placed by the real mesh::ReplicaSet::pick() at simulated
// time and holds its Lease until it completes, so the balancer sees the
// real in-flight gauges.
//   OpenLoop:   Poisson arrivals at 70% of total capacity (2.24 per ms).
//   ClosedLoop: C calls always outstanding (a completion starts the next).
// "Load" of a replica = its time-averaged calls in flight (queued + in
// service), the quantity least-outstanding balances and, by Little's
// law, arrival rate x time spent at the replica. Counters: load_r0..r3,
// max_dev = max |load - mean| / mean over the replicas (the target:
// <= 0.10), busy_r3 (the slow replica's busy share) and share_r3 (its
// share of the calls). The first 10% of simulated time is warm-up.
// Seeds are fixed: every run gives the same figures.
//
// What it shows: round-robin sends the slow replica a quarter of the
// calls, more than it can serve, so its backlog grows for as long as the
// run lasts (max_dev near 3, the most 4 replicas allow). Least-outstanding
// keeps every backlog bounded and sends the slow replica 6-9% of the
// calls, but that replica still holds about 1.4-2 calls more than the
// others at any level of load, so max_dev drops below 0.10 only once the
// mean load is about 16 calls per replica (ClosedLoop/64).
//
// BM_MeshPick_*: the cost of ReplicaSet::pick() + Lease::on_success() on
// 4 idle replicas with outlier ejection on, per call.

#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "support.hpp"
#include <benchmark/benchmark.h>

#include "fnbus/clock.hpp"
#include "fnbus/mesh/replica_set.hpp"
#include "fnbus/random.hpp"

namespace fnbus_bench {
namespace {

using fnbus::Duration;
using fnbus::Random;
using fnbus::TimePoint;
using fnbus::mesh::Balancing;
using fnbus::mesh::ReplicaSet;

constexpr std::size_t kReplicas = 4;
constexpr std::array<double, kReplicas> kServiceMs = {1.0, 1.0, 1.0, 5.0};
constexpr double kNsPerMs = 1e6;
constexpr double kHorizonMs = 100'000.0;  // ~224k calls at 70%
constexpr double kWarmUpMs = kHorizonMs / 10;

double capacity_per_ms() {
  double capacity = 0;
  for (double service : kServiceMs) capacity += 1.0 / service;
  return capacity;
}

struct SimResult {
  std::array<double, kReplicas> load{};
  std::array<double, kReplicas> busy{};
  std::array<std::uint64_t, kReplicas> calls{};
};

// One run: `closed` > 0 keeps that many calls outstanding, else arrivals
// are Poisson at `load_share` of capacity.
class Simulation {
 public:
  Simulation(Balancing balancing, int closed, double load_share)
      : set_(*ReplicaSet::Create(kReplicas, {.balancing = balancing})),
        closed_(closed),
        arrival_mean_ms_(1.0 / (load_share * capacity_per_ms())) {}

  SimResult run() {
    if (closed_ > 0) {
      for (int i = 0; i < closed_; ++i) arrive(0);
    } else {
      events_.push({random_.exponential(arrival_mean_ms_), -1});
    }
    while (!events_.empty()) {
      const Event event = events_.top();
      events_.pop();
      const double at = std::min(event.at, kHorizonMs);
      account(at);
      if (at >= kHorizonMs) break;
      if (event.replica < 0) {
        events_.push({at + random_.exponential(arrival_mean_ms_), -1});
        arrive(at);
      } else {
        complete(static_cast<std::size_t>(event.replica), at);
        if (closed_ > 0) arrive(at);
      }
    }
    SimResult result = result_;
    for (std::size_t r = 0; r < kReplicas; ++r) {
      result.load[r] /= kHorizonMs - kWarmUpMs;
      result.busy[r] /= kHorizonMs - kWarmUpMs;
    }
    return result;
  }

 private:
  struct Event {
    double at;    // ms
    int replica;  // -1: an arrival; else a completion at this replica
    bool operator>(const Event& other) const { return at > other.at; }
  };

  static TimePoint instant(double ms) {
    return TimePoint(Duration(static_cast<Duration::rep>(ms * kNsPerMs)));
  }

  void arrive(double at) {
    auto lease = set_->pick(instant(at), pick_random_);
    const std::size_t r = lease->replica();
    if (at >= kWarmUpMs) ++result_.calls[r];
    queues_[r].push_back(*std::move(lease));
    if (queues_[r].size() == 1) start(r, at);
  }
  void start(std::size_t r, double at) {
    events_.push(
        {at + random_.exponential(kServiceMs[r]), static_cast<int>(r)});
  }
  void complete(std::size_t r, double at) {
    queues_[r].front().on_success();
    queues_[r].pop_front();
    if (!queues_[r].empty()) start(r, at);
  }
  // Adds the gauges' values over (last_, at] past the warm-up.
  void account(double at) {
    const double from = std::max(last_, kWarmUpMs);
    if (at > from) {
      for (std::size_t r = 0; r < kReplicas; ++r) {
        const auto in_flight = static_cast<double>(set_->loads().in_flight(r));
        result_.load[r] += in_flight * (at - from);
        if (in_flight > 0) result_.busy[r] += at - from;
      }
    }
    last_ = at;
  }

  std::unique_ptr<ReplicaSet> set_;
  const int closed_;
  const double arrival_mean_ms_;
  Random random_{2026};     // arrivals and service times
  Random pick_random_{13};  // the balancer's draws
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  std::array<std::deque<ReplicaSet::Lease>, kReplicas> queues_;
  double last_ = 0;
  SimResult result_;
};

void report(benchmark::State& state, const SimResult& result) {
  double mean = 0;
  std::uint64_t calls = 0;
  for (std::size_t r = 0; r < kReplicas; ++r) {
    mean += result.load[r] / kReplicas;
    calls += result.calls[r];
  }
  double deviation = 0;
  for (std::size_t r = 0; r < kReplicas; ++r) {
    deviation = std::max(deviation, std::abs(result.load[r] - mean) / mean);
    state.counters["load_r" + std::to_string(r)] = result.load[r];
  }
  state.counters["max_dev"] = deviation;
  state.counters["busy_r3"] = result.busy[3];
  state.counters["share_r3"] =
      static_cast<double>(result.calls[3]) / static_cast<double>(calls);
}

void BM_MeshSim_OpenLoop(benchmark::State& state) {
  const auto balancing = static_cast<Balancing>(state.range(0));
  SimResult result;
  for (auto _ : state) result = Simulation(balancing, 0, 0.7).run();
  state.SetLabel(std::string(fnbus::mesh::to_string(balancing)));
  report(state, result);
}

void BM_MeshSim_ClosedLoop(benchmark::State& state) {
  const auto balancing = static_cast<Balancing>(state.range(0));
  const auto outstanding = static_cast<int>(state.range(1));
  SimResult result;
  for (auto _ : state) result = Simulation(balancing, outstanding, 0).run();
  state.SetLabel(std::string(fnbus::mesh::to_string(balancing)));
  report(state, result);
}

void BM_MeshPick(benchmark::State& state) {
  const auto balancing = static_cast<Balancing>(state.range(0));
  static std::unique_ptr<ReplicaSet> set;
  if (state.thread_index() == 0) {
    set = *ReplicaSet::Create(kReplicas, {.balancing = balancing});
  }
  Random random(static_cast<std::uint64_t>(state.thread_index()) + 1);
  const TimePoint now = TimePoint(std::chrono::hours(1));
  for (auto _ : state) {
    auto lease = set->pick(now, random);
    benchmark::DoNotOptimize(lease->replica());
    lease->on_success();
  }
  state.SetLabel(std::string(fnbus::mesh::to_string(balancing)));
}

}  // namespace

void register_mesh_benchmarks() {
  constexpr auto kRoundRobin =
      static_cast<std::int64_t>(Balancing::kRoundRobin);
  constexpr auto kLeast =
      static_cast<std::int64_t>(Balancing::kLeastOutstanding);
  for (std::int64_t balancing : {kRoundRobin, kLeast}) {
    benchmark::RegisterBenchmark("BM_MeshSim_OpenLoop", BM_MeshSim_OpenLoop)
        ->Arg(balancing)
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  }
  for (std::int64_t outstanding : {8, 16, 64}) {
    for (std::int64_t balancing : {kRoundRobin, kLeast}) {
      benchmark::RegisterBenchmark("BM_MeshSim_ClosedLoop",
                                   BM_MeshSim_ClosedLoop)
          ->Args({balancing, outstanding})
          ->Iterations(1)
          ->Unit(benchmark::kMillisecond);
    }
  }
  for (std::int64_t balancing : {kRoundRobin, kLeast}) {
    benchmark::RegisterBenchmark("BM_MeshPick", BM_MeshPick)
        ->Arg(balancing)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
  }
}

}  // namespace fnbus_bench
