// End-to-end throughput: 1 or 2 producer threads publish small events to a
// pool of workers whose handler counts them.
//
// One iteration = each producer publishes kBatch events, then waits until
// the workers have handled all of them, so the clock measures handled
// events, not enqueues. items_per_second is the total over the producers
// (real time). fnbus publishes with OverflowPolicy::kBlock so that nothing
// is dropped; "rejected" counts refusals (expected 0), and the run fails if
// any accepted event went unhandled. handoff_ns and handoff_end_ns are the
// ping-pong medians measured just before and after (the host's near/far
// state).
// Target: 1 producer, fnbus >= 3x the mutex + condition variable queue.
// BM_Throughput_Fnbus records latency histograms (the default: every
// event); BM_Throughput_FnbusNoLatency does not (target: within -10%);
// BM_Throughput_FnbusSampled16 times one event in 16.
// BM_Throughput_FnbusKeyed1024 publishes each event with a key
// (PublishOptions::key, round-robin over 1,024 keys; the default 1,024
// strands): per-key ordering. Target: >= 80% of BM_Throughput_Fnbus with
// the same workers and producers (registered next to it).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "baselines.hpp"
#include "support.hpp"
#include <benchmark/benchmark.h>

#include "fnbus/event_bus.hpp"

namespace fnbus_bench {
namespace {

struct Item {
  std::uint32_t producer;
  std::uint32_t value;
};

struct CountHandled {
  HandledCounter* handled;
  void operator()(const Item& item) const noexcept {
    handled->add(item.producer);
  }
};

constexpr std::uint64_t kBatch = 1024;  // events per producer per iteration

// What the producer threads of one run share. Built by thread 0 before the
// benchmark's start barrier, torn down by it after the stop barrier.
struct FnbusRig {
  double handoff_ns = 0;
  HandledCounter handled;
  std::unique_ptr<fnbus::EventBus> bus;
  fnbus::Subscription subscription;
};

struct MutexRig {
  double handoff_ns = 0;
  HandledCounter handled;
  std::optional<MutexCondvarQueue<Item>> queue;
};

// Publishes kBatch events per iteration and waits for them to be handled.
// `publish(item)` returns false if the event was refused. `rig` is only
// dereferenced inside the loop, after the start barrier: thread 0 builds it
// before that barrier.
template <typename Rig, typename Publish>
void produce(benchmark::State& state, const std::unique_ptr<Rig>& rig,
             Publish publish) {
  const auto producer = static_cast<std::uint32_t>(state.thread_index());
  std::uint64_t accepted = 0;
  std::uint64_t refused = 0;
  for (auto _ : state) {
    for (std::uint64_t i = 0; i < kBatch; ++i) {
      if (publish(Item{producer, 1})) {
        ++accepted;
      } else {
        ++refused;
      }
    }
    rig->handled.wait_for(producer, accepted);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(accepted));
  state.counters["refused"] = static_cast<double>(refused);
}

// RecordLatency: BusConfig::record_latency (metrics on / off);
// SampleEvery: BusConfig::latency_sample_every; Keys: 0 for unkeyed
// publishes, else each producer's events cycle through Keys keys.
template <bool RecordLatency, std::uint32_t SampleEvery = 1,
          std::uint32_t Keys = 0>
void BM_Throughput_Fnbus(benchmark::State& state) {
  static std::unique_ptr<FnbusRig> rig;
  if (state.thread_index() == 0) {
    rig = std::make_unique<FnbusRig>();
    rig->handoff_ns = handoff_p50_ns();
    auto bus = fnbus::EventBus::Create(
        {.workers = static_cast<std::size_t>(state.range(0)),
         .overflow = fnbus::OverflowPolicy::kBlock,
         .record_latency = RecordLatency,
         .latency_sample_every = SampleEvery});
    if (bus.ok()) {
      rig->bus = *std::move(bus);
      rig->subscription = rig->bus->subscribe<Item>(CountHandled{&rig->handled},
                                                    {.name = "count"});
    } else {
      // Not a return: thread 0 must still pass the start and stop barriers.
      state.SkipWithError(bus.status().ToString().c_str());
    }
  }
  produce(state, rig, [next = std::uint32_t{0}](Item item) mutable {
    if (rig->bus == nullptr) return false;
    if constexpr (Keys == 0) {
      return rig->bus->publish(item).ok();
    } else {
      // Distinct keys per producer, so that producers share no strand
      // by construction (they may by hash).
      const std::uint64_t key = std::uint64_t{item.producer} << 32 | next;
      next = next + 1 == Keys ? 0 : next + 1;
      return rig->bus->publish(item, {.key = key}).ok();
    }
  });
  if (state.thread_index() != 0) return;
  if (rig->bus == nullptr) {
    rig.reset();
    return;
  }
  if (!rig->bus->shutdown().ok()) state.SkipWithError("shutdown failed");
  const fnbus::BusStats stats = rig->bus->stats();
  std::uint64_t handled = 0;
  for (int t = 0; t < state.threads(); ++t) {
    handled += rig->handled.handled(static_cast<std::size_t>(t));
  }
  if (handled != stats.published || stats.dispatched != stats.published) {
    state.SkipWithError("accepted events went unhandled");
  }
  state.counters["rejected"] = static_cast<double>(stats.rejected);
  state.counters["handoff_ns"] = rig->handoff_ns;
  rig.reset();
  state.counters["handoff_end_ns"] = handoff_p50_ns();
}

void BM_Throughput_MutexCondvar(benchmark::State& state) {
  static std::unique_ptr<MutexRig> rig;
  if (state.thread_index() == 0) {
    rig = std::make_unique<MutexRig>();
    rig->handoff_ns = handoff_p50_ns();
    rig->queue.emplace(static_cast<std::size_t>(state.range(0)),
                       CountHandled{&rig->handled});
  }
  produce(state, rig, [](Item item) {
    rig->queue->publish(item);
    return true;
  });
  if (state.thread_index() != 0) return;
  state.counters["handoff_ns"] = rig->handoff_ns;
  rig.reset();
  state.counters["handoff_end_ns"] = handoff_p50_ns();
}

}  // namespace

void register_throughput_benchmarks() {
  // Metrics off, for the overhead of latency recording (the 1-producer,
  // 2-worker case; registered next to it so both see the same host state).
  benchmark::RegisterBenchmark("BM_Throughput_FnbusNoLatency",
                               BM_Throughput_Fnbus<false>)
      ->ArgName("workers")
      ->Arg(2)
      ->Threads(1)
      ->UseRealTime();
  // Histograms on, one event in 16 timed (latency_sample_every = 16).
  benchmark::RegisterBenchmark("BM_Throughput_FnbusSampled16",
                               BM_Throughput_Fnbus<true, 16>)
      ->ArgName("workers")
      ->Arg(2)
      ->Threads(1)
      ->UseRealTime();
  for (auto* benchmark :
       {benchmark::RegisterBenchmark("BM_Throughput_Fnbus",
                                     BM_Throughput_Fnbus<true>),
        benchmark::RegisterBenchmark("BM_Throughput_FnbusKeyed1024",
                                     BM_Throughput_Fnbus<true, 1, 1024>),
        benchmark::RegisterBenchmark("BM_Throughput_MutexCondvar",
                                     BM_Throughput_MutexCondvar)}) {
    benchmark->ArgName("workers")
        ->Arg(2)
        ->Arg(1)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
  }
}

}  // namespace fnbus_bench
