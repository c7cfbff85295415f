// EventBus's timer hooks (publish_after() & co.): kept out of
// event_bus.cpp, which only shuts the timers down and reads their metrics.

#include "fnbus/event_bus.hpp"

namespace fnbus {

absl::StatusOr<PublishOptions> EventBus::timer_options(
    PublishOptions options) const {
  if (absl::Status status = validate(options); !status.ok()) return status;
  if (options.on_settled) {
    return absl::InvalidArgumentError(
        "PublishOptions::on_settled is not supported by publish_after() and "
        "publish_at(); publish the event with it when the timer fires (from "
        "a handler of a timer event of your own)");
  }
  // A timer waits out a full queue for the block timeout rather than
  // losing its moment at once (a refusal is dead-lettered, not retried).
  if (!options.overflow) options.overflow = OverflowPolicy::kBlock;
  // The trace is taken now, on the scheduling thread: a timer set by a
  // handler continues its correlation; TraceHooks::ambient is asked here,
  // never on the timer thread (whose ambient trace is nobody's). {} is a
  // new correlation.
  if (!options.trace) {
    options.trace = trace_origin(detail::this_thread_record(), nullptr).context;
  }
  return options;
}

void EventBus::timer_event_lost(const EventRef& event, DeadLetterReason reason,
                                const PublishOptions& options) noexcept {
  timers_.count_dead_lettered();
  dead_letter_sink_.call(DeadLetter{
      .event = event,
      .reason = reason,
      .trace = EventTrace{.context = options.trace.value_or(TraceContext{})}});
}

std::size_t EventBus::run_due_timers() { return timers_.run_due(); }

}  // namespace fnbus
