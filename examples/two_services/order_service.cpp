// The order service: takes orders on its own bus and exports OrderPlaced
// and PaymentCompleted to JetStream, where the fulfilment service picks
// them up (fulfilment_service.cpp; run.sh starts both and a nats-server).
//
//   order_service nats://127.0.0.1:4222 [orders]
//
// Configuration errors (no server, refused credentials, a route without a
// codec) are one line each, and exit 1.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "events.hpp"
#include "fmt/format.h"

#include "fnbus/nats/connection.hpp"
#include "fnbus/nats/exporter.hpp"
#include "fnbus/resilience/dead_letter_store.hpp"

namespace {

using namespace two_services;

absl::Status run(const std::string& url, int orders) {
  auto nats =
      fnbus::nats::Connection::Connect({.url = url, .name = "order-service"});
  if (!nats.ok()) return nats.status();
  if (absl::Status s =
          (*nats)->ensure_stream({.name = std::string(kStream),
                                  .subjects = {std::string(kStreamSubjects)}});
      !s.ok()) {
    return s;
  }
  auto bus = fnbus::EventBus::Create({.workers = 2});
  if (!bus.ok()) return bus.status();
  auto dead_letters = fnbus::resilience::DeadLetterStore::Create({});
  if (!dead_letters.ok()) return dead_letters.status();
  absl::Status exported;
  {
    // Declared after the bus and the connection: destroyed before them.
    auto exporter = fnbus::nats::Exporter::Create(
        **bus, **nats, {.dead_letter = (*dead_letters)->sink()});
    if (!exporter.ok()) return exporter.status();
    if (absl::Status s = (*exporter)->add(fnbus::nats::ExportRoute<OrderPlaced>{
            .subject = std::string(kOrderPlacedSubject),
            .codec = order_placed_json().codec(),
            // One order is stored once, however often it is sent.
            .message_id =
                [](const OrderPlaced& o) {
                  return fmt::format("order-{}", o.order_id);
                }});
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            (*exporter)->add(fnbus::nats::ExportRoute<PaymentCompleted>{
                .subject = std::string(kPaymentCompletedSubject),
                .codec = payment_completed_json().codec(),
                .message_id =
                    [](const PaymentCompleted& p) {
                      return fmt::format("payment-{}", p.order_id);
                    }});
        !s.ok()) {
      return s;
    }
    for (int i = 1; i <= orders; ++i) {
      const std::int64_t id = 1000 + i;
      absl::Status placed = (*bus)->publish(OrderPlaced{.order_id = id,
                                                        .user_id = i % 7,
                                                        .amount_cents = 100 * i,
                                                        .items = 1});
      if (!placed.ok()) return placed;
      absl::Status paid = (*bus)->publish(
          PaymentCompleted{.order_id = id, .amount_cents = 100 * i});
      if (!paid.ok()) return paid;
    }
    // Drain the bus (every event handed to the exporter), then wait for
    // JetStream's acknowledgements.
    if (absl::Status s = (*bus)->shutdown(); !s.ok()) return s;
    exported = (*exporter)->flush(std::chrono::seconds(30));
    const auto stats = (*exporter)->stats();
    std::printf(
        "order service: exported %llu events, %llu acknowledged, %llu "
        "dead-lettered\n",
        static_cast<unsigned long long>(stats.exported),
        static_cast<unsigned long long>(stats.acknowledged),
        static_cast<unsigned long long>(stats.dead_lettered));
  }
  return exported;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string url = argc > 1 ? argv[1] : "nats://127.0.0.1:4222";
  const int orders = argc > 2 ? std::atoi(argv[2]) : 100;
  if (absl::Status status = run(url, orders); !status.ok()) {
    std::fprintf(stderr, "order service: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
