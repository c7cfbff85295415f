// The bridge against a three-server JetStream cluster on loopback
// (NatsCluster): an R3 stream keeps every event the exporter counted as
// acknowledged when the stream's leader is killed with -9 mid-stream, and
// every event that could not be stored is dead-lettered, none lost. The
// stream is read back with the plain NATS C client.

#include <memory>
#include <set>
#include <string>

#include "../support/nats_server.hpp"
#include "../support/test_support.hpp"
#include <catch2/catch.hpp>
#include <nats/nats.h>

#include "fnbus/nats/exporter.hpp"
#include "fnbus/testing/recording_sinks.hpp"

namespace {

using fnbus::EventBus;
using fnbus::nats::Connection;
using fnbus::nats::Exporter;
using fnbus::nats::ExporterOptions;
using fnbus::nats::ExportRoute;
using fnbus::nats::StreamOptions;
using fnbus::testing::DeadLetterRecorder;
using fnbus::testing_support::NatsCluster;
using fnbus::testing_support::wait_until;
using namespace std::chrono_literals;

struct OrderPlaced {
  static constexpr std::string_view kEventName = "shop.OrderPlaced";
  std::string id;
};

// A plain NATS C client on the cluster (any of its servers).
class ClusterReader {
 public:
  explicit ClusterReader(const std::string& urls) {
    REQUIRE(natsConnection_ConnectTo(&connection_, urls.c_str()) == NATS_OK);
    REQUIRE(natsConnection_JetStream(&js_, connection_, nullptr) == NATS_OK);
  }
  ~ClusterReader() {
    jsCtx_Destroy(js_);
    natsConnection_Destroy(connection_);
  }
  ClusterReader(const ClusterReader&) = delete;
  ClusterReader& operator=(const ClusterReader&) = delete;

  // The server_name of the stream's leader ("n0".."n2").
  std::string leader(const char* stream) {
    jsStreamInfo* info = nullptr;
    REQUIRE(js_GetStreamInfo(&info, js_, stream, nullptr, nullptr) == NATS_OK);
    std::string name =
        info->Cluster != nullptr && info->Cluster->Leader != nullptr
            ? info->Cluster->Leader
            : "";
    jsStreamInfo_Destroy(info);
    return name;
  }

  // The Nats-Msg-Id of every message in the stream. A read that fails
  // (the client reconnecting after the kill) is tried again, bounded; a
  // sequence the stream does not hold is skipped.
  std::multiset<std::string> message_ids(const char* stream) {
    jsStreamInfo* info = nullptr;
    REQUIRE(js_GetStreamInfo(&info, js_, stream, nullptr, nullptr) == NATS_OK);
    const std::uint64_t first = info->State.FirstSeq;
    const std::uint64_t last = info->State.LastSeq;
    jsStreamInfo_Destroy(info);
    std::multiset<std::string> ids;
    for (std::uint64_t sequence = first; sequence != 0 && sequence <= last;
         ++sequence) {
      natsMsg* msg = nullptr;
      natsStatus status = NATS_OK;
      const bool read = wait_until([&] {
        status = js_GetMsg(&msg, js_, stream, sequence, nullptr, nullptr);
        return status == NATS_OK || status == NATS_NOT_FOUND;
      });
      INFO("sequence " << sequence << ": " << natsStatus_GetText(status));
      REQUIRE(read);
      if (status == NATS_NOT_FOUND) continue;
      const char* id = nullptr;
      REQUIRE(natsMsgHeader_Get(
                  msg, std::string(fnbus::nats::kMessageIdHeader).c_str(),
                  &id) == NATS_OK);
      ids.insert(id);
      natsMsg_Destroy(msg);
    }
    return ids;
  }

 private:
  natsConnection* connection_ = nullptr;
  jsCtx* js_ = nullptr;
};

TEST_CASE(
    "nats cluster: an R3 stream keeps every acknowledged event when its "
    "leader is killed with -9",
    "[nats][cluster]") {
  auto cluster = NatsCluster::Start();
  auto connected = Connection::Connect({.url = cluster->urls()});
  INFO(connected.status().ToString());
  REQUIRE(connected.ok());
  std::unique_ptr<Connection> nats = *std::move(connected);
  // JetStream answers once the cluster elected its meta leader.
  const StreamOptions stream{
      .name = "SHOP", .subjects = {"shop.>"}, .replicas = 3};
  const bool created =
      wait_until([&] { return nats->ensure_stream(stream).ok(); }, 60s);
  INFO(cluster->logs());
  REQUIRE(created);

  fnbus::BusConfig config;
  config.execution = fnbus::Execution::kInline;
  auto bus_or = EventBus::Create(std::move(config));
  REQUIRE(bus_or.ok());
  std::unique_ptr<EventBus> bus = *std::move(bus_or);
  DeadLetterRecorder dead;
  dead.keep<OrderPlaced>();
  // Retries spanning a leader election (seconds).
  auto exporter_or = Exporter::Create(
      *bus, *nats,
      {.max_attempts = 60,
       .backoff = {.initial = 10ms, .multiplier = 2.0, .max = 500ms},
       .ack_timeout = 2s,
       .dead_letter = dead.sink()});
  REQUIRE(exporter_or.ok());
  std::unique_ptr<Exporter> exporter = *std::move(exporter_or);
  REQUIRE(exporter
              ->add(ExportRoute<OrderPlaced>{
                  .subject = "shop.orders",
                  .codec = {.encode = [](const OrderPlaced& o)
                                -> absl::StatusOr<std::string> { return o.id; },
                            .decode = {}},
                  .message_id = [](const OrderPlaced& o) { return o.id; }})
              .ok());

  ClusterReader reader(cluster->urls());
  const std::string leader = reader.leader("SHOP");
  REQUIRE(leader.size() == 2);
  const int victim = leader[1] - '0';
  REQUIRE(victim >= 0);
  REQUIRE(victim < NatsCluster::kSize);

  constexpr int kEvents = 300;
  for (int i = 0; i < kEvents; ++i) {
    if (i == kEvents / 3) cluster->server(victim).kill9();
    REQUIRE(bus->publish(OrderPlaced{.id = "order-" + std::to_string(i)}).ok());
  }
  REQUIRE(exporter->flush(120s).ok());
  const fnbus::nats::ExportStats stats = exporter->stats();
  CHECK(stats.exported == kEvents);
  CHECK(stats.in_flight == 0);
  CHECK(stats.acknowledged + stats.dead_lettered == stats.exported);
  CHECK(dead.size() == stats.dead_lettered);

  // Every event is in the stream (once: the ids de-duplicate) or was
  // dead-lettered; the stream holds every acknowledged one.
  std::set<std::string> dead_ids;
  for (std::size_t i = 0; i < dead.size(); ++i) {
    REQUIRE(dead.at(i).get<OrderPlaced>() != nullptr);
    dead_ids.insert(dead.at(i).get<OrderPlaced>()->id);
  }
  const std::multiset<std::string> stored = reader.message_ids("SHOP");
  CHECK(stored.size() ==
        std::set<std::string>(stored.begin(), stored.end()).size());
  CHECK(stored.size() >= stats.acknowledged - stats.duplicates);
  std::size_t lost = 0;
  for (int i = 0; i < kEvents; ++i) {
    const std::string id = "order-" + std::to_string(i);
    if (stored.count(id) == 0 && dead_ids.count(id) == 0) ++lost;
  }
  CHECK(lost == 0);
}

}  // namespace
