#pragma once

// Configuration and option structs of the public API.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"

#include "fnbus/clock.hpp"
#include "fnbus/dead_letter_reason.hpp"
#include "fnbus/event.hpp"
#include "fnbus/exec/ordering_key.hpp"
#include "fnbus/exec/priority.hpp"
#include "fnbus/resilience/circuit_breaker.hpp"
#include "fnbus/resilience/event_callables.hpp"
#include "fnbus/resilience/retry.hpp"
#include "fnbus/resilience/seen_store.hpp"
#include "fnbus/settlement.hpp"

namespace fnbus {

// What publish() does when the queue is full.
enum class OverflowPolicy {
  kReject,  // return ResourceExhausted at once
  kBlock,   // wait up to the block timeout, then return DeadlineExceeded
};

// Where published events run.
enum class Execution {
  // On the bus's worker threads (production).
  kThreadPool,
  // Before publish() returns, in the calling thread: deterministic, for
  // tests. Events published by a handler (or sink) run after the current
  // event's handlers return (breadth-first, no recursion), still before
  // the outermost publish() returns; published from a handler that a
  // trigger() outside any such run runs, before that publish() returns.
  // The running thread holds a lock: a publish() from another thread
  // waits until the run ends (and may run the other thread's events), so
  // a handler must not wait for another thread that publishes to this bus.
  // No threads are started.
  kInline,
  // Queued until the test calls run_one(), run_all() or run_until_idle()
  // on the bus. No threads are started.
  kManual,
};

// How shutdown() treats events still in the queue.
enum class ShutdownMode {
  // Handle everything accepted (and what this bus's handlers publish
  // meanwhile), then stop -- for at most BusConfig::drain_timeout: what is
  // still queued then is dead-lettered (kDrainTimeout).
  kDrain,
  kCancelPending,  // hand queued events to the dead-letter sink, then stop
};

[[nodiscard]] std::string_view to_string(OverflowPolicy policy) noexcept;
[[nodiscard]] std::string_view to_string(ShutdownMode mode) noexcept;

// A handler failed: it threw, or returned a non-OK absl::Status. Passed to
// FunctionOptions::on_error and BusConfig::error_sink; valid only during
// that call (copy out what you keep, e.g. `*error.event.get<E>()`).
struct HandlerError {
  std::string_view function_name = {};  // FunctionOptions::name
  std::string_view event_type = {};     // event_type_name<E>()
  // The returned Status's code; kUnknown when the handler threw.
  absl::StatusCode code = absl::StatusCode::kUnknown;
  std::string_view message = {};  // the Status's message, or what()
  EventTrace trace = {};          // the event's trace ids
  // The event the handler failed on: event.get<E>() reads it.
  EventRef event = {};
  // The failed call's Context, as the handler saw it.
  Context context{{}, {}};
};

// An accepted event that will not reach its handlers (or one of them).
struct DeadLetter {
  // Valid only during the sink call; OwnedEvent::Copy(event) keeps a copy
  // (resilience::DeadLetterStore does).
  EventRef event;
  DeadLetterReason reason;
  EventTrace trace;  // the event's trace ids
  // The function that gave it up (kCircuitOpen and the retry reasons);
  // empty when the event reached no function (the shutdown and timer
  // reasons).
  std::string_view function = {};
  // That function's calls made for it before it was given up (0 when none
  // ran it).
  std::uint32_t attempts = 0;
  // The last of those calls' error; OK when none was made.
  absl::Status last_error = {};
};

// Bridges fnbus's trace ids to a tracing system (OpenTelemetry, Jaeger, a
// logging MDC). Every hook is optional; unset hooks cost one test of a
// flag.
struct TraceHooks {
  // Called by publish() and trigger() when the calling thread runs no
  // handler (of any bus) and PublishOptions::trace is not given: the
  // caller's ambient trace, e.g. the current request's, or nullopt to start
  // a new correlation. Called before the event is accepted; it may publish
  // (also to this bus) and may throw (a new correlation is used).
  std::function<std::optional<TraceContext>()> ambient = {};
  // Called on the dispatching thread just before and just after each
  // handler call (also when it throws), e.g. to make a span current.
  std::function<void(const Context&)> on_handler_start = {};
  std::function<void(const Context&)> on_handler_end = {};
};

// Bus-wide configuration, validated by EventBus::Create.
struct BusConfig {
  // Slots in the publish queue: a power of two, 2 .. 2^24 (128 bytes each).
  std::size_t queue_capacity = 4096;
  // Worker threads the pool starts with: 1 .. 1024.
  std::size_t workers = 2;
  // The most workers EventBus::resize_workers() (and so an autoscaler) may
  // ask for: `workers` .. 1024; 0 means `workers`. Per-worker metrics are
  // sized for this many (about 4 KB each before first use).
  std::size_t max_workers = 0;
  // Default for publishes that do not say otherwise.
  OverflowPolicy overflow = OverflowPolicy::kReject;
  // Follow-up headroom, per worker: how many events the handlers running
  // on one worker may publish to this bus while its queue is full (filled
  // by external producers, say). Such follow-ups neither block nor fail:
  // the worker keeps them and runs them itself before it takes anything
  // else from the queue, so chains of handlers (OrderPlaced ->
  // PaymentRequested -> ...) are never broken by a saturated queue, and a
  // worker never waits for space only its own pool could free. Past this
  // many held events, a follow-up gets ResourceExhausted at once.
  // 0 .. 2^20; 0 turns the headroom off. Memory is taken only while events
  // are held: at most follow_up_headroom x max_workers x ~130 bytes.
  // Execution::kInline and kManual have none (the caller drives the queue).
  std::size_t follow_up_headroom = 1024;
  // Longest wait of a kBlock publish on a full queue: > 0, <= 1 hour.
  std::chrono::nanoseconds block_timeout = std::chrono::milliseconds(100);
  // How long an idle worker keeps polling before it parks: 0 .. 1 s.
  // Longer spins lower the latency of the next event and cost CPU.
  std::chrono::nanoseconds idle_spin = std::chrono::microseconds(50);
  // Longest time shutdown(kDrain) (and the destructor) keeps handling
  // queued events, on the bus clock: > 0, <= 1 hour. A handler that
  // publishes its own event again (a retry or heartbeat loop) would keep a
  // drain going forever; past this time what is queued goes to the
  // dead-letter sink (DeadLetterReason::kDrainTimeout, counted as
  // dead-lettered) and handlers' publishes are refused. Handlers still
  // running are waited for: a handler that never returns keeps shutdown
  // waiting.
  std::chrono::nanoseconds drain_timeout = std::chrono::seconds(30);
  // The resolution of the bus's timers (publish_after() & co.): due times
  // round up to it. > 0, <= 1 hour.
  std::chrono::nanoseconds timer_tick = std::chrono::milliseconds(1);
  // Strands for per-key ordering (PublishOptions::key; docs/ordering.md):
  // keys whose hashes pick one strand are handled one at a time together.
  // A power of two, 1 .. 65536; one cache line each, taken up front.
  std::size_t key_strands = 1024;
  // Where published events run; kInline and kManual are for tests.
  Execution execution = Execution::kThreadPool;
  // The time source of everything the bus times; null means
  // SteadyClock::instance(). Tests pass a testing::ManualClock.
  std::shared_ptr<Clock> clock = {};
  // Record queue-wait, run-time and end-to-end latency histograms (two
  // clock reads per timed event plus one per handler call). Counters are
  // always kept.
  bool record_latency = true;
  // Time one published event in N, per publishing thread and bus:
  // 1 .. 65536.
  // 1 (the default) times every event and histogram counts are exact.
  // With N > 1 each timed event counts N times (its weight), so counts,
  // sums and quantiles estimate all events while the clock is read N
  // times less often -- for buses that handle millions of events a second
  // (see bench/README.md).
  std::uint32_t latency_sample_every = 1;
  // Bridges to a tracing system.
  TraceHooks trace{};

