#pragma once

// The queued form of a published event: its type and the event itself,
// stored inline when small enough so that publishing does not allocate.

#include <cstddef>
#include <cstdint>
#include <new>
#include <string_view>
#include <type_traits>
#include <utility>

#include "fnbus/detail/settle_state.hpp"
#include "fnbus/detail/type_slot.hpp"
#include "fnbus/event.hpp"

namespace fnbus::detail {

inline constexpr std::size_t kInlineEventSize = 48;
inline constexpr std::size_t kInlineEventAlign = 8;

// Events stored in the queue slot itself.
template <typename E>
inline constexpr bool kStoredInline =
    sizeof(E) <= kInlineEventSize &&
    alignof(E) <= kInlineEventAlign&& std::is_nothrow_move_constructible_v<E>;

// How to move, destroy, read and copy the event of one type, type-erased.
struct EventOps {
  std::string_view type_name;
  // Move-constructs the stored event into `to` and destroys it in `from`.
  void (*relocate)(void* to, void* from) noexcept;
  void (*destroy)(void* storage) noexcept;
  const void* (*get)(const void* storage) noexcept;
  // Stores a copy of `event` (an E, as get() returns it) in the storage
  // `to`; throws what E's copy constructor (or new) throws, storing
  // nothing. Null when E is not copy-constructible.
  void (*clone)(void* to, const void* event);
};

// Ops::clone if E is copyable (see kCopyableEvent), else null. Only then
// is Ops::clone instantiated: if the compiler stops in it, E's copy
// constructor is declared but does not compile -- specialise
// fnbus::kCopyableEvent<E> to false.
template <typename Ops, typename E>
constexpr void (*clone_op())(void*, const void*) {
  if constexpr (kCopyableEvent<E>) {
    return &Ops::clone;
  } else {
    return nullptr;
  }
}

template <typename E>
struct InlineOps {
  static void relocate(void* to, void* from) noexcept {
    E* source = std::launder(static_cast<E*>(from));
    ::new (to) E(std::move(*source));
    source->~E();
  }
  static void destroy(void* storage) noexcept {
    std::launder(static_cast<E*>(storage))->~E();
  }
  static const void* get(const void* storage) noexcept {
    return std::launder(static_cast<const E*>(storage));
  }
  static void clone(void* to, const void* event) {
    ::new (to) E(*static_cast<const E*>(event));
  }
  static constexpr EventOps kOps{event_type_name<E>(), &relocate, &destroy,
                                 &get, clone_op<InlineOps<E>, E>()};
};

template <typename E>
struct HeapOps {
  static void relocate(void* to, void* from) noexcept {
    ::new (to) E*(*static_cast<E**>(from));
  }
  static void destroy(void* storage) noexcept {
    delete *static_cast<E**>(storage);
  }
  static const void* get(const void* storage) noexcept {
    return *static_cast<E* const*>(storage);
  }
  static void clone(void* to, const void* event) {
    ::new (to) E*(new E(*static_cast<const E*>(event)));
  }
  static constexpr EventOps kOps{event_type_name<E>(), &relocate, &destroy,
                                 &get, clone_op<HeapOps<E>, E>()};
};

// The ops of E's envelopes.
template <typename E>
[[nodiscard]] constexpr const EventOps* event_ops() noexcept {
  if constexpr (kStoredInline<E>) {
    return &InlineOps<E>::kOps;
  } else {
    return &HeapOps<E>::kOps;
  }
}

template <typename E>
struct InPlace {};
// A heap-allocated event whose ownership moves into the envelope.
template <typename E>
struct Adopt {
  E* event;
};
// A copy of an event known by its ops (EventOps::clone).
struct CopyOf {
  const EventOps* ops;
  const void* event;
};

// What travels with a queued event besides the event itself. The event's
// own id is assigned when it is dispatched; its trace context travels only
// if it has one (inherited, explicit or ambient) -- a root event's is "a
// new correlation whose id is the event's own", known at dispatch.
struct EnvelopeMeta {
  TraceContext context;  // meaningful only if has_context
  bool has_context = false;
  bool timed = false;  // its latency is recorded
  // The bus's TickClock::now() when accepted, if timed.
  std::int64_t accepted_ticks = 0;
  // PublishOptions::on_settled's record, lent: the envelope made with this
  // meta takes over the publisher's reference (see EventBus::publish_event).
  SettleState* settle = nullptr;
};

// Owns one event of any type. Empty when default-constructed or moved from.
class Envelope {
 public:
  Envelope() noexcept = default;

  // `event` is an rvalue reference, not a forwarding one: E comes from
  // InPlace<E> alone.
  template <typename E>
  requires kStoredInline<E> Envelope(InPlace<E>,
                                     std::type_identity_t<E>&& event,
                                     TypeSlot slot, const EnvelopeMeta& meta)
  noexcept : ops_(&InlineOps<E>::kOps), slot_(slot) {
    ::new (static_cast<void*>(storage_)) E(std::move(event));
    set_meta(meta);
  }

  template <typename E>
  Envelope(Adopt<E> adopted, TypeSlot slot, const EnvelopeMeta& meta) noexcept
      : ops_(&HeapOps<E>::kOps), slot_(slot) {
    ::new (static_cast<void*>(storage_)) E*(adopted.event);
    set_meta(meta);
  }

