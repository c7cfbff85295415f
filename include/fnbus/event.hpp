#pragma once

// Event types: their names, dense ids, and type-erased references.

#include <concepts>
#include <cstdint>
#include <stop_token>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"

#include "fnbus/clock.hpp"
#include "fnbus/detail/deadline_state.hpp"
#include "fnbus/detail/retry_state.hpp"
#include "fnbus/detail/type_slot.hpp"

namespace fnbus {

// An event is any object type that can be moved without throwing when it is
// published, or passed by reference to trigger().
template <typename E>
concept Event = std::is_object_v<E> && !std::is_const_v<E> &&
                !std::is_volatile_v<E> && std::is_destructible_v<E>;

// The name fnbus uses for E in errors, statistics and sinks: E::kEventName
// if E declares one (a `static constexpr std::string_view`), otherwise the
// compiler's spelling of the type, e.g. "shop::OrderCreated".
namespace detail {
template <typename E>
constexpr std::string_view compute_event_type_name() noexcept {
  if constexpr (requires { std::string_view{E::kEventName}; }) {
    return std::string_view{E::kEventName};
  } else {
    return compiler_type_name<E>();
  }
}
// Forces compile-time evaluation: the hot path must not parse names.
template <typename E>
inline constexpr std::string_view kEventTypeName = compute_event_type_name<E>();
}  // namespace detail

template <Event E>
[[nodiscard]] constexpr std::string_view event_type_name() noexcept {
  return detail::kEventTypeName<E>;
}

// Whether fnbus may copy events of type E (OwnedEvent::Copy, and so the
// dead-letter store): std::is_copy_constructible_v<E> unless specialised.
// Specialise it to false for an event whose copy constructor is declared
// but does not compile (a member std::vector<std::unique_ptr<T>>, say,
// which std::is_copy_constructible cannot see through), next to E:
//   namespace fnbus {
//   template <>
//   inline constexpr bool kCopyableEvent<shop::Parcel> = false;
//   }
// Such events are kept without a copy (OwnedEvent::clone() says
// FailedPrecondition).
template <typename E>
inline constexpr bool kCopyableEvent = std::is_copy_constructible_v<E>;

namespace detail {
struct EventOps;
}  // namespace detail
class OwnedEvent;

// A reference to an event whose type is known only at run time, as given
// to the dead-letter, error and unhandled sinks. Valid only during that
// call: OwnedEvent::Copy(ref) keeps a copy (for the dead-letter and error
// sinks' refs and OwnedEvent::ref()'s, which know how to copy their event).
class EventRef {
 public:
  // No event: get<E>() returns nullptr for every E.
  EventRef() noexcept : slot_(detail::kNoTypeSlot), event_(nullptr) {}
  // `ops` (may be null) is how to copy the event, for OwnedEvent::Copy.
  EventRef(detail::TypeSlot slot, std::string_view type_name, const void* event,
           const detail::EventOps* ops = nullptr) noexcept
      : slot_(slot), type_name_(type_name), event_(event), ops_(ops) {}

  [[nodiscard]] std::string_view type_name() const noexcept {
    return type_name_;
  }

  // The event if it is an E, otherwise nullptr.
  template <Event E>
  [[nodiscard]] const E* get() const noexcept {
    return slot_ == detail::type_slot<E>() ? static_cast<const E*>(event_)
                                           : nullptr;
  }

 private:
  friend class OwnedEvent;
  detail::TypeSlot slot_;
  std::string_view type_name_;
  const void* event_;
  const detail::EventOps* ops_ = nullptr;  // null: not copyable from here
};

// Where an event comes from, for tracing. Every event has a nonzero id of
// its own (Context::event_id()); events published or triggered from inside
// a handler inherit the handler's correlation id and take its event's id
// as their parent, so one storefront request can be followed through every
// function it set off. Ids are random-looking 64-bit numbers, 0 meaning
// "none".
struct TraceContext {
  std::uint64_t correlation_id = 0;  // shared by a whole chain of events
  std::uint64_t parent_id = 0;       // event_id of the causing event, or 0

  friend bool operator==(const TraceContext&, const TraceContext&) = default;
};

// The trace identity of one event.
struct EventTrace {
  TraceContext context;
  std::uint64_t event_id = 0;

  friend bool operator==(const EventTrace&, const EventTrace&) = default;
};

// What a handler may learn about the call it is in. Passed as the optional
// second argument of a handler. Valid only during that call.
class Context {
 public:
  Context(std::string_view event_type, std::string_view function_name,
          const EventTrace& trace = {}) noexcept
      : event_type_(event_type), function_name_(function_name), trace_(trace) {}