  // Called, on the dispatching thread, when a handler fails (throws or
  // returns a non-OK Status).
  std::function<void(const HandlerError&)> error_sink = {};
  // Called for each accepted event that will not be dispatched. May be
  // called from any thread, including the one calling shutdown().
  std::function<void(const DeadLetter&)> dead_letter_sink = {};
  // Called, on the dispatching thread, for an event that had no subscriber
  // when it was dispatched (Guava's DeadEvent).
  std::function<void(const EventRef&)> unhandled_sink = {};
};

// Options of one subscription (one "function").
struct FunctionOptions {
  // Name used in errors and metrics; need not be unique (subscriptions to
  // one type with one name share a metrics series). Empty names become
  // "<unnamed>". Each distinct (type, name) keeps its series for the bus's
  // lifetime; past 65535 of them, new ones share "<other functions>".
  std::string name = {};
  // Called, on the dispatching thread, when this function fails (throws or
  // returns a non-OK Status) -- before BusConfig::error_sink, which is
  // called too. The function's own compensation ("refund the payment")
  // goes here. It may publish and trigger like a handler; if it throws,
  // the exception is dropped.
  std::function<void(const HandlerError&)> on_error = {};

  // The stages below (docs/resilience.md) cost nothing when none is set.
  // subscribe() checks them and fails a precondition on a bad one;
  // resilience::check_options<E>(options) returns that check as a Status.