  // A copy of `copy.event`; throws what EventOps::clone throws.
  // Precondition: copy.ops->clone is set.
  Envelope(CopyOf copy, TypeSlot slot, const EnvelopeMeta& meta) : slot_(slot) {
    copy.ops->clone(storage_, copy.event);
    ops_ = copy.ops;  // only once the copy exists
    set_meta(meta);
  }

  // `body`'s event with new metadata: a re-published OwnedEvent (see
  // kQueuedInPlace). `slot` is ignored: the event keeps its own.
  Envelope(InPlace<Envelope>, Envelope&& body, TypeSlot /*slot*/,
           const EnvelopeMeta& meta) noexcept {
    take(body);
    set_meta(meta);
  }

  Envelope(Envelope&& other) noexcept { take(other); }
  Envelope& operator=(Envelope&& other) noexcept {
    if (this != &other) {
      reset();
      take(other);
    }
    return *this;
  }
  ~Envelope() { reset(); }

  [[nodiscard]] bool empty() const noexcept { return ops_ == nullptr; }
  [[nodiscard]] TypeSlot slot() const noexcept { return slot_; }
  [[nodiscard]] std::string_view type_name() const noexcept {
    return ops_->type_name;
  }
  [[nodiscard]] const void* event() const noexcept {
    return ops_->get(storage_);
  }
  [[nodiscard]] bool timed() const noexcept { return timed_; }
  [[nodiscard]] std::int64_t accepted_ticks() const noexcept {
    return accepted_ticks_;
  }
  // The trace context it was published with, or {} for a new correlation.
  [[nodiscard]] TraceContext context() const noexcept {
    return has_context_ ? TraceContext{correlation_id_, parent_id_}
                        : TraceContext{};
  }
  [[nodiscard]] EventRef ref() const noexcept {
    return EventRef(slot_, type_name(), event(), ops_);
  }

  // The record it settles through (PublishOptions::on_settled), or null.
  [[nodiscard]] SettleState* settle() const noexcept {
    return settles_ ? settle_ : nullptr;
  }

  // Destroys the event; the last owner of its settle record settles it.
  void reset() noexcept {
    if (ops_ != nullptr) ops_->destroy(storage_);
    ops_ = nullptr;
    if (settles_) [[unlikely]] {
      settles_ = false;
      settle_->release();
    }
  }

 private:
  void take(Envelope& other) noexcept {
    if (other.ops_ == nullptr) return;
    other.ops_->relocate(storage_, other.storage_);
    ops_ = std::exchange(other.ops_, nullptr);
    slot_ = other.slot_;
    accepted_ticks_ = other.accepted_ticks_;
    timed_ = other.timed_;
    has_context_ = other.has_context_;
    if (has_context_) {
      correlation_id_ = other.correlation_id_;
      parent_id_ = other.parent_id_;
    }
    settles_ = std::exchange(other.settles_, false);
    if (settles_) [[unlikely]]
      settle_ = other.settle_;
  }
  void set_meta(const EnvelopeMeta& meta) noexcept {
    accepted_ticks_ = meta.accepted_ticks;
    timed_ = meta.timed;
    has_context_ = meta.has_context;
    if (has_context_) {
      correlation_id_ = meta.context.correlation_id;
      parent_id_ = meta.context.parent_id;
    }
    settles_ = meta.settle != nullptr;
    if (settles_) [[unlikely]]
      settle_ = meta.settle;
  }

  // Layout: in a queue slot the envelope follows the 8-byte turn counter,
  // so everything but context_ and the last 16 bytes of storage_ shares
  // the slot's first cache line with the turn. A root event of up to 32
  // bytes thus moves one cache line from publisher to worker. The context
  // ids have no initialisers, so that they are written (and read) only
  // when has_context_: a root event never touches the second line.
  const EventOps* ops_ = nullptr;
  TypeSlot slot_ = 0;
  bool has_context_ = false;
  bool timed_ = false;
  bool settles_ = false;  // whether settle_ is set (and owned)
  std::int64_t accepted_ticks_ = 0;
  alignas(kInlineEventAlign) std::byte storage_[kInlineEventSize];
  std::uint64_t correlation_id_;  // only if has_context_
  std::uint64_t parent_id_;       // only if has_context_
  SettleState* settle_;           // only if settles_: one reference
};

// Whether publish moves an E into its queue slot with InPlace<E> (no
// allocation): small events, and the Envelope of a re-published
// OwnedEvent (which owns its event already).
template <typename E>
inline constexpr bool kQueuedInPlace =
    kStoredInline<E> || std::is_same_v<E, Envelope>;

// The slot and name a published E is queued and counted under; an
// Envelope (a re-published OwnedEvent) has its event's.
template <typename E>
[[nodiscard]] TypeSlot published_slot(const E& event) noexcept {
  if constexpr (std::is_same_v<E, Envelope>) {
    return event.slot();
  } else {
    return type_slot<E>();
  }
}
template <typename E>
[[nodiscard]] std::string_view published_name(const E& event) noexcept {
  if constexpr (std::is_same_v<E, Envelope>) {
    return event.type_name();
  } else {
    return event_type_name<E>();
  }
}

static_assert(alignof(Envelope) == 8 && sizeof(Envelope) == 96,
              "a queue slot (8-byte turn + envelope) must stay 128 bytes");

}  // namespace fnbus::detail
