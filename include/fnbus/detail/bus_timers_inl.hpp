#pragma once

// The definitions of EventBus's timer templates (publish_after() & co.):
// the typed event travels inside the scheduler's task.

#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fmt/chrono.h"
#include "fmt/format.h"

#include "fnbus/detail/saturating_time.hpp"
#include "fnbus/event_bus.hpp"

namespace fnbus {

// The dead-letter view of a timer's event: copyable by OwnedEvent::Copy
// (so a DeadLetterStore keeps the event, not just its metadata).
namespace detail {
template <Event E>
EventRef timer_event_ref(const E& event) noexcept {
  return EventRef(type_slot<E>(), event_type_name<E>(), &event, event_ops<E>());
}
}  // namespace detail

template <Event E>
absl::StatusOr<timers::TimerHandle> EventBus::publish_after(
    Duration delay, E event, PublishOptions options) {
  if (delay <= Duration::zero()) {
    return absl::InvalidArgumentError(
        fmt::format("publish_after<{}>: the delay is {}; use more than 0 (or "
                    "publish() to publish now)",
                    event_type_name<E>(), delay));
  }
  return schedule_publish(detail::saturating_add(clock_->now(), delay), event,
                          std::move(options));
}

template <Event E>
absl::StatusOr<timers::TimerHandle> EventBus::publish_at(
    TimePoint due, E event, PublishOptions options) {
  return schedule_publish(due, event, std::move(options));
}

template <Event E>
requires std::copy_constructible<E> absl::StatusOr<timers::PeriodicTimer>
EventBus::publish_every(Duration period, E event, PublishOptions options) {
  if (period <= Duration::zero()) {
    return absl::InvalidArgumentError(
        fmt::format("publish_every<{}>: the period is {}; use more than 0",
                    event_type_name<E>(), period));
  }
  absl::StatusOr<PublishOptions> publish = timer_options(std::move(options));
  if (!publish.ok()) return publish.status();
  return timers_.schedule_every(
      detail::saturating_add(clock_->now(), period), period,
      [this, event = std::move(event),
       publish = *std::move(publish)](timers::TimerFate fate) {
        if (fate == timers::TimerFate::kShutdown) {
          timers_.count_stopped();  // a schedule, not an accepted event
          return;
        }
        try {
          E copy = event;
          fire_timer(copy, publish);
        } catch (...) {  // the copy threw: this period's event is lost
          timer_event_lost(detail::timer_event_ref(event),
                           DeadLetterReason::kTimerRefused, publish);
        }
      });
}

template <Event E>
absl::StatusOr<timers::TimerHandle> EventBus::schedule_publish(
    TimePoint due, E& event, PublishOptions options) {
  static_assert(detail::kStoredInline<E> || std::is_move_assignable_v<E> ||
                    std::is_nothrow_move_constructible_v<E>,
                "a timer's event must stay whole if its publish is refused "
                "(to dead-letter it): give the event a move assignment or a "
                "noexcept move constructor");
  absl::StatusOr<PublishOptions> publish = timer_options(std::move(options));
  if (!publish.ok()) return publish.status();
  return timers_.schedule_at(
      due, [this, event = std::move(event),
            publish = *std::move(publish)](timers::TimerFate fate) mutable {
        if (fate == timers::TimerFate::kShutdown) {
          timer_event_lost(detail::timer_event_ref(event),
                           DeadLetterReason::kTimerPendingAtShutdown, publish);
          return;
        }
        fire_timer(event, publish);
      });
}

template <Event E>
void EventBus::fire_timer(E& event, const PublishOptions& options) noexcept {
  if (publish_event<true>(event, options).ok()) {
    timers_.count_fired();
    return;
  }
  timer_event_lost(detail::timer_event_ref(event),
                   DeadLetterReason::kTimerRefused, options);
}

}  // namespace fnbus