  [[nodiscard]] std::string_view event_type() const noexcept {
    return event_type_;
  }
  [[nodiscard]] std::string_view function_name() const noexcept {
    return function_name_;
  }
  // The event's correlation and parent ids.
  [[nodiscard]] const TraceContext& trace() const noexcept {
    return trace_.context;
  }
  [[nodiscard]] std::uint64_t correlation_id() const noexcept {
    return trace_.context.correlation_id;
  }
  [[nodiscard]] std::uint64_t parent_id() const noexcept {
    return trace_.context.parent_id;
  }
  // This event's own id: the parent_id of events its handlers publish.
  [[nodiscard]] std::uint64_t event_id() const noexcept {
    return trace_.event_id;
  }
  [[nodiscard]] const EventTrace& event_trace() const noexcept {
    return trace_;
  }
  // The instant by which this call should end: when the function's stages
  // started the handler plus FunctionOptions::deadline, on the bus clock.
  // TimePoint::max() when the function has no deadline, and once the
  // handler has returned (in a fallback, on_error or the error sink).
  [[nodiscard]] TimePoint deadline() const noexcept {
    return deadline_ != nullptr && deadline_->running ? deadline_->deadline
                                                      : TimePoint::max();
  }
  // Requested once deadline() has passed while the handler still runs --
  // by the bus's deadline watchdog, within one watch period after the
  // deadline (docs/resilience.md, "Deadlines"), on a bus with a thread
  // pool. A token that is never requested when there is no deadline().
  [[nodiscard]] std::stop_token stop_token() const noexcept {
    return deadline_ != nullptr && deadline_->running ? deadline_->token
                                                      : std::stop_token();
  }
  // Which call of this function for this event: 1, or 2 for the first
  // retry (FunctionOptions::retry), and so on.
  [[nodiscard]] std::uint32_t attempt() const noexcept {
    return retry_ != nullptr ? retry_->attempt : 1;
  }

 private:
  friend class detail::ContextAccess;
  std::string_view event_type_;
  std::string_view function_name_;
  EventTrace trace_;  // a copy: a Context may be copied out of the handler
  // The deadline of the call in progress (see resilience::Pipeline), or
  // null: owned by the bus's DeadlineWatch; reset for every handler.
  const detail::DeadlineState* deadline_ = nullptr;
  // The retry this call is (see detail::RetryState), or null: a first call.
  const detail::RetryState* retry_ = nullptr;
  // The event's PublishOptions::on_settled record, or null (a first call;
  // a retry's is in its RetryState).
  detail::SettleState* settle_ = nullptr;
};

// What a handler may return: nothing, or an absl::Status whose non-OK value
// counts as a failure (like a throw, without the exception).
template <typename R>
concept HandlerResult = std::is_void_v<R> || std::same_as<R, absl::Status>;

// A callable taking `const E&`, or `const E&` and `Context&`.
template <typename F, typename E>
concept HandlerFor =
    (std::invocable<F&, const E&> &&
     HandlerResult<std::invoke_result_t<F&, const E&>>) ||
    (std::invocable<F&, const E&, Context&> &&
     HandlerResult<std::invoke_result_t<F&, const E&, Context&>>);

namespace detail {
class ContextAccess {
 public:
  // Also clears the previous handler's deadline.
  static void set_function(Context& context, std::string_view name) noexcept {
    context.function_name_ = name;
    context.deadline_ = nullptr;
  }
  static void set_deadline(Context& context,
                           const DeadlineState* deadline) noexcept {
    context.deadline_ = deadline;
  }
  [[nodiscard]] static const DeadlineState* deadline(
      const Context& context) noexcept {
    return context.deadline_;
  }
  static void set_retry(Context& context, const RetryState* retry) noexcept {
    context.retry_ = retry;
  }
  [[nodiscard]] static const RetryState* retry(
      const Context& context) noexcept {
    return context.retry_;
  }
  static void set_settle(Context& context, SettleState* settle) noexcept {
    context.settle_ = settle;
  }
  // The record the call's outcome is marked in, or null.
  [[nodiscard]] static SettleState* settle(const Context& context) noexcept {
    if (context.retry_ != nullptr) return context.retry_->settle.get();
    return context.settle_;
  }
};
}  // namespace detail

}  // namespace fnbus
