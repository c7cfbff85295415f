#pragma once

// OwnedEvent: one event of any type, owned, for keeping an event beyond a
// sink call (a dead-letter store) and publishing it again.
//
//   fnbus::OwnedEvent kept = fnbus::OwnedEvent::Of(OrderPlaced{.id = 7});
//   if (const OrderPlaced* order = kept.get<OrderPlaced>()) { ... }
//   absl::Status status = bus->publish(std::move(kept));
//
// An OwnedEvent is move-only: whether its event can be copied is known
// only at run time, so copying is the explicit clone(), which says
// FailedPrecondition for an event type without a copy constructor.
// OwnedEvent::Copy(ref) copies the event behind an EventRef, e.g. the one
// a dead-letter sink is given.

#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"

#include "fnbus/detail/envelope.hpp"
#include "fnbus/detail/type_slot.hpp"
#include "fnbus/event.hpp"

namespace fnbus {

// Owns one event of a type known at run time. Empty when
// default-constructed or moved from.
//
// Storage: events that the bus queues without allocating (up to 48 bytes,
// aligned to at most 8, with a noexcept move constructor) are stored
// inline; others on the heap. Publishing an OwnedEvent
// (EventBus::publish(OwnedEvent)) moves it into the queue without a copy
// or an allocation.
//
// Thread safety: a value type; const methods may be called from several
// threads at once (they read only), others need exclusive access.
class OwnedEvent {
 public:
  // User-provided, so that `const OwnedEvent none;` compiles (the
  // envelope leaves unused ids uninitialised).
  OwnedEvent() noexcept {}  // NOLINT(modernize-use-equals-default)
  OwnedEvent(OwnedEvent&&) noexcept = default;
  OwnedEvent& operator=(OwnedEvent&&) noexcept = default;
  OwnedEvent(const OwnedEvent&) = delete;  // see clone()
  OwnedEvent& operator=(const OwnedEvent&) = delete;
  ~OwnedEvent() = default;

  // Takes `event` (moved in). Throws std::bad_alloc if an event that is
  // not stored inline cannot be allocated.
  template <Event E>
  [[nodiscard]] static OwnedEvent Of(E event);

  // A copy of the event `event` refers to.
  // Returns InvalidArgument for a ref to no event; FailedPrecondition
  // naming the type when it has no copy constructor, or when the ref does
  // not know how to copy its event (an unhandled sink's, or one built by
  // hand); ResourceExhausted or Unknown (with the exception's message)
  // when the copy constructor throws.
  // Thread safety: any thread, while the ref is valid.
  [[nodiscard]] static absl::StatusOr<OwnedEvent> Copy(const EventRef& event);

  [[nodiscard]] bool empty() const noexcept { return envelope_.empty(); }
  // event_type_name<E>() of the event; empty if there is none.
  [[nodiscard]] std::string_view type_name() const noexcept {
    return empty() ? std::string_view() : envelope_.type_name();
  }
  // The event if it is an E, otherwise (or if empty) nullptr.
  template <Event E>
  [[nodiscard]] const E* get() const noexcept {
    return ref().get<E>();
  }
  // A reference to the event (a copyable one: Copy(ref()) works when the
  // type is copyable), valid while this OwnedEvent holds it.
  [[nodiscard]] EventRef ref() const noexcept {
    return empty() ? EventRef() : envelope_.ref();
  }
  // Whether clone() can copy the event (an empty one: yes).
  [[nodiscard]] bool copyable() const noexcept;
  // A copy: empty if this is empty. Errors as Copy()'s.
  [[nodiscard]] absl::StatusOr<OwnedEvent> clone() const;

 private:
  friend class EventBus;  // publishes envelope_ (EventBus::publish)
  explicit OwnedEvent(detail::Envelope envelope) noexcept
      : envelope_(std::move(envelope)) {}

  // Its metadata is unused: the bus stamps its own when it publishes it.
  detail::Envelope envelope_;
};

template <Event E>
OwnedEvent OwnedEvent::Of(E event) {
  static_assert(!std::is_same_v<E, OwnedEvent>,
                "OwnedEvent::Of(OwnedEvent): it is one already");
  static_assert(std::is_move_constructible_v<E>,
                "OwnedEvent::Of(event) moves the event in");
  const detail::TypeSlot slot = detail::type_slot<E>();
  if constexpr (detail::kStoredInline<E>) {
    return OwnedEvent(
        detail::Envelope(detail::InPlace<E>{}, std::move(event), slot, {}));
  } else {
    auto owned = std::make_unique<E>(std::move(event));
    detail::Envelope envelope(detail::Adopt<E>{owned.get()}, slot, {});
    (void)owned.release();  // the envelope owns it now
    return OwnedEvent(std::move(envelope));
  }
}

}  // namespace fnbus
