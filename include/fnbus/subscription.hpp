#pragma once

// RAII handle of one subscribed handler.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

namespace fnbus {

namespace detail {
class HandlerRegistry;
struct HandlerEntry;
}  // namespace detail

// Keeps a handler subscribed; cancels it when destroyed. Move-only.
//
// Guarantee: for any thread T calling cancel() (or the destructor) from
// outside the handler, when the call returns the handler is not running on
// any thread and will not start again -- also when other threads cancel
// the same Subscription at the same time (each call that returns gives
// the guarantee, not only the first). A handler may cancel its own
// subscription: then the call waits for nobody (other invocations running
// on other threads at that moment finish on their own, and may be
// cancelling it too), no invocation starts afterwards, and the callable is
// destroyed by the thread whose invocation returns last, right after it
// returns.
//
// A Subscription may outlive its bus; cancelling it then does nothing.
// Thread safety: cancel() and active() may be called concurrently on one
// Subscription (e.g. a one-shot handler running on two workers at once
// cancelling itself). The destructor and a move-assignment into the
// Subscription may race a cancel() made by the handler itself (a handler
// cancelling its own subscription while its owner drops or replaces it):
// they cancel first, which waits for that handler to return. Different
// Subscriptions may be cancelled from any threads, including from inside
// handlers. Otherwise, moving, assigning, release() and destruction need
// exclusive access, as for any std object. Two handlers must not cancel
// each other's subscriptions while both run: each would wait for the
// other (this fails a precondition check).
class Subscription {
 public:
  Subscription() noexcept = default;
  Subscription(Subscription&& other) noexcept
      : registry_(std::move(other.registry_)),
        // relaxed: moves need exclusive access (see the class comment).
        entry_(other.entry_.exchange(nullptr, std::memory_order_relaxed)),
        id_(std::exchange(other.id_, nullptr)),
        serial_(std::exchange(other.serial_, 0)),
        more_(std::move(other.more_)) {}
  Subscription& operator=(Subscription&& other) noexcept {
    if (this != &other) {
      // Cancels first: a call of the old handler cancelling itself through
      // this object may still read it until cancel() has waited for it.
      cancel();
      registry_ = std::move(other.registry_);
      // relaxed: as in the move constructor.
      entry_.store(other.entry_.exchange(nullptr, std::memory_order_relaxed),
                   std::memory_order_relaxed);
      id_ = std::exchange(other.id_, nullptr);
      serial_ = std::exchange(other.serial_, 0);
      more_ = std::move(other.more_);
    }
    return *this;
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  // Cancels (see cancel()), also when a cancel() by the handler itself got
  // there first: that call may still be reading this object.
  ~Subscription() { cancel(); }

  // Unsubscribes the handler (see the class guarantee). Blocks while the
  // handler runs on another thread. Idempotent.
  void cancel() noexcept;

  // Gives up the handle without unsubscribing: the handler then stays
  // until the bus is destroyed.
  void release() noexcept {
    // relaxed: release() needs exclusive access.
    entry_.store(nullptr, std::memory_order_relaxed);
    registry_.reset();
    id_ = nullptr;
    serial_ = 0;
    more_.clear();
  }

  // True until cancel() or release() (or a move from this object).
  [[nodiscard]] bool active() const noexcept {
    // acquire: pairs with the exchange in cancel().
    return entry_.load(std::memory_order_acquire) != nullptr;
  }
  explicit operator bool() const noexcept { return active(); }

 private:
  friend class EventBus;
  Subscription(std::shared_ptr<detail::HandlerRegistry> registry,
               detail::HandlerEntry* entry, std::uint64_t serial) noexcept
      : registry_(std::move(registry)),
        entry_(entry),
        id_(entry),
        serial_(serial) {}
  // Takes over `other` (a subscription of the same bus): cancelling this
  // one cancels both. May throw bad_alloc (then `other` is unchanged).
  void absorb(Subscription&& other);

  // Another handler cancelled together with this one (subscribe<E1, E2>).
  struct Member {
    std::uint64_t serial;
    const void* id;
  };

  std::shared_ptr<detail::HandlerRegistry> registry_;
  // The subscribed entry until a cancel() begins (then null, for active()).
  // Never dereferenced here: the registry finds the entry by serial_.
  std::atomic<detail::HandlerEntry*> entry_{nullptr};
  // The entry's address, kept after cancel() for waiting (never
  // dereferenced).
  const void* id_ = nullptr;
  // The registry's number for this subscription (never reused, unlike an
  // address); 0 when empty.
  std::uint64_t serial_ = 0;
  // The other handlers of a multi-type subscription; read by cancel().
  std::vector<Member> more_;
};

}  // namespace fnbus
