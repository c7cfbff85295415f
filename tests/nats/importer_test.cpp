// fnbus::nats::Importer against a real nats-server on loopback: messages
// become events on a local bus and are acknowledged only once those events
// settled; a failing handler gets its message again; undecodable bytes are
// dead-lettered raw; two processes (buses) on one durable share the work;
// a server killed with -9 and restarted loses nothing that was stored.

#include "fnbus/nats/importer.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "../support/bus_support.hpp"
#include "../support/nats_server.hpp"
#include "../support/test_support.hpp"
#include "fmt/format.h"
#include "src/nats/handles.hpp"
#include <catch2/catch.hpp>

#include "fnbus/nats/exporter.hpp"
#include "fnbus/testing/recording_sinks.hpp"

namespace fnbus_importer_test {

using fnbus::Context;
using fnbus::EventBus;
using fnbus::nats::Codec;
using fnbus::nats::Connection;
using fnbus::nats::Importer;
using fnbus::nats::ImportOptions;
using fnbus::nats::ImportRoute;
using fnbus::nats::UndecodableMessage;
using fnbus::testing::DeadLetterRecorder;
using fnbus::testing_support::contains;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::NatsServer;
using fnbus::testing_support::wait_until;
using namespace std::chrono_literals;

struct OrderPlaced {
  static constexpr std::string_view kEventName = "import.OrderPlaced";
  int id = 0;
};
struct PaymentCompleted {
  static constexpr std::string_view kEventName = "import.PaymentCompleted";
  int id = 0;
};

// The test codec: the id as decimal text; anything else is refused.
template <typename E>
Codec<E> decimal_codec() {
  return {.encode = [](const E& e) -> absl::StatusOr<std::string> {
            return std::to_string(e.id);
          },
          .decode = [](std::string_view bytes) -> absl::StatusOr<E> {
            E event;
            const auto [end, error] = std::from_chars(
                bytes.data(), bytes.data() + bytes.size(), event.id);
            if (error != std::errc() || end != bytes.data() + bytes.size()) {
              return absl::InvalidArgumentError("not a decimal id");
            }
            return event;
          }};
}

// Routes "orders.placed" to OrderPlaced.
absl::Status route_orders(Importer& importer) {
  return importer.add(ImportRoute<OrderPlaced>{
      .subject = "orders.placed", .codec = decimal_codec<OrderPlaced>()});
}

// A server with an ORDERS stream, a connection, and a raw JetStream
// publisher standing in for another service's exporter.
struct Fixture {
  std::unique_ptr<NatsServer> server = NatsServer::Start();
  std::unique_ptr<Connection> nats;
  DeadLetterRecorder dead_letters;

