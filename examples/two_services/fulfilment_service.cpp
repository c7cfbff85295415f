// The fulfilment service: imports OrderPlaced and PaymentCompleted from
// JetStream through the durable consumer "fulfilment". Start two of them
// and they share the orders; a redelivered event is absorbed by the
// functions' idempotency keys.
//
//   fulfilment_service nats://127.0.0.1:4222 NAME [idle-ms]
//
// It stops once no event has arrived for idle-ms (default 3000) and
// prints how many it handled: run.sh adds the counts of both processes.

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "events.hpp"

#include "fnbus/nats/connection.hpp"
#include "fnbus/nats/importer.hpp"
#include "fnbus/resilience/dead_letter_store.hpp"

namespace {

using namespace two_services;

// Written by the bus's workers, read by the main thread. relaxed
// throughout: independent counters, read for the final printout after
// bus->shutdown() has joined the workers (which orders them).
struct Counts {
  std::atomic<int> shipped{0};
  std::atomic<int> paid{0};
  // steady_clock when the last event arrived: only a hint for when this
  // demo stops, so a stale read just waits a little longer.
  std::atomic<std::int64_t> last_event_ns{0};
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

absl::Status run(const std::string& url, const std::string& name,
                 std::chrono::milliseconds idle, Counts& counts) {
  auto nats = fnbus::nats::Connection::Connect({.url = url, .name = name});
  if (!nats.ok()) return nats.status();
  auto bus = fnbus::EventBus::Create({.workers = 2});
  if (!bus.ok()) return bus.status();
  auto dead_letters = fnbus::resilience::DeadLetterStore::Create({});
  if (!dead_letters.ok()) return dead_letters.status();

  fnbus::FunctionOptions ship_options;
  ship_options.name = "ship_order";
  // At-least-once delivery: an order seen before is skipped. (This
  // process's memory; processes sharing a durable would share a
  // resilience::SeenStore backed by a database.)
  ship_options.idempotency_key = [](const OrderPlaced& o) {
    return std::to_string(o.order_id);
  };
  auto ship = (*bus)->subscribe<OrderPlaced>(
      [&](const OrderPlaced&) {
        counts.shipped.fetch_add(1, std::memory_order_relaxed);
        counts.last_event_ns.store(now_ns(), std::memory_order_relaxed);
      },
      ship_options);
  auto book = (*bus)->subscribe<PaymentCompleted>([&](const PaymentCompleted&) {
    counts.paid.fetch_add(1, std::memory_order_relaxed);
    counts.last_event_ns.store(now_ns(), std::memory_order_relaxed);
  });

  auto importer =
      fnbus::nats::Importer::Create(**bus, **nats,
                                    {.stream = std::string(kStream),
                                     .durable = "fulfilment",
                                     .dead_letter = (*dead_letters)->sink()});
  if (!importer.ok()) return importer.status();
  if (absl::Status s = (*importer)->add(fnbus::nats::ImportRoute<OrderPlaced>{
          .subject = std::string(kOrderPlacedSubject),
          .codec = order_placed_json().codec()});
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          (*importer)->add(fnbus::nats::ImportRoute<PaymentCompleted>{
              .subject = std::string(kPaymentCompletedSubject),
              .codec = payment_completed_json().codec()});
      !s.ok()) {
    return s;
  }
  if (absl::Status s = (*importer)->start(); !s.ok()) return s;
  counts.last_event_ns.store(now_ns(), std::memory_order_relaxed);
  // A service runs until told to stop; this demo stops when idle.
  while (now_ns() - counts.last_event_ns.load(std::memory_order_relaxed) <
         std::chrono::nanoseconds(idle).count()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (absl::Status s = (*importer)->stop(); !s.ok()) return s;
  return (*bus)->shutdown();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string url = argc > 1 ? argv[1] : "nats://127.0.0.1:4222";
  const std::string name = argc > 2 ? argv[2] : "fulfilment";
  const std::chrono::milliseconds idle(argc > 3 ? std::atoi(argv[3]) : 3000);
  Counts counts;
  if (absl::Status status = run(url, name, idle, counts); !status.ok()) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), status.ToString().c_str());
    return 1;
  }
  std::printf("%s: shipped %d orders, booked %d payments\n", name.c_str(),
              counts.shipped.load(), counts.paid.load());
  return 0;
}
