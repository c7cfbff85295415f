#pragma once

// RAII handle of one subscribed handler.

#include <atomic>
#include <memory>
#include <string_view>
#include <utility>

namespace fnbus {

namespace detail {
class HandlerRegistry;
struct HandlerEntry;
}  // namespace detail

// Keeps a handler subscribed; cancels it when destroyed. Move-only.
//
// Guarantee: for any thread T calling cancel() (or the destructor) from
// outside the handler, when the call returns the handler is not running on
// any thread and will not start again. A handler may cancel its own
// subscription: then the call waits for nobody (other invocations running
// on other threads at that moment finish on their own, and may be
// cancelling it too), no invocation starts afterwards, and the callable is
// destroyed once every invocation has returned.
//
// A Subscription may outlive its bus; cancelling it then does nothing.
// Thread safety: cancel() and active() may be called concurrently on one
// Subscription (e.g. a one-shot handler running on two workers at once
// cancelling itself), and different Subscriptions may be cancelled from any
// threads, including from inside handlers. Moving, assigning, release() and
// destruction need exclusive access, as for any std object. Two handlers
// must not cancel each other's subscriptions while both run: each would
// wait for the other (this fails a precondition check).
class Subscription {
 public:
  Subscription() noexcept = default;
  Subscription(Subscription&& other) noexcept
      : registry_(std::move(other.registry_)),
        // relaxed: moves need exclusive access (see the class comment).
        entry_(other.entry_.exchange(nullptr, std::memory_order_relaxed)),
        id_(std::exchange(other.id_, nullptr)) {}
  Subscription& operator=(Subscription&& other) noexcept {
    if (this != &other) {
      cancel();
      registry_ = std::move(other.registry_);
      // relaxed: as in the move constructor.
      entry_.store(other.entry_.exchange(nullptr, std::memory_order_relaxed),
                   std::memory_order_relaxed);
      id_ = std::exchange(other.id_, nullptr);
    }
    return *this;
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription() {
    // relaxed: destruction needs exclusive access.
    if (entry_.load(std::memory_order_relaxed) != nullptr) cancel();
  }

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
               detail::HandlerEntry* entry) noexcept
      : registry_(std::move(registry)), entry_(entry), id_(entry) {}

  std::shared_ptr<detail::HandlerRegistry> registry_;
  // The subscribed entry until cancelled. Exchanged to null by the one
  // cancel() that unsubscribes it; others only wait.
  std::atomic<detail::HandlerEntry*> entry_{nullptr};
  // The entry's address, kept after cancel() for waiting (never
  // dereferenced).
  const void* id_ = nullptr;
};

}  // namespace fnbus
