#pragma once

// The queued form of a published event: its type and the event itself,
// stored inline when small enough so that publishing does not allocate.

#include <cstddef>
#include <cstdint>
#include <new>
#include <string_view>
#include <type_traits>
#include <utility>

#include "fnbus/detail/type_slot.hpp"
#include "fnbus/event.hpp"

namespace fnbus::detail {

inline constexpr std::size_t kInlineEventSize = 48;
inline constexpr std::size_t kInlineEventAlign = 16;

// Events stored in the queue slot itself.
template <typename E>
inline constexpr bool kStoredInline =
    sizeof(E) <= kInlineEventSize &&
    alignof(E) <= kInlineEventAlign&& std::is_nothrow_move_constructible_v<E>;

// How to move, destroy and read the event of one type, type-erased.
struct EventOps {
  std::string_view type_name;
  // Move-constructs the stored event into `to` and destroys it in `from`.
  void (*relocate)(void* to, void* from) noexcept;
  void (*destroy)(void* storage) noexcept;
  const void* (*get)(const void* storage) noexcept;
};

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
  static constexpr EventOps kOps{event_type_name<E>(), &relocate, &destroy,
                                 &get};
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
  static constexpr EventOps kOps{event_type_name<E>(), &relocate, &destroy,
                                 &get};
};

template <typename E>
struct InPlace {};
// A heap-allocated event whose ownership moves into the envelope.
template <typename E>
struct Adopt {
  E* event;
};

// What travels with a queued event besides the event itself.
struct EnvelopeMeta {
  EventTrace trace;
  // EventBus::now_ticks() when accepted; 0 if latency is not recorded.
  std::int64_t accepted_ticks = 0;
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
  noexcept : ops_(&InlineOps<E>::kOps), slot_(slot), meta_(meta) {
    ::new (static_cast<void*>(storage_)) E(std::move(event));
  }

  template <typename E>
  Envelope(Adopt<E> adopted, TypeSlot slot, const EnvelopeMeta& meta) noexcept
      : ops_(&HeapOps<E>::kOps), slot_(slot), meta_(meta) {
    ::new (static_cast<void*>(storage_)) E*(adopted.event);
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
  [[nodiscard]] const EnvelopeMeta& meta() const noexcept { return meta_; }
  [[nodiscard]] EventRef ref() const noexcept {
    return EventRef(slot_, type_name(), event());
  }

  void reset() noexcept {
    if (ops_ != nullptr) ops_->destroy(storage_);
    ops_ = nullptr;
  }

 private:
  void take(Envelope& other) noexcept {
    if (other.ops_ == nullptr) return;
    other.ops_->relocate(storage_, other.storage_);
    ops_ = std::exchange(other.ops_, nullptr);
    slot_ = other.slot_;
    meta_ = other.meta_;
  }

  const EventOps* ops_ = nullptr;
  TypeSlot slot_ = 0;
  EnvelopeMeta meta_;
  alignas(kInlineEventAlign) std::byte storage_[kInlineEventSize];
};

// With the queue's turn counter, a slot stays within two cache lines.
static_assert(sizeof(Envelope) <= 112, "a queue slot must stay 128 bytes");

}  // namespace fnbus::detail
