#pragma once

// Why an event reached the dead-letter sink (DeadLetter::reason), and how
// many reasons there are (metrics::DeadLetterCounts counts each).

#include <cstddef>
#include <string_view>

namespace fnbus {

// Why an event reached the dead-letter sink.
enum class DeadLetterReason {
  kCancelledAtShutdown,  // queued when shutdown(kCancelPending) ran
  kDrainTimeout,  // still queued when shutdown(kDrain) passed drain_timeout
  // Not run by one function because its circuit breaker was open and no
  // fallback handled it (FunctionOptions::breaker); DeadLetter::function
  // names it. The event's other functions ran as usual.
  kCircuitOpen,
  // A timer's event (EventBus::publish_after(), publish_at()) still
  // waiting for its time when shutdown() ran, under either mode.
  kTimerPendingAtShutdown,
  // A timer came due but publishing its event was refused (the queue
  // stayed full for the block timeout, say).
  kTimerRefused,
  // The reasons of a function with retries (FunctionOptions::retry); each
  // names the function in DeadLetter::function, with the calls made and
  // the last one's error:
  // its last allowed call failed (and no fallback handled it),
  kRetriesExhausted,
  // a call failed in a way RetryOptions::retry_if does not retry,
  kNotRetryable,
  // a retry came due after RetryOptions::max_event_age (not run),
  kEventExpired,
  // a retry was waiting for its time when shutdown() ran (either mode),
  kRetryPendingAtShutdown,
  // a retry could not be scheduled or queued (the bus was shutting down,
  // the queue stayed full, or the event could not be copied),
  kRetryRefused,
  // the function was unsubscribed while a retry of it, or an event for
  // it, waited (for its time, or for a concurrency slot).
  kFunctionGone,
  // The function was at its concurrency limit (FunctionOptions::
  // max_concurrency) and the event could not wait for a slot: it could
  // not be copied, or, its turn come, the bus no longer accepted events
  // (shutdown() had begun). (A full queue does not refuse it: the thread
  // that ended the call runs it.)
  // DeadLetter::function names the function.
  kWaitRefused,
  // The NATS exporter (nats/exporter.hpp) gave up publishing the event to
  // JetStream after ExporterOptions::max_attempts, or when it was destroyed
  // unacknowledged; DeadLetter::function is "export:<subject>".
  kExportFailed,
  // A message from outside (fnbus::nats::Importer) that could not be made
  // an event: no route for its subject, or its codec refused the bytes.
  // The event is a fnbus::nats::UndecodableMessage holding them;
  // DeadLetter::function names the importer's durable consumer.
  kUndecodable,
  // (A new reason goes before this line, and updates kDeadLetterReasonCount
  // and to_string.)
};
// The number of DeadLetterReasons (each counted in
// metrics::DeadLetterCounts).
inline constexpr std::size_t kDeadLetterReasonCount =
    static_cast<std::size_t>(DeadLetterReason::kUndecodable) + 1;

[[nodiscard]] std::string_view to_string(DeadLetterReason reason) noexcept;

}  // namespace fnbus
