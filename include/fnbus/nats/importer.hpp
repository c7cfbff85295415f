#pragma once

// Imports events from a JetStream stream into a local bus (library target
// fnbus::nats): a durable pull consumer per function group. Each message
// is decoded by its subject's route and published to the bus with
// PublishOptions::on_settled; it is acknowledged only once every local
// function has finished with it successfully (or dead-lettered it here),
// and negatively acknowledged otherwise, for redelivery after a backoff.
// Processes importing with the same durable name share the messages (load
// balancing across machines). Delivery is at least once: a handler may
// see an event again after a crash or a failure elsewhere, so make the
// functions idempotent (FunctionOptions::idempotency_key).
//
//   auto importer = *fnbus::nats::Importer::Create(
//       *bus, *connection,
//       {.stream = "ORDERS", .durable = "fulfilment",
//        .dead_letter = store->sink()});
//   RETURN_IF_ERROR(importer->add(fnbus::nats::ImportRoute<OrderPlaced>{
//       .subject = "orders.placed", .codec = order_codec}));
//   RETURN_IF_ERROR(importer->start());
//   ...
//   importer->stop();  // before bus->shutdown(): nothing new arrives
//
// A message that cannot be decoded (or whose subject has no route) is
// handed to ImportOptions::dead_letter as an UndecodableMessage with its
// raw bytes (DeadLetterReason::kUndecodable) and terminated: JetStream
// does not send it again.
//
// Thread safety: add() and start() from one thread, before and at start;
// stats() and append_prometheus() from any thread. One fetching thread
// per importer; the acknowledgements are sent from the thread that
// settles each event (a worker).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/event_bus.hpp"
#include "fnbus/nats/codec.hpp"
#include "fnbus/nats/connection.hpp"
#include "fnbus/owned_event.hpp"

namespace fnbus::nats {

// A message the importer could not turn into an event, as dead-lettered.
struct UndecodableMessage {
  static constexpr std::string_view kEventName =
      "fnbus.nats.UndecodableMessage";
  std::string subject;
  std::string data;  // the raw bytes, as received
  std::uint64_t stream_sequence = 0;
};

// Which event type a subject's messages become.
template <typename E>
struct ImportRoute {
  std::string subject;  // exact, e.g. "orders.placed"
  Codec<E> codec;       // its decode() is used
  // How the decoded events are published (priority, overflow...). The
  // importer sets trace (from the message's headers) and on_settled;
  // overflow defaults to kBlock, so a full bus slows the fetching down.
  PublishOptions publish = {};
};

struct ImportOptions {
  std::string stream;   // e.g. "ORDERS"; must exist (ensure_stream)
  std::string durable;  // the function group, e.g. "fulfilment"
  // The consumer's subject filter; empty: every subject of the stream.
  std::string filter_subject = {};
  int fetch_batch = 64;  // messages per pull, 1 .. 10000
  // How long one pull waits for messages: also how soon stop() is seen.
  std::chrono::milliseconds fetch_wait = std::chrono::milliseconds(200);
  // JetStream sends a message again if not acknowledged within this.
  std::chrono::milliseconds ack_wait = std::chrono::seconds(30);
  // Messages of this durable handed out and not yet acknowledged (all
  // processes together), >= 1.
  int max_ack_pending = 1000;
  // The delay before a negatively acknowledged message comes back, by
  // delivery (the first failure waits backoff[0]; the last repeats).
  std::vector<std::chrono::milliseconds> redelivery_backoff = {
      std::chrono::milliseconds(100), std::chrono::seconds(1),
      std::chrono::seconds(5)};
  // Required: where undecodable messages go (e.g. a DeadLetterStore's
  // sink()); called on the fetching thread.
  EventBus::DeadLetterSink dead_letter = {};
};

// Counts since start(), per subject (the route's, or the message's when
// it had none).
struct ImportSubjectStats {
  std::string subject;
  std::uint64_t received = 0;     // messages fetched
  std::uint64_t redelivered = 0;  // of which JetStream had sent before
  std::uint64_t imported = 0;     // published to the bus
  std::uint64_t acked = 0;        // settled done or dead-lettered here
  std::uint64_t nacked = 0;  // settled failed/abandoned, or refused by the bus
  std::uint64_t decode_failures = 0;  // dead-lettered as undecodable
};

struct ImporterStats {
  std::vector<ImportSubjectStats> subjects;
  std::uint64_t fetch_errors = 0;  // pulls that failed (not timeouts)
  std::uint64_t in_flight = 0;     // published, not yet settled
};

class Importer {
 public:
  // InvalidArgument for bad options (each named), with what to set.
  static absl::StatusOr<std::unique_ptr<Importer>> Create(
      EventBus& bus, Connection& connection, ImportOptions options);
  ~Importer();  // stop()
  Importer(const Importer&) = delete;
  Importer& operator=(const Importer&) = delete;

  // Routes `route.subject`'s messages to E. Before start(): otherwise
  // FailedPrecondition; InvalidArgument for an empty subject, a missing
  // decode, or a subject routed twice.
  template <Event E>
  absl::Status add(ImportRoute<E> route);

  // Creates the durable consumer (or takes the existing one: its ack
  // wait, filter and pending limit are updated), binds to it and starts
  // fetching. NotFound if the stream does not exist, FailedPrecondition
  // without routes, Unavailable when JetStream does not answer.
  absl::Status start();
  // Stops fetching and waits up to `timeout` for the events in flight to
  // settle (each is acknowledged or not as it settles). DeadlineExceeded
  // if some had not: JetStream sends those again after ack_wait. Stop
  // before shutting the bus down; a bus shut down first settles its
  // events as abandoned (sent again at once, to any process).
  absl::Status stop(
      std::chrono::milliseconds timeout = std::chrono::seconds(5));

  [[nodiscard]] ImporterStats stats() const;
  // Prometheus text lines fnbus_nats_import_*_total{durable,subject}.
  void append_prometheus(std::string& out) const;

  struct State;  // internal (src/nats/importer.cpp)

 private:
  using Decoder =
      std::function<absl::StatusOr<OwnedEvent>(std::string_view bytes)>;
  Importer(std::shared_ptr<State> state) : state_(std::move(state)) {}
  absl::Status add_route(std::string subject, Decoder decode,
                         PublishOptions publish, bool has_decode);
  std::shared_ptr<State> state_;
};

template <Event E>
absl::Status Importer::add(ImportRoute<E> route) {
  const bool has_decode = static_cast<bool>(route.codec.decode);
  Decoder decode = [decode = std::move(route.codec.decode)](
                       std::string_view bytes) -> absl::StatusOr<OwnedEvent> {
    absl::StatusOr<E> event = decode(bytes);
    if (!event.ok()) return event.status();
    return OwnedEvent::Of(*std::move(event));
  };
  return add_route(std::move(route.subject), std::move(decode),
                   std::move(route.publish), has_decode);
}

}  // namespace fnbus::nats
