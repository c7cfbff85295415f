// fnbus_nats_bench: the JetStream exporter (fnbus::nats::Exporter) against
// the raw NATS C client's asynchronous publish loop, in one process, on
// one nats-server that this program starts on loopback (a temporary file
// store, stopped by PID; tests/support/nats_server.hpp).
//
// Both publish batches of kBatch messages of the same payload, each with a
// unique Nats-Msg-Id, with at most kMaxInFlight waiting for their
// acknowledgement, and wait for every acknowledgement before the batch
// counts: items/s is acknowledged messages per second. Each run starts
// on an empty stream. Run with --benchmark_enable_random_interleaving=true
// and repetitions, so that a change in the host's load during the run
// falls on both alike.
// - BM_NatsRaw_PublishAsync: one thread calls js_PublishMsgAsync in a loop;
//   exporter_headers:0 sets Nats-Msg-Id alone (the baseline of the
//   target), exporter_headers:1 the exporter's four headers and its
//   acknowledgement timeout (what the client costs for that message).
// - BM_NatsExporter_Publish: one thread publishes events to a bus; its
//   workers run the exporter's function (encode, headers, in-flight
//   table, js_PublishMsgAsync).

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>

#include "../tests/support/nats_server.hpp"
#include <benchmark/benchmark.h>
#include <nats/nats.h>

#include "fnbus/nats/exporter.hpp"

namespace {

constexpr int kBatch = 20'000;
constexpr int kMaxInFlight = 4096;
const std::string kPayload(64, 'x');  // the event's encoded bytes

struct Order {
  std::uint64_t id = 0;
};

struct Setup {
  std::unique_ptr<fnbus::testing_support::NatsServer> server;
  std::unique_ptr<fnbus::nats::Connection> nats;
};

Setup& setup() {
  static Setup s = [] {
    Setup made;
    made.server = fnbus::testing_support::NatsServer::Start();
    auto connected = fnbus::nats::Connection::Connect(
        {.url = made.server->url(), .name = "fnbus_nats_bench"});
    if (!connected.ok()) {
      std::fprintf(stderr, "%s\n", connected.status().ToString().c_str());
      std::abort();
    }
    made.nats = *std::move(connected);
    return made;
  }();
  return s;
}

// Deletes and creates stream BENCH again, so that each run starts with an
// empty store and de-duplication window (a window full of an earlier
// run's ids would slow the later benchmark).
void reset_stream() {
  natsConnection* connection = nullptr;
  jsCtx* js = nullptr;
  if (natsConnection_ConnectTo(&connection, setup().server->url().c_str()) ==
          NATS_OK &&
      natsConnection_JetStream(&js, connection, nullptr) == NATS_OK) {
    js_DeleteStream(js, "BENCH", nullptr, nullptr);
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(connection);
  const absl::Status stream =
      setup().nats->ensure_stream({.name = "BENCH", .subjects = {"bench.>"}});
  if (!stream.ok()) {
    std::fprintf(stderr, "%s\n", stream.ToString().c_str());
    std::abort();
  }
}

// The raw loop's acknowledgement handler: counts, and frees the message.
void count_ack(jsCtx*, natsMsg* msg, jsPubAck* ack, jsPubAckErr*,
               void* closure) {
  if (ack != nullptr) {
    // relaxed: read after js_PublishAsyncComplete(), which orders it.
    static_cast<std::atomic<std::int64_t>*>(closure)->fetch_add(
        1, std::memory_order_relaxed);
  }
  natsMsg_Destroy(msg);
}

void BM_NatsRaw_PublishAsync(benchmark::State& state) {
  reset_stream();
  natsConnection* connection = nullptr;
  if (natsConnection_ConnectTo(&connection, setup().server->url().c_str()) !=
      NATS_OK) {
    state.SkipWithError("cannot connect");
    return;
  }
  std::atomic<std::int64_t> acked{0};
  jsOptions options;
  jsOptions_Init(&options);
  options.PublishAsync.MaxPending = kMaxInFlight;
  options.PublishAsync.AckHandler = count_ack;
  options.PublishAsync.AckHandlerClosure = &acked;
  jsCtx* js = nullptr;
  natsConnection_JetStream(&js, connection, &options);
  // 1: the exporter's message -- its four headers, and an
  // acknowledgement timeout -- for the client's cost of those alone.
  const bool same_message = state.range(0) == 1;
  jsPubOptions timed;
  jsPubOptions_Init(&timed);
  timed.MaxWait = 5000;
  std::uint64_t sequence = 0;
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) {
      natsMsg* msg = nullptr;
      natsMsg_Create(&msg, "bench.raw", nullptr, kPayload.data(),
                     static_cast<int>(kPayload.size()));
      const std::string id = "raw-" + std::to_string(++sequence);
      natsMsgHeader_Set(msg, "Nats-Msg-Id", id.c_str());
      if (same_message) {
        natsMsgHeader_Set(msg, "Fnbus-Correlation-Id", "00000000075bcd15");
        natsMsgHeader_Set(msg, "Fnbus-Event-Id", "000000003ade68b1");
        natsMsgHeader_Set(msg, "Fnbus-Event-Type", "Order");
      }
      if (js_PublishMsgAsync(js, &msg, same_message ? &timed : nullptr) !=
          NATS_OK) {
        natsMsg_Destroy(msg);
        state.SkipWithError("publish failed");
        break;
      }
    }
    js_PublishAsyncComplete(js, nullptr);
  }
  state.SetItemsProcessed(acked.load(std::memory_order_relaxed));
  jsCtx_Destroy(js);
  natsConnection_Destroy(connection);
}

void BM_NatsExporter_Publish(benchmark::State& state) {
  reset_stream();
  auto bus = fnbus::EventBus::Create(
      {.workers = static_cast<std::size_t>(state.range(0)),
       .overflow = fnbus::OverflowPolicy::kBlock,
       .block_timeout = std::chrono::seconds(10)});
  std::atomic<std::int64_t> lost{0};
  auto exporter = fnbus::nats::Exporter::Create(
      **bus, *setup().nats,
      {.max_in_flight = kMaxInFlight,
       .dead_letter = [&lost](const fnbus::DeadLetter&) {
         // relaxed: read after flush().
         lost.fetch_add(1, std::memory_order_relaxed);
       }});
  if (!exporter.ok() ||
      !(*exporter)
           ->add(fnbus::nats::ExportRoute<Order>{
               .subject = "bench.exporter",
               .codec = {.encode =
                             [](const Order&) -> absl::StatusOr<std::string> {
                           return kPayload;
                         },
                         .decode = {}}})
           .ok()) {
    state.SkipWithError("cannot create the exporter");
    return;
  }
  std::uint64_t id = 0;
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) {
      if (!(*bus)->publish(Order{.id = ++id}).ok()) {
        state.SkipWithError("publish refused");
        break;
      }
    }
    if (!(*exporter)->flush(std::chrono::seconds(60)).ok()) {
      state.SkipWithError("flush timed out");
    }
  }
  state.SetItemsProcessed(
      static_cast<std::int64_t>((*exporter)->stats().acknowledged));
  state.counters["dead_lettered"] =
      static_cast<double>(lost.load(std::memory_order_relaxed));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RegisterBenchmark("BM_NatsRaw_PublishAsync",
                               BM_NatsRaw_PublishAsync)
      ->ArgName("exporter_headers")
      ->Arg(0)
      ->Arg(1)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("BM_NatsExporter_Publish",
                               BM_NatsExporter_Publish)
      ->ArgName("workers")
      ->Arg(1)
      ->Arg(2)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