  Fixture() {
    auto connected = Connection::Connect({.url = server->url()});
    REQUIRE(connected.ok());
    nats = *std::move(connected);
    REQUIRE(
        nats->ensure_stream({.name = "ORDERS", .subjects = {"orders.>"}}).ok());
    dead_letters.keep<UndecodableMessage>();
  }
  // Stores `data` on `subject`, with a correlation header if nonzero.
  void send(const std::string& subject, const std::string& data,
            std::uint64_t correlation = 0) {
    natsMsg* msg = nullptr;
    REQUIRE(natsMsg_Create(&msg, subject.c_str(), nullptr, data.data(),
                           static_cast<int>(data.size())) == NATS_OK);
    if (correlation != 0) {
      natsMsgHeader_Set(msg, "Fnbus-Correlation-Id",
                        fmt::format("{:016x}", correlation).c_str());
    }
    jsPubAck* ack = nullptr;
    REQUIRE(js_PublishMsg(&ack, nats->handles().jetstream, msg, nullptr,
                          nullptr) == NATS_OK);
    jsPubAck_Destroy(ack);
    natsMsg_Destroy(msg);
  }
  ImportOptions options(std::string durable = "fulfilment") {
    return {.stream = "ORDERS",
            .durable = std::move(durable),
            .fetch_wait = 50ms,
            .redelivery_backoff = {0ms},
            .dead_letter = dead_letters.sink()};
  }
  // The durable's messages not yet delivered, and delivered but not acked.
  std::pair<std::uint64_t, std::int64_t> pending_now(
      const std::string& durable) {
    jsConsumerInfo* info = nullptr;
    REQUIRE(js_GetConsumerInfo(&info, nats->handles().jetstream, "ORDERS",
                               durable.c_str(), nullptr, nullptr) == NATS_OK);
    const std::pair result{info->NumPending, info->NumAckPending};
    jsConsumerInfo_Destroy(info);
    return result;
  }
  // The same once acknowledgements in flight have reached the consumer: an
  // ack is a message the server applies after the client sent it, so the
  // counts are polled (bounded) until they reach {0, 0} -- or not.
  std::pair<std::uint64_t, std::int64_t> pending(const std::string& durable) {
    std::pair<std::uint64_t, std::int64_t> now;
    wait_until([&] {
      now = pending_now(durable);
      return now == std::pair<std::uint64_t, std::int64_t>{0, 0};
    });
    return now;
  }
};

// What a bus's handlers saw, thread-safe.
struct Seen {
  std::mutex mutex;
  std::vector<int> orders, payments;
  std::vector<std::uint64_t> correlations;
  void order(int id, std::uint64_t correlation) {
    std::lock_guard lock(mutex);
    orders.push_back(id);
    correlations.push_back(correlation);
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return orders.size() + payments.size();
  }
};

TEST_CASE("nats importer: events reach the handlers and are acked after",
          "[nats][importer]") {
  Fixture f;
  auto bus = make_bus({.workers = 2});
  Seen seen;
  auto orders =
      bus->subscribe<OrderPlaced>([&](const OrderPlaced& o, Context& c) {
        seen.order(o.id, c.correlation_id());
      });
  auto payments =
      bus->subscribe<PaymentCompleted>([&](const PaymentCompleted& p) {
        std::lock_guard lock(seen.mutex);
        seen.payments.push_back(p.id);
      });
  auto importer = Importer::Create(*bus, *f.nats, f.options());
  REQUIRE(importer.ok());
  REQUIRE(route_orders(**importer).ok());
  REQUIRE((*importer)
              ->add(ImportRoute<PaymentCompleted>{
                  .subject = "orders.paid",
                  .codec = decimal_codec<PaymentCompleted>()})
              .ok());
  REQUIRE((*importer)->start().ok());
  f.send("orders.placed", "1", /*correlation=*/777);
  for (int id = 2; id <= 20; ++id) f.send("orders.placed", std::to_string(id));
  for (int id = 1; id <= 10; ++id) f.send("orders.paid", std::to_string(id));
  REQUIRE(wait_until([&] { return seen.count() == 30; }));
  REQUIRE((*importer)->stop().ok());
  CHECK(f.pending("fulfilment") ==
        std::pair<std::uint64_t, std::int64_t>{0, 0});
  const auto stats = (*importer)->stats();
  REQUIRE(stats.subjects.size() == 2);
  CHECK(stats.subjects[0].subject == "orders.placed");
  CHECK(stats.subjects[0].imported == 20);
  CHECK(stats.subjects[0].acked == 20);
  CHECK(stats.subjects[1].acked == 10);
  CHECK(stats.in_flight == 0);
  // The message's correlation header became the event's trace (order 1's;
  // two workers may run order 2 before it).
  std::lock_guard lock(seen.mutex);
  const auto first = std::find(seen.orders.begin(), seen.orders.end(), 1);
  REQUIRE(first != seen.orders.end());
  CHECK(seen.correlations[static_cast<std::size_t>(
            first - seen.orders.begin())] == 777);
  std::string text;
  (*importer)->append_prometheus(text);
  CHECK(contains(text,
                 "fnbus_nats_import_acked_total{durable=\"fulfilment\","
                 "subject=\"orders.placed\"} 20\n"));
}

TEST_CASE("nats importer: a failed handler's message comes back until done",
          "[nats][importer]") {
  Fixture f;
  auto bus = make_bus({.workers = 1});
  std::atomic<int> calls{0};
  auto sub = bus->subscribe<OrderPlaced>([&](const OrderPlaced&) {
    // Fails its first two deliveries (no retries here: JetStream's).
    return calls.fetch_add(1) < 2 ? absl::UnavailableError("warehouse down")
                                  : absl::OkStatus();
  });
  auto importer = *Importer::Create(*bus, *f.nats, f.options());
  REQUIRE(route_orders(*importer).ok());
  REQUIRE(importer->start().ok());
  f.send("orders.placed", "5");
  REQUIRE(wait_until([&] { return importer->stats().subjects[0].acked == 1; }));
  REQUIRE(importer->stop().ok());
  CHECK(calls.load() == 3);
  const auto subject = importer->stats().subjects[0];
  CHECK(subject.nacked == 2);
  CHECK(subject.redelivered == 2);
  CHECK(subject.received == 3);
  CHECK(f.pending("fulfilment") ==
        std::pair<std::uint64_t, std::int64_t>{0, 0});
}

TEST_CASE("nats importer: undecodable and unrouted messages are dead-lettered",
          "[nats][importer]") {
  Fixture f;
  auto bus = make_bus({.workers = 1});
  std::atomic<int> handled{0};
  auto sub =
      bus->subscribe<OrderPlaced>([&](const OrderPlaced&) { ++handled; });
  auto importer = *Importer::Create(*bus, *f.nats, f.options());
  REQUIRE(route_orders(*importer).ok());
  REQUIRE(importer->start().ok());
  f.send("orders.placed", "12x");  // the codec refuses it
  f.send("orders.refunded", "3");  // no route
  f.send("orders.placed", "4");
  REQUIRE(
      wait_until([&] { return f.dead_letters.size() == 2 && handled == 1; }));
  REQUIRE(importer->stop().ok());
  const auto letters = f.dead_letters.records();
  REQUIRE(letters.size() == 2);
  CHECK(letters[0].reason == fnbus::DeadLetterReason::kUndecodable);
  CHECK(letters[0].function == "fulfilment");
  const auto* raw = letters[0].get<UndecodableMessage>();
  REQUIRE(raw != nullptr);
  CHECK(raw->data == "12x");
  CHECK(raw->subject == "orders.placed");
  CHECK(contains(std::string(letters[0].last_error.message()),
                 "not a decimal id"));
  CHECK(
      contains(std::string(letters[1].last_error.message()), "no ImportRoute"));
  // Terminated: JetStream does not send them again.
  CHECK(f.pending("fulfilment") ==
        std::pair<std::uint64_t, std::int64_t>{0, 0});
}

TEST_CASE("nats importer: two processes on one durable share the messages",
          "[nats][importer]") {
  Fixture f;
  constexpr int kMessages = 100;
  // Process A: one worker, two queue slots; its first event waits until B
  // has handled one, so A's fetching stops on its full queue and B must
  // take the rest.
  auto bus_a = make_bus({.queue_capacity = 2, .workers = 1});
  auto bus_b = make_bus({.workers = 2});
  std::mutex mutex;
  std::multiset<int> handled;
  std::atomic<int> by_a{0}, by_b{0};
  auto record = [&](int id, std::atomic<int>& by) {
    std::lock_guard lock(mutex);
    handled.insert(id);
    ++by;
  };
  std::atomic<bool> a_waited_in_vain{false};
  auto a = bus_a->subscribe<OrderPlaced>([&](const OrderPlaced& o) {
    if (!wait_until([&] { return by_b.load() > 0; })) a_waited_in_vain = true;
    record(o.id, by_a);
  });
  auto b = bus_b->subscribe<OrderPlaced>(
      [&](const OrderPlaced& o) { record(o.id, by_b); });
  ImportOptions options = f.options("shared");
  options.fetch_batch = 1;
  auto importer_a = *Importer::Create(*bus_a, *f.nats, options);
  auto importer_b = *Importer::Create(*bus_b, *f.nats, options);
  for (Importer* importer : {importer_a.get(), importer_b.get()}) {
    REQUIRE(route_orders(*importer).ok());
  }
  REQUIRE(importer_a->start().ok());
  f.send("orders.placed", "0");  // A takes it (B has not started)
  REQUIRE(wait_until(
      [&] { return importer_a->stats().subjects[0].imported == 1; }));
  REQUIRE(importer_b->start().ok());
  for (int id = 1; id < kMessages; ++id) {
    f.send("orders.placed", std::to_string(id));
  }
  REQUIRE(wait_until([&] {
    std::lock_guard lock(mutex);
    return handled.size() == kMessages;
  }));
  REQUIRE(importer_a->stop().ok());
  REQUIRE(importer_b->stop().ok());
  CHECK_FALSE(a_waited_in_vain.load());
  CHECK(by_a.load() >= 1);
  CHECK(by_b.load() >= 1);
  std::lock_guard lock(mutex);
  for (int id = 0; id < kMessages; ++id) CHECK(handled.count(id) == 1);
  CHECK(f.pending("shared") == std::pair<std::uint64_t, std::int64_t>{0, 0});
}

TEST_CASE("nats importer: nothing stored is lost when the server is killed",
          "[nats][importer]") {
  Fixture f;
  auto bus = make_bus({.workers = 2});
  std::mutex mutex;
  std::set<int> handled;
  auto sub = bus->subscribe<OrderPlaced>([&](const OrderPlaced& o) {
    std::lock_guard lock(mutex);
    handled.insert(o.id);  // a redelivery is absorbed here
  });
  auto importer = *Importer::Create(*bus, *f.nats, f.options());
  REQUIRE(route_orders(*importer).ok());
  REQUIRE(importer->start().ok());
  for (int id = 0; id < 50; ++id) f.send("orders.placed", std::to_string(id));
  f.server->kill9();
  f.server->restart();
  REQUIRE(wait_until([&] { return f.nats->connected(); }, 20s));
  for (int id = 50; id < 100; ++id) f.send("orders.placed", std::to_string(id));
  REQUIRE(wait_until(
      [&] {
        std::lock_guard lock(mutex);
        return handled.size() == 100;
      },
      40s));
  REQUIRE(importer->stop().ok());
}

TEST_CASE(
    "nats importer: bad options, missing stream and routes say what to do",
    "[nats][importer]") {
  Fixture f;
  auto bus = make_bus({.workers = 1});
  ImportOptions bad = f.options();
  bad.durable.clear();
  bad.dead_letter = nullptr;
  bad.fetch_batch = 0;
  auto refused = Importer::Create(*bus, *f.nats, bad);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(refused.status().message());
  CHECK(contains(message, "durable is empty"));
  CHECK(contains(message, "dead_letter is not set"));
  CHECK(contains(message, "fetch_batch is 0"));

  auto importer = *Importer::Create(*bus, *f.nats, f.options());
  CHECK(importer->start().code() == absl::StatusCode::kFailedPrecondition);
  const auto route = ImportRoute<OrderPlaced>{
      .subject = "orders.placed", .codec = decimal_codec<OrderPlaced>()};
  REQUIRE(importer->add(route).ok());
  CHECK(importer->add(route).code() == absl::StatusCode::kInvalidArgument);
  CHECK(importer->add(ImportRoute<OrderPlaced>{.subject = "orders.x"}).code() ==
        absl::StatusCode::kInvalidArgument);

  ImportOptions no_stream = f.options();
  no_stream.stream = "MISSING";
  auto orphan = *Importer::Create(*bus, *f.nats, no_stream);
  REQUIRE(orphan->add(route).ok());
  const absl::Status missing = orphan->start();
  CHECK(missing.code() == absl::StatusCode::kNotFound);
  CHECK(contains(std::string(missing.message()), "MISSING"));
}

}  // namespace fnbus_importer_test
