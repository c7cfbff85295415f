// fnbus::nats::Exporter against a real nats-server on loopback: events
// round-trip to the stream with their headers, message ids de-duplicate,
// a missing stream is retried then dead-lettered, a server killed with -9
// and restarted loses nothing silently, an encode failure is the bus
// function's failure, and bad options are refused. The stream is read back
// with the plain NATS C client (js_GetMsg), not through fnbus.

#include "fnbus/nats/exporter.hpp"

#include <charconv>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../support/nats_server.hpp"
#include "../support/test_support.hpp"
#include <catch2/catch.hpp>
#include <nats/nats.h>

#include "fnbus/testing/recording_sinks.hpp"

namespace {

using fnbus::DeadLetterReason;
using fnbus::EventBus;
using fnbus::nats::Connection;
using fnbus::nats::Exporter;
using fnbus::nats::ExporterOptions;
using fnbus::nats::ExportRoute;
using fnbus::testing::DeadLetterRecorder;
using fnbus::testing::ErrorRecorder;
using fnbus::testing_support::contains;
using fnbus::testing_support::NatsServer;
using namespace std::chrono_literals;

struct OrderPlaced {
  static constexpr std::string_view kEventName = "shop.OrderPlaced";
  std::string id;
  int cents = 0;
};

struct PaymentTaken {
  static constexpr std::string_view kEventName = "shop.PaymentTaken";
  int order = 0;
};

// "id|cents"; a negative amount cannot be encoded.
fnbus::nats::Codec<OrderPlaced> order_codec() {
  return {.encode = [](const OrderPlaced& o) -> absl::StatusOr<std::string> {
            if (o.cents < 0) {
              return absl::InvalidArgumentError("negative amount");
            }
            return o.id + "|" + std::to_string(o.cents);
          },
          .decode = {}};
}

fnbus::nats::Codec<PaymentTaken> payment_codec() {
  return {.encode = [](const PaymentTaken& p) -> absl::StatusOr<std::string> {
            return "paid:" + std::to_string(p.order);
          },
          .decode = {}};
}

// A stored message as the plain client reads it.
struct Stored {
  std::string subject = {};
  std::string data = {};
  std::string message_id = {};
  std::string correlation = {};
  std::string event_id = {};
  std::string event_type = {};
};

// A plain NATS C client on the server, to read the stream back.
class Reader {
 public:
  explicit Reader(const std::string& url) {
    REQUIRE(natsConnection_ConnectTo(&connection_, url.c_str()) == NATS_OK);
    REQUIRE(natsConnection_JetStream(&js_, connection_, nullptr) == NATS_OK);
  }
  ~Reader() {
    jsCtx_Destroy(js_);
    natsConnection_Destroy(connection_);
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  std::uint64_t messages(const char* stream) {
    jsStreamInfo* info = nullptr;
    REQUIRE(js_GetStreamInfo(&info, js_, stream, nullptr, nullptr) == NATS_OK);
    const std::uint64_t count = info->State.Msgs;
    jsStreamInfo_Destroy(info);
    return count;
  }

  Stored get(const char* stream, std::uint64_t sequence) {
    natsMsg* msg = nullptr;
    REQUIRE(js_GetMsg(&msg, js_, stream, sequence, nullptr, nullptr) ==
            NATS_OK);
    Stored out{.subject = natsMsg_GetSubject(msg),
               .data = std::string(
                   natsMsg_GetData(msg),
                   static_cast<std::size_t>(natsMsg_GetDataLength(msg)))};
    out.message_id = header(msg, fnbus::nats::kMessageIdHeader);
    out.correlation = header(msg, fnbus::nats::kCorrelationHeader);
    out.event_id = header(msg, fnbus::nats::kEventIdHeader);
    out.event_type = header(msg, fnbus::nats::kEventTypeHeader);
    natsMsg_Destroy(msg);
    return out;
  }

 private:
  static std::string header(natsMsg* msg, std::string_view name) {
    const char* value = nullptr;
    if (natsMsgHeader_Get(msg, std::string(name).c_str(), &value) != NATS_OK) {
      return "<missing>";
    }
    return value;
  }

  natsConnection* connection_ = nullptr;
  jsCtx* js_ = nullptr;
};

// A server with stream SHOP on shop.>, a connection, and a bus that runs
// handlers in the publishing thread.
struct Shop {
  std::unique_ptr<NatsServer> server = NatsServer::Start();
  std::unique_ptr<Connection> nats;
  ErrorRecorder errors;
  std::unique_ptr<EventBus> bus;
  DeadLetterRecorder dead;