  // Trigger condition: the function runs only for the events it accepts,
  // e.g. `.when = [](const OrderPlaced& o) { return o.total_cents > 1000; }`.
  // The others are counted as filtered: not failures, not unhandled.
  Condition when = {};
  // Idempotency: the key of an event, e.g.
  // `[](const PaymentCompleted& p) { return p.payment_id; }`. An event
  // whose key was handled before (within the store's TTL) is not handled
  // again, and is counted as a duplicate. A key is remembered once the
  // handler succeeds; it is forgotten when the handler fails or does not
  // run, so that a replay or a retry is handled.
  KeyOf idempotency_key = {};
  // Where keys are remembered; null: an InMemorySeenStore of this
  // function's own with SeenStoreOptions' defaults (100,000 keys, 24 h).
  // Functions sharing one store are idempotent together.
  std::shared_ptr<resilience::SeenStore> seen_store = {};
  // A circuit breaker around the handler (BreakerOptions; validated). While
  // it is open the handler is not called: the fallback handles the event,
  // or else the event goes to the dead-letter sink for this function
  // (DeadLetterReason::kCircuitOpen).
  std::optional<resilience::BreakerOptions> breaker = {};
  // Called instead of the handler while the breaker is open, and after the
  // handler fails (that failure is still counted and reported to on_error
  // and the error sink). The same forms as a handler of the same event.
  Fallback fallback = {};
  // How long one call may run (> 0; unset: no deadline). The handler's
  // Context gives deadline() (its start + this) and a stop_token()
  // requested once it passes (on a thread-pool bus: within a quarter of
  // this, at least 1 ms, at most 1 s). A call that returns or throws after
  // its deadline is counted as timed out and failed (a successful one also
  // as late), reported with DeadlineExceeded, counts as a failure for the
  // breaker and is handed to the fallback.
  std::optional<Duration> deadline = {};
  // Retries (RetryOptions; validated): a failed call is called again after
  // a backoff -- the wait is a timer on the bus clock, the retry a queued
  // delivery to this function alone -- until one succeeds, the attempts
  // run out, retry_if says no or the event is older than max_event_age;
  // then the fallback is called, or the event is dead-lettered for this
  // function (kRetriesExhausted, kNotRetryable, kEventExpired...). Each
  // failed call counts as failed; one followed by a retry also as retried,
  // and only the final failure reaches on_error and the error sink.
  // Needs a copyable event type (kCopyableEvent<E>).
  std::optional<resilience::RetryOptions> retry = {};
  // Concurrency limit (AWS Lambda's reserved concurrency): at most this
  // many calls of the function run at once (> 0; unset: no limit). An
  // event that finds them all running waits, as a copy, without holding a
  // worker, and is queued again -- in arrival order -- when a call ends;
  // the event's other functions run meanwhile. Counted as throttled.
  // Needs a copyable event type (kCopyableEvent<E>).
  std::optional<int> max_concurrency = {};
};

// Options of one publish() call.
struct PublishOptions {
  // Overrides BusConfig::overflow for this call.
  std::optional<OverflowPolicy> overflow = {};
  // Overrides BusConfig::block_timeout for this call (kBlock only); must
  // be >= 0.
  std::optional<std::chrono::nanoseconds> block_timeout = {};
  // The trace this event belongs to; default: inherited from the handler
  // publishing it, else from TraceHooks::ambient, else a new correlation.
  std::optional<TraceContext> trace = {};
  // Per-key ordering (docs/ordering.md), e.g. `.key = order.id`: the
  // events published with one key are handled one at a time, in publish
  // order, by each function; other keys (and unkeyed events) run in
  // parallel. An integer or a string; see exec/strands.hpp for what is
  // and is not guaranteed (a retry or a max_concurrency wait keeps the
  // event's place: the key's next events wait for it).
  std::optional<OrderingKey> key = {};
  // The class the event is queued in (docs/priorities.md), e.g.
  // `.priority = Priority::kHigh` for payments: workers take high events
  // first, and still take a waiting normal event at least once in every 8
  // and a waiting low one at least once in every 16 (per worker). Each
  // class has its own queue_capacity slots.
  Priority priority = Priority::kNormal;
  // Told once how every function finished with the event, retries
  // included (fnbus/settlement.hpp): how a bridge knows when to
  // acknowledge a message. Not for publish_after()/publish_at() (refused).
  // Costs one allocation per event that sets it.
  SettleCallback on_settled = {};
};

// A consistent-enough snapshot of the bus counters. Each counter is exact;
// counters read at slightly different moments while the bus is busy (so a
// live snapshot may even show dispatched > published: an event is counted
// as published just after it is queued). After shutdown() returns they are
// final, and
//   published == dispatched + dead_lettered.
struct BusStats {
  std::uint64_t published = 0;      // accepted by publish()
  std::uint64_t rejected = 0;       // refused by publish(): full, timeout,
                                    // after shutdown
  std::uint64_t dispatched = 0;     // published events taken off the queue
                                    // and run past every handler
  std::uint64_t delivered = 0;      // handler calls that returned normally
  std::uint64_t failed = 0;         // handler calls that threw or
                                    // returned a non-OK Status
  std::uint64_t unhandled = 0;      // dispatches that found no subscriber
  std::uint64_t dead_lettered = 0;  // accepted events given to the DLQ sink
  // Events waiting to be dispatched now: in the queue, plus follow-ups
  // that workers hold in their headroom (BusConfig::follow_up_headroom),
  // so it may exceed queue_capacity while the queue is full.
  std::uint64_t queue_depth = 0;
};

}  // namespace fnbus
