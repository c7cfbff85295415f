#pragma once

// How every function of one published event finished with it, told once
// through PublishOptions::on_settled -- the seam a bridge acknowledges
// through (fnbus::nats imports a message, and acknowledges it to
// JetStream only once its event has settled here):
//
//   bus->publish(order, {.on_settled = [](const fnbus::Settlement& s) {
//     if (s.verdict == fnbus::Verdict::kDone) ack(); else retry_later();
//   }});
//
// An accepted event settles exactly once: after its last call, retries
// included, has ended in success, failure or a dead letter -- or once it
// was dead-lettered before reaching its functions (shutdown). A refused
// publish never settles: its Status says so.

#include <cstdint>
#include <functional>
#include <string_view>

namespace fnbus {

// The verdict on an event as a whole. Ordered: the first that applies.
enum class Verdict {
  // Some of its work was not done here and would be done by publishing
  // it again: shutdown() dead-lettered it (queued, or a retry waiting for
  // its time), or a function was unsubscribed while its retry waited.
  kAbandoned,
  // A function's last call failed and nothing kept the event: the
  // function has no retries (so no dead letter).
  kFailed,
  // It reached no function: nobody subscribes to its type.
  kUnhandled,
  // Every function ran it or dead-lettered it (retries exhausted, not
  // retryable, expired, circuit open, concurrency limit, retry refused):
  // the dead-letter sink holds what failed.
  kDeadLettered,
  // Every function's call succeeded, was filtered out, was a duplicate,
  // or fell back.
  kDone,
};

[[nodiscard]] std::string_view to_string(Verdict verdict) noexcept;

struct Settlement {
  Verdict verdict = Verdict::kDone;
  std::uint32_t failed = 0;         // functions failed for good (kFailed)
  std::uint32_t dead_lettered = 0;  // its dead letters from functions
  std::uint32_t abandoned = 0;      // its dead letters of kAbandoned's kinds
};

// Called once per accepted event, on the thread that ended its last call
// (a worker, a timer's, or shutdown()'s), under the rules of a sink: it
// may publish but not block on the bus; an exception from it is dropped.
using SettleCallback = std::function<void(const Settlement&)>;

}  // namespace fnbus