  Shop() {
    auto connected = Connection::Connect({.url = server->url()});
    REQUIRE(connected.ok());
    nats = *std::move(connected);
    REQUIRE(nats->ensure_stream({.name = "SHOP", .subjects = {"shop.>"}}).ok());
    fnbus::BusConfig config;
    config.execution = fnbus::Execution::kInline;
    config.error_sink = errors.sink();
    auto created = EventBus::Create(std::move(config));
    REQUIRE(created.ok());
    bus = *std::move(created);
    dead.keep<OrderPlaced>();
  }

  std::unique_ptr<Exporter> exporter(ExporterOptions options = {}) {
    options.dead_letter = dead.sink();
    auto created = Exporter::Create(*bus, *nats, std::move(options));
    REQUIRE(created.ok());
    return *std::move(created);
  }

  // exporter(options), exporting OrderPlaced to `subject`.
  std::unique_ptr<Exporter> export_orders(const std::string& subject,
                                          ExporterOptions options = {}) {
    auto made = exporter(std::move(options));
    REQUIRE(made->add(ExportRoute<OrderPlaced>{.subject = subject,
                                               .codec = order_codec()})
                .ok());
    return made;
  }
};

// OrderPlaced to shop.orders, its id as the message id.
ExportRoute<OrderPlaced> orders_by_id() {
  return {.subject = "shop.orders",
          .codec = order_codec(),
          .message_id = [](const OrderPlaced& o) { return o.id; }};
}

// Retries in milliseconds, so that the tests' waits end soon.
ExporterOptions quick_retries(std::uint32_t attempts) {
  return {.max_attempts = attempts,
          .backoff = {.initial = 1ms, .multiplier = 2.0, .max = 50ms},
          .ack_timeout = 500ms};
}

TEST_CASE("nats exporter: events of two types reach the stream with headers",
          "[nats][exporter]") {
  Shop shop;
  auto exporter = shop.export_orders("shop.orders");
  REQUIRE(exporter
              ->add(ExportRoute<PaymentTaken>{.subject = "shop.payments",
                                              .codec = payment_codec()})
              .ok());
  const fnbus::TraceContext trace{.correlation_id = 0xabc};
  for (int i = 0; i < 3; ++i) {
    REQUIRE(shop.bus
                ->publish(OrderPlaced{.id = "o" + std::to_string(i),
                                      .cents = 100 * i},
                          {.trace = trace})
                .ok());
  }
  REQUIRE(shop.bus->publish(PaymentTaken{.order = 7}).ok());
  REQUIRE(exporter->flush(10s).ok());
  const fnbus::nats::ExportStats stats = exporter->stats();
  CHECK(stats.exported == 4);
  CHECK(stats.acknowledged == 4);
  CHECK(stats.in_flight == 0);
  CHECK(shop.dead.empty());

  Reader reader(shop.server->url());
  REQUIRE(reader.messages("SHOP") == 4);
  std::vector<std::string> orders;
  std::vector<std::string> message_ids;
  for (std::uint64_t seq = 1; seq <= 4; ++seq) {
    const Stored m = reader.get("SHOP", seq);
    message_ids.push_back(m.message_id);
    CHECK(m.message_id.size() > 17);
    CHECK(m.event_id.size() == 16);
    CHECK(m.event_id != "0000000000000000");
    if (m.subject == "shop.orders") {
      orders.push_back(m.data);
      CHECK(m.correlation == "0000000000000abc");
      CHECK(m.event_type == "shop.OrderPlaced");
    } else {
      CHECK(m.subject == "shop.payments");
      CHECK(m.data == "paid:7");
      CHECK(m.event_type == "shop.PaymentTaken");
    }
  }
  std::sort(orders.begin(), orders.end());
  CHECK(orders == std::vector<std::string>{"o0|0", "o1|100", "o2|200"});
  std::sort(message_ids.begin(), message_ids.end());
  CHECK(std::unique(message_ids.begin(), message_ids.end()) ==
        message_ids.end());
}

TEST_CASE("nats exporter: one message id twice is stored once",
          "[nats][exporter]") {
  Shop shop;
  auto exporter = shop.exporter();
  REQUIRE(exporter->add(orders_by_id()).ok());
  REQUIRE(shop.bus->publish(OrderPlaced{.id = "order-1", .cents = 5}).ok());
  REQUIRE(exporter->flush(10s).ok());
  REQUIRE(shop.bus->publish(OrderPlaced{.id = "order-1", .cents = 5}).ok());
  REQUIRE(exporter->flush(10s).ok());
  const fnbus::nats::ExportStats stats = exporter->stats();
  CHECK(stats.acknowledged == 2);
  CHECK(stats.duplicates == 1);
  Reader reader(shop.server->url());
  CHECK(reader.messages("SHOP") == 1);
  CHECK(reader.get("SHOP", 1).message_id == "order-1");
}

TEST_CASE(
    "nats exporter: a subject no stream captures is retried then "
    "dead-lettered",
    "[nats][exporter]") {
  Shop shop;
  auto exporter = shop.export_orders("nowhere.orders", quick_retries(3));
  REQUIRE(shop.bus->publish(OrderPlaced{.id = "lost", .cents = 1}).ok());
  REQUIRE(exporter->flush(20s).ok());
  REQUIRE(shop.dead.size() == 1);
  const auto letter = shop.dead.at(0);
  CHECK(letter.reason == DeadLetterReason::kExportFailed);
  CHECK(letter.function == "export:nowhere.orders");
  CHECK(letter.attempts == 3);
  CHECK(letter.event_type == "shop.OrderPlaced");
  REQUIRE(letter.get<OrderPlaced>() != nullptr);
  CHECK(letter.get<OrderPlaced>()->id == "lost");
  CHECK(letter.last_error.code() == absl::StatusCode::kNotFound);
  CHECK(contains(std::string(letter.last_error.message()), "ensure_stream"));
  const fnbus::nats::ExportStats stats = exporter->stats();
  CHECK(stats.exported == 1);
  CHECK(stats.retried == 2);
  CHECK(stats.dead_lettered == 1);
  CHECK(stats.acknowledged == 0);
  CHECK(fnbus::to_string(letter.reason) == "export_failed");
}

TEST_CASE(
    "nats exporter: after kill -9 and a restart every event is acknowledged "
    "or dead-lettered",
    "[nats][exporter]") {
  Shop shop;
  ExporterOptions options = quick_retries(40);
  options.backoff.max = 200ms;
  auto exporter = shop.export_orders("shop.orders", options);
  constexpr int kEvents = 300;
  for (int i = 0; i < kEvents; ++i) {
    if (i == kEvents / 3) shop.server->kill9();
    if (i == 2 * kEvents / 3) shop.server->restart();
    REQUIRE(shop.bus->publish(OrderPlaced{.id = std::to_string(i), .cents = i})
                .ok());
  }
  REQUIRE(exporter->flush(60s).ok());
  const fnbus::nats::ExportStats stats = exporter->stats();
  CHECK(stats.exported == kEvents);
  CHECK(stats.acknowledged + stats.dead_lettered == stats.exported);
  CHECK(shop.dead.size() == stats.dead_lettered);
  CHECK(stats.in_flight == 0);
  // Nothing acknowledged was lost: the stream holds at least every
  // acknowledged event once.
  Reader reader(shop.server->url());
  CHECK(reader.messages("SHOP") >= stats.acknowledged - stats.duplicates);
  CHECK(shop.nats->stats().reconnects >= 1);
}

TEST_CASE(
    "nats exporter: many producers on a thread-pool bus store every event "
    "once",
    "[nats][exporter]") {
  Shop shop;
  auto pool = EventBus::Create({.workers = 4,
                                .overflow = fnbus::OverflowPolicy::kBlock,
                                .block_timeout = 10s});
  REQUIRE(pool.ok());
  auto made =
      Exporter::Create(**pool, *shop.nats,
                       {.max_in_flight = 64, .dead_letter = shop.dead.sink()});
  REQUIRE(made.ok());
  auto& exporter = *made;
  REQUIRE(exporter->add(orders_by_id()).ok());
  constexpr int kProducers = 3;
  constexpr int kEach = 400;
  // relaxed: read after the producers are joined.
  std::atomic<int> refused{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kEach; ++i) {
        const std::string id = std::to_string(p) + "-" + std::to_string(i);
        if (!(*pool)->publish(OrderPlaced{.id = id, .cents = i}).ok()) {
          refused.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (std::thread& t : producers) t.join();
  REQUIRE(refused.load(std::memory_order_relaxed) == 0);
  REQUIRE((*pool)->shutdown().ok());
  REQUIRE(exporter->flush(30s).ok());
  const fnbus::nats::ExportStats stats = exporter->stats();
  CHECK(stats.exported == kProducers * kEach);
  CHECK(stats.acknowledged == kProducers * kEach);
  CHECK(stats.duplicates == 0);
  CHECK(shop.dead.empty());
  Reader reader(shop.server->url());
  CHECK(reader.messages("SHOP") == kProducers * kEach);
  exporter.reset();
}

TEST_CASE("nats exporter: an encode failure is the bus function's failure",
          "[nats][exporter]") {
  Shop shop;
  auto exporter = shop.export_orders("shop.orders");
  REQUIRE(shop.bus->publish(OrderPlaced{.id = "bad", .cents = -1}).ok());
  REQUIRE(shop.errors.size() == 1);
  const auto error = shop.errors.at(0);
  CHECK(error.function_name == "export:shop.orders");
  CHECK(error.code == absl::StatusCode::kInvalidArgument);
  CHECK(error.message == "negative amount");
  CHECK(exporter->stats().exported == 0);
}

TEST_CASE("nats exporter: bad options and routes are InvalidArgument",
          "[nats][exporter]") {
  Shop shop;
  auto bad = Exporter::Create(
      *shop.bus, *shop.nats,
      {.max_in_flight = 0, .max_attempts = 0, .ack_timeout = 0ms});
  REQUIRE(bad.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(bad.status().message());
  CHECK(contains(message, "max_in_flight is 0"));
  CHECK(contains(message, "max_attempts is 0"));
  CHECK(contains(message, "ack_timeout is 0 ms"));
  CHECK(contains(message, "dead_letter is empty"));
  auto exporter = shop.exporter();
  const absl::Status wildcard = exporter->add(
      ExportRoute<OrderPlaced>{.subject = "shop.*", .codec = order_codec()});
  CHECK(wildcard.code() == absl::StatusCode::kInvalidArgument);
  CHECK(contains(std::string(wildcard.message()), "literal subject"));
  const absl::Status empty_token = exporter->add(
      ExportRoute<OrderPlaced>{.subject = "shop..x", .codec = order_codec()});
  CHECK(empty_token.code() == absl::StatusCode::kInvalidArgument);
  const absl::Status no_encoder =
      exporter->add(ExportRoute<OrderPlaced>{.subject = "shop.orders"});
  CHECK(no_encoder.code() == absl::StatusCode::kInvalidArgument);
  CHECK(contains(std::string(no_encoder.message()), "codec.encode"));
}

TEST_CASE(
    "nats exporter: destroyed with a resend pending, it dead-letters the "
    "event",
    "[nats][exporter]") {
  Shop shop;
  auto exporter = shop.export_orders(
      "nowhere.orders",
      {.max_attempts = 100,
       .backoff = {.initial = 1h, .multiplier = 1.0, .max = 1h},
       .close_timeout = 0ms});
  REQUIRE(shop.bus->publish(OrderPlaced{.id = "late", .cents = 1}).ok());
  // The first publish fails at once (no stream): a resend waits an hour.
  REQUIRE(fnbus::testing_support::wait_until(
      [&] { return exporter->stats().retried == 1; }));
  exporter.reset();
  REQUIRE(shop.dead.size() == 1);
  CHECK(shop.dead.at(0).reason == DeadLetterReason::kExportFailed);
  CHECK(shop.dead.at(0).attempts == 1);
}

TEST_CASE("nats exporter: Prometheus text has a sample per subject",
          "[nats][exporter]") {
  Shop shop;
  std::string empty;
  shop.exporter()->append_prometheus(empty);
  CHECK(empty.empty());
  auto exporter = shop.export_orders("shop.orders");
  REQUIRE(shop.bus->publish(OrderPlaced{.id = "a", .cents = 1}).ok());
  REQUIRE(shop.bus->publish(OrderPlaced{.id = "b", .cents = 2}).ok());
  REQUIRE(exporter->flush(10s).ok());
  std::string text;
  exporter->append_prometheus(text);
  CHECK(contains(text, "# TYPE fnbus_nats_exported_total counter\n"));
  CHECK(
      contains(text, "fnbus_nats_exported_total{subject=\"shop.orders\"} 2\n"));
  CHECK(contains(
      text,
      "fnbus_nats_export_acknowledged_total{subject=\"shop.orders\"} 2\n"));
  CHECK(contains(text, "# TYPE fnbus_nats_export_in_flight gauge\n"));
  CHECK(contains(text,
                 "fnbus_nats_export_in_flight{subject=\"shop.orders\"} 0\n"));
}

}  // namespace
