// Request/reply cost (issue 13 target: a call, request -> reply with a
// spinning worker, costs <= 2x a publish -> handler hop in the same run).
//
// Both sides measure a round trip from the calling thread, on a bus of one
// worker that polls for up to 1 s between events (it never parks here):
// - BM_Call_PublishHop: publish an event, spin until its handler has
//   written an acknowledgement (the hop and one cache-line handoff back);
// - BM_Call_RoundTrip: call<Pong>(Ping), spin on CallFuture::ready(), then
//   get() (the call's allocations, its deadline timer set and cancelled,
//   the reply handed back through the call's state).
// Time: real time per round trip; the ratio is what we quote.

#include <atomic>
#include <chrono>
#include <cstdint>

#include "absl/status/statusor.h"
#include "support.hpp"
#include <benchmark/benchmark.h>

#include "fnbus/event_bus.hpp"

namespace fnbus_bench {
namespace {

struct Ping {
  std::uint64_t seq = 0;
};
struct Pong {
  std::uint64_t seq = 0;
};

// The last sequence number the handler saw: written by the worker
// (release), spun on by the caller (acquire).
struct alignas(kCacheLineSize) Ack {
  std::atomic<std::uint64_t> seq{0};
};

std::unique_ptr<fnbus::EventBus> spinning_bus(benchmark::State& state) {
  auto bus = fnbus::EventBus::Create(
      {.workers = 1, .idle_spin = std::chrono::seconds(1)});
  if (!bus.ok()) {
    state.SkipWithError(bus.status().ToString().c_str());
    return nullptr;
  }
  return *std::move(bus);
}

void BM_Call_PublishHop(benchmark::State& state) {
  Ack ack;  // outlives the bus
  std::unique_ptr<fnbus::EventBus> bus = spinning_bus(state);
  if (bus == nullptr) return;
  fnbus::Subscription subscription = bus->subscribe(
      [&ack](const Ping& ping) {
        // release: pairs with the acquire below (nothing else to publish,
        // but the same handoff a reply makes).
        ack.seq.store(ping.seq, std::memory_order_release);
      },
      {.name = "ack"});
  std::uint64_t seq = 0;
  for (auto _ : state) {
    ++seq;
    if (!bus->publish(Ping{seq}).ok()) {
      state.SkipWithError("publish refused");
      return;
    }
    while (ack.seq.load(std::memory_order_acquire) != seq) cpu_relax();
  }
}

void BM_Call_RoundTrip(benchmark::State& state) {
  std::unique_ptr<fnbus::EventBus> bus = spinning_bus(state);
  if (bus == nullptr) return;
  fnbus::mesh::Service echo = bus->serve(
      [](const Ping& ping) { return Pong{ping.seq}; }, {.name = "echo"});
  std::uint64_t seq = 0;
  for (auto _ : state) {
    ++seq;
    fnbus::mesh::CallFuture<Pong> reply = bus->call<Pong>(Ping{seq});
    while (!reply.ready()) cpu_relax();
    absl::StatusOr<Pong> pong = reply.get();
    if (!pong.ok() || pong->seq != seq) {
      state.SkipWithError("wrong reply");
      return;
    }
  }
}

}  // namespace

void register_call_benchmarks() {
  benchmark::RegisterBenchmark("BM_Call_PublishHop", BM_Call_PublishHop)
      ->UseRealTime();
  benchmark::RegisterBenchmark("BM_Call_RoundTrip", BM_Call_RoundTrip)
      ->UseRealTime();
}

}  // namespace fnbus_bench
