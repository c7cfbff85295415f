#pragma once

// Export: events published on the local bus are also published to a
// JetStream subject (library target fnbus::nats; guide: docs/nats.md,
// "Beyond one process").
//
//   auto exporter = fnbus::nats::Exporter::Create(
//       *bus, *nats, {.dead_letter = store->sink()});
//   RETURN_IF_ERROR((*exporter)->add(fnbus::nats::ExportRoute<OrderPlaced>{
//       .subject = "orders.placed", .codec = order_placed_codec}));
//
// Each route subscribes one bus function ("export:<subject>") that
// encodes the event and publishes it asynchronously (js_PublishMsgAsync)
// on the exporter's own JetStream context, with at most
// ExporterOptions::max_in_flight messages waiting for their
// acknowledgement.
//
// Guarantees:
// - Every event the function accepts (it returned OK; counted as
//   exported) ends in exactly one of: acknowledged by JetStream (stored,
//   or recognised as a duplicate of a stored message), or handed to
//   ExporterOptions::dead_letter with DeadLetterReason::kExportFailed.
//   Once flush() returns OK, or the Exporter is destroyed,
//   exported == acknowledged + dead_lettered.
// - A publish that fails (an error acknowledgement such as "no stream
//   for this subject", no acknowledgement within ack_timeout, a lost
//   connection) is sent again, after ExporterOptions::backoff, with the
//   SAME Nats-Msg-Id: if the first one was stored after all, the stream's
//   duplicate window (StreamOptions::duplicate_window) drops the second.
// - An encode failure is the function's failure: its Status goes back to
//   the bus (FunctionOptions retry and dead-letter rules apply).
//
// Not guaranteed: order on the subject (retries and concurrent workers
// reorder; key the consumers on the data, not on the sequence); exactly
// once (a resend after the duplicate window, or with a different
// message id, is stored twice); that a message the server stored before
// a crash without syncing survives it (nats-server's sync_interval).
//
// Headers of each message: Nats-Msg-Id (ExportRoute::message_id, else
// "<exporter id>-<sequence>", both 16 lower-case hex digits then
// decimal), Fnbus-Correlation-Id and Fnbus-Event-Id (the event's trace ids,
// 16 lower-case hex digits each), Fnbus-Event-Type (event_type_name<E>()).
//
// Lifetime and shutdown order: create the Exporter after the bus and the
// Connection, destroy it before both (declare it after them). Its
// destructor unsubscribes its functions, waits up to
// ExporterOptions::close_timeout for what is in flight (retries
// included), and dead-letters what is still unacknowledged. Events the
// bus runs after that (shutdown's drain) are not exported: to export
// everything, shut the bus down (kDrain) first, then destroy the
// Exporter.
//
// Thread safety: add(), flush(), stats() and append_prometheus() from any
// thread, also concurrently (add() not from a handler of the bus).

#include <atomic>
#include <chrono>
#include <concepts>
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
#include "fnbus/options.hpp"
#include "fnbus/owned_event.hpp"
#include "fnbus/resilience/backoff.hpp"

