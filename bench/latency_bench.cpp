// Publish -> handler-start latency with one event in flight.
//
// Each iteration stamps an event with steady_clock, publishes it, and spins
// until the handler has acknowledged it; the handler reads the clock first
// thing and reports arrival minus stamp. Every contender is measured the
// same way (one clock read on each side), including the hardware floor,
// BM_PingPong: one thread stores a stamped sequence number into a cache
// line that another thread spins on.
//
// Counters (nanoseconds): p50_ns, p99_ns, p999_ns of the one-way latency;
// handoff_ns and handoff_end_ns, the ping-pong median measured just before
// and just after (the host's near/far state for this figure; see
// summarize.py); p50_per_handoff = p50_ns / handoff_ns.
// The Time column is the mean one-way latency (manual time).
// Targets: fnbus (spinning worker) p50 <= 3x ping-pong p50, and >= 5x
// lower than the mutex + condition variable queue's p50.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "baselines.hpp"
#include "support.hpp"
#include <benchmark/benchmark.h>

#include "fnbus/event_bus.hpp"

namespace fnbus_bench {
namespace {

using std::chrono::nanoseconds;

struct Ping {
  std::int64_t sent_ns;
  std::uint64_t seq;
};

// Written by the handler, read by the publishing thread.
struct alignas(kCacheLineSize) Ack {
  std::atomic<std::uint64_t> seq{0};
  std::atomic<std::int64_t> latency_ns{0};
};

// The handler of every contender.
struct RecordArrival {
  Ack* ack;
  void operator()(const Ping& ping) const noexcept {
    const std::int64_t arrived = now_ns();
    ack->latency_ns.store(arrived - ping.sent_ns, std::memory_order_relaxed);
    // release: publishes latency_ns; pairs with the acquire in wait_ack().
    ack->seq.store(ping.seq, std::memory_order_release);
  }
};

constexpr std::int64_t kAckTimeoutNs = 1'000'000'000;

// Spins until `ack` reports `seq`; false after kAckTimeoutNs (an event that
// was accepted but never handled, e.g. a lost wake-up).
bool wait_ack(const Ack& ack, std::uint64_t seq) noexcept {
  const std::int64_t deadline = now_ns() + kAckTimeoutNs;
  for (std::uint32_t i = 1;; ++i) {
    // acquire: pairs with the release store in RecordArrival.
    if (ack.seq.load(std::memory_order_acquire) == seq) return true;
    if (i % 1024 == 0 && now_ns() > deadline) return false;
    cpu_relax();
  }
}

void busy_wait(nanoseconds gap) noexcept {
  const std::int64_t until = now_ns() + gap.count();
  while (now_ns() < until) cpu_relax();
}

void report(benchmark::State& state, std::vector<std::int64_t> latencies,
            double handoff_ns, double handoff_end_ns) {
  const Percentiles p = Percentiles::of(std::move(latencies));
  state.counters["p50_ns"] = p.p50;
  state.counters["p99_ns"] = p.p99;
  state.counters["p999_ns"] = p.p999;
  state.counters["handoff_ns"] = handoff_ns;
  state.counters["handoff_end_ns"] = handoff_end_ns;
  state.counters["p50_per_handoff"] = p.p50 / handoff_ns;
}

// The measurement loop. `publish(ping)` hands the event to the contender
// and returns false if it refused it. Waits `gap` before each publish.
// Returns the one-way latencies.
template <typename Publish>
std::vector<std::int64_t> measure(benchmark::State& state, Ack& ack,
                                  nanoseconds gap, Publish publish) {
  std::vector<std::int64_t> latencies;
  latencies.reserve(static_cast<std::size_t>(state.max_iterations));
  std::uint64_t seq = 0;
  for (auto _ : state) {
    if (gap.count() > 0) busy_wait(gap);
    ++seq;
    if (!publish(Ping{now_ns(), seq})) {
      state.SkipWithError("publish refused an event");
      break;
    }
    if (!wait_ack(ack, seq)) {
      state.SkipWithError("event not handled within 1 s (lost wake-up?)");
      break;
    }
    // relaxed: ordered by the acquire in wait_ack().
    const std::int64_t latency = ack.latency_ns.load(std::memory_order_relaxed);
    latencies.push_back(latency);
    state.SetIterationTime(static_cast<double>(latency) * 1e-9);
  }
  return latencies;
}

// The handoff probe runs before and after the contender exists (its
// spinning worker would otherwise share the CPUs with the probe).
void run_fnbus(benchmark::State& state, nanoseconds idle_spin, nanoseconds gap,
               bool record_latency = true) {
  const double handoff_ns = handoff_p50_ns();
  std::vector<std::int64_t> latencies;
  {
    Ack ack;  // outlives the bus
    auto bus = fnbus::EventBus::Create({.workers = 1,
                                        .idle_spin = idle_spin,
                                        .record_latency = record_latency});
    if (!bus.ok()) {
      state.SkipWithError(bus.status().ToString().c_str());
      return;
    }
    fnbus::Subscription subscription =
        (*bus)->subscribe<Ping>(RecordArrival{&ack}, {.name = "record"});
    latencies = measure(state, ack, gap,
                        [&](Ping ping) { return (*bus)->publish(ping).ok(); });
  }
  report(state, std::move(latencies), handoff_ns, handoff_p50_ns());
}

void run_mutex_condvar(benchmark::State& state, nanoseconds gap) {
  const double handoff_ns = handoff_p50_ns();
  std::vector<std::int64_t> latencies;
  {
    Ack ack;
    MutexCondvarQueue<Ping> queue(1, RecordArrival{&ack});
    latencies = measure(state, ack, gap, [&](Ping ping) {
      queue.publish(ping);
      return true;
    });
  }
  report(state, std::move(latencies), handoff_ns, handoff_p50_ns());
}

constexpr nanoseconds kParkingGap = std::chrono::microseconds(200);

// One worker polling for up to 1 s between events: it never parks here.
void BM_Latency_FnbusSpinning(benchmark::State& state) {
  run_fnbus(state, std::chrono::seconds(1), nanoseconds(0));
}

// The same without latency histograms (BusConfig::record_latency = false):
// the overhead of metrics on the critical path (target: on <= off + 10%).
void BM_Latency_FnbusSpinningNoLatency(benchmark::State& state) {
  run_fnbus(state, std::chrono::seconds(1), nanoseconds(0), false);
}

// Default idle_spin (50 us) and 200 us between events: the worker has
// parked before each event, so this measures the wake-up path.
void BM_Latency_FnbusParked(benchmark::State& state) {
  run_fnbus(state, fnbus::BusConfig{}.idle_spin, kParkingGap);
}

// The classic queue, back to back: its worker waits on the condition
// variable between events (unless the next one is already there).
void BM_Latency_MutexCondvar(benchmark::State& state) {
  run_mutex_condvar(state, nanoseconds(0));
}

// The classic queue with the same 200 us gaps as BM_Latency_FnbusParked.
void BM_Latency_MutexCondvarParked(benchmark::State& state) {
  run_mutex_condvar(state, kParkingGap);
}

// The hardware floor: one cache-line handoff between two spinning threads.
void BM_PingPong(benchmark::State& state) {
  HandoffProbe probe;
  for (int i = 0; i < 100; ++i) (void)probe.measure();  // warm up
  std::vector<std::int64_t> latencies;
  latencies.reserve(static_cast<std::size_t>(state.max_iterations));
  for (auto _ : state) {
    const std::int64_t latency = probe.measure();
    latencies.push_back(latency);
    state.SetIterationTime(static_cast<double>(latency) * 1e-9);
  }
  const Percentiles p = Percentiles::of(std::move(latencies));
  state.counters["p50_ns"] = p.p50;
  state.counters["p99_ns"] = p.p99;
  state.counters["p999_ns"] = p.p999;
}

}  // namespace

void register_pingpong_benchmark(const char* name) {
  benchmark::RegisterBenchmark(name, BM_PingPong)
      ->Iterations(100'000)
      ->UseManualTime();
}

void register_latency_benchmarks() {
  benchmark::RegisterBenchmark("BM_Latency_FnbusSpinning",
                               BM_Latency_FnbusSpinning)
      ->Iterations(100'000)
      ->UseManualTime();
  benchmark::RegisterBenchmark("BM_Latency_FnbusSpinningNoLatency",
                               BM_Latency_FnbusSpinningNoLatency)
      ->Iterations(100'000)
      ->UseManualTime();
  benchmark::RegisterBenchmark("BM_Latency_MutexCondvar",
                               BM_Latency_MutexCondvar)
      ->Iterations(20'000)
      ->UseManualTime();
  benchmark::RegisterBenchmark("BM_Latency_FnbusParked", BM_Latency_FnbusParked)
      ->Iterations(2'000)
      ->UseManualTime();
  benchmark::RegisterBenchmark("BM_Latency_MutexCondvarParked",
                               BM_Latency_MutexCondvarParked)
      ->Iterations(2'000)
      ->UseManualTime();
}

}  // namespace fnbus_bench