namespace fnbus::nats {

struct ExporterOptions {
  // Messages published but not yet acknowledged, at most: 1 .. 1,000,000.
  // A function that finds them all waiting blocks (its bus worker) until
  // an acknowledgement frees a place, for up to ack_timeout: back-pressure
  // on the bus rather than unbounded memory.
  std::size_t max_in_flight = 4096;
  // Publishes of one event, the first included, before it is
  // dead-lettered: 1 .. 1000.
  std::uint32_t max_attempts = 5;
  // The wait before each resend (resilience::Backoff; validated).
  resilience::BackoffOptions backoff = {
      .initial = std::chrono::milliseconds(100),
      .multiplier = 2.0,
      .max = std::chrono::seconds(5),
      .jitter = resilience::Jitter::kEqual};
  // How long one publish waits for its acknowledgement before it counts
  // as failed (and is resent): > 0, <= 1 hour.
  std::chrono::milliseconds ack_timeout = std::chrono::seconds(5);
  // How long the destructor waits for what is in flight: 0 .. 1 hour.
  std::chrono::milliseconds close_timeout = std::chrono::seconds(2);
  // Required: where events that could not be exported go
  // (DeadLetterReason::kExportFailed), e.g. a
  // resilience::DeadLetterStore's sink() or the bus's own sink. Called on
  // the client's callback thread, the exporter's retry thread or the
  // thread destroying the Exporter -- possibly two at once -- never under
  // an exporter lock. An exception it throws is dropped.
  std::function<void(const DeadLetter&)> dead_letter = {};
};

// One exported event type: where its events go and how they are written.
template <Event E>
struct ExportRoute {
  // A literal subject (no wildcards `*`/`>`, no whitespace, `"` or `\`),
  // e.g. "orders.placed". A stream must capture it
  // (Connection::ensure_stream) or every publish fails.
  std::string subject = {};
  // codec.encode is required (decode is the importer's).
  Codec<E> codec = {};
  // Optional business-level de-duplication: the Nats-Msg-Id of an event,
  // e.g. `[](const OrderPlaced& o) { return "order-" + o.id; }`. Two
  // events with one id within the stream's duplicate window are stored
  // once. Default: an id unique to each exported event.
  std::function<std::string(const E&)> message_id = {};
};

// Counters of one subject (or, from stats(), of all of them).
struct ExportStats {
  std::uint64_t exported = 0;       // events accepted for publishing
  std::uint64_t acknowledged = 0;   // stored by JetStream (duplicates too)
  std::uint64_t duplicates = 0;     // of those, dropped as duplicates
  std::uint64_t retried = 0;        // resends after a failed publish
  std::uint64_t dead_lettered = 0;  // given up (kExportFailed)
  // exported - acknowledged - dead_lettered: waiting for an
  // acknowledgement or a resend.
  std::uint64_t in_flight = 0;
};

struct SubjectExportStats {
  std::string subject = {};
  ExportStats stats;
};

class Exporter {
 public:
  // Opens the exporter's JetStream context on `connection` with
  // asynchronous publishing. InvalidArgument naming every bad option and
  // what to use; the client's error (Connection's messages) otherwise.
  // `bus` and `connection` must outlive the Exporter.
  static absl::StatusOr<std::unique_ptr<Exporter>> Create(
      EventBus& bus, Connection& connection, ExporterOptions options);
  // Unsubscribes, flushes for up to close_timeout, dead-letters the rest.
  ~Exporter();

  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // Exports the events of type E that the bus dispatches from now on to
  // route.subject (a bus function named "export:<subject>").
  // Returns InvalidArgument for a bad subject or a missing encoder.
  // Thread safety: any thread except the bus's handlers.
  template <Event E>
  requires kCopyableEvent<E> absl::Status add(ExportRoute<E> route);

  // Waits until nothing is in flight (every exported event acknowledged
  // or dead-lettered, resends included), for at most `timeout`.
  // Returns OK, or DeadlineExceeded saying how many are still in flight.
  // Thread safety: any thread except the bus's handlers (whose events it
  // may be waiting for). Memory ordering: the dead-letter calls of the
  // events it waited for happen before it returns.
  absl::Status flush(std::chrono::milliseconds timeout);

  // Counters over all subjects. Thread safety: any thread.
  [[nodiscard]] ExportStats stats() const;
  // Counters per subject, in the order add() first named them.
  [[nodiscard]] std::vector<SubjectExportStats> subject_stats() const;
  // Appends Prometheus text (format 0.0.4), one sample per subject, with
  // # HELP and # TYPE: counters fnbus_nats_exported_total,
  // fnbus_nats_export_acknowledged_total, _duplicates_total,
  // _retried_total, _dead_lettered_total, and the gauge
  // fnbus_nats_export_in_flight, each labelled {subject="..."}. Nothing
  // when no route was added. Thread safety: any thread.
  void append_prometheus(std::string& out) const;

  struct Core;   // internal (src/nats/exporter.cpp)
  struct Route;  // one subject's counters and names

 private:
  Exporter(EventBus& bus, std::unique_ptr<Core> core);
  // add()'s untyped part: checks the route, returns its Route (kept for
  // the Exporter's life).
  absl::StatusOr<Route*> add_route(std::string_view subject,
                                   std::string_view event_type,
                                   bool has_encoder);
  // Keeps `subscription` (cancelled by the destructor).
  void keep(Subscription subscription);
  // The function's step after encoding: publishes `payload` and tracks it
  // until acknowledged or dead-lettered. `message_id` empty: a new one.
  absl::Status send(Route& route, std::string payload, std::string message_id,
                    const EventTrace& trace, OwnedEvent event);
  [[nodiscard]] static const std::string& function_name(const Route& route);

  EventBus& bus_;
  std::unique_ptr<Core> core_;
};

template <Event E>
requires kCopyableEvent<E> absl::Status Exporter::add(ExportRoute<E> route) {
  absl::StatusOr<Route*> added =
      add_route(route.subject, event_type_name<E>(),
                static_cast<bool>(route.codec.encode));
  if (!added.ok()) return added.status();
  Route& target = **added;
  Subscription subscription = bus_.subscribe<E>(
      [this, &target, route = std::move(route)](
          const E& event, Context& context) -> absl::Status {
        absl::StatusOr<std::string> bytes = route.codec.encode(event);
        if (!bytes.ok()) return bytes.status();
        std::string id = route.message_id ? route.message_id(event) : "";
        return send(target, *std::move(bytes), std::move(id),
                    context.event_trace(), OwnedEvent::Of(event));
      },
      {.name = function_name(target)});
  keep(std::move(subscription));
  return absl::OkStatus();
}

}  // namespace fnbus::nats
