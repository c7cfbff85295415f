#pragma once

// RAII handle of one subscribed handler.

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
// Guarantee: for any thread T calling cancel() (or the destructor), when the
// call returns the handler is not running on any thread other than T and
// will not start again. T itself may be inside the handler (a handler may
// cancel its own subscription): then the call does not wait for it, and the
// handler's callable is destroyed after it returns.
//
// A Subscription may outlive its bus; cancelling it then does nothing.
// Thread safety: a Subscription object is not itself thread-safe (like any
// std object), but different Subscriptions of one bus may be cancelled
// concurrently from any threads, including from inside handlers.
class Subscription {
 public:
  Subscription() noexcept = default;
  Subscription(Subscription&& other) noexcept
      : registry_(std::move(other.registry_)),
        entry_(std::exchange(other.entry_, nullptr)) {}
  Subscription& operator=(Subscription&& other) noexcept {
    if (this != &other) {
      cancel();
      registry_ = std::move(other.registry_);
      entry_ = std::exchange(other.entry_, nullptr);
    }
    return *this;
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription() { cancel(); }

  // Unsubscribes the handler (see the class guarantee). Blocks while the
  // handler runs on another thread. Idempotent.
  void cancel() noexcept;

  // Gives up the handle without unsubscribing: the handler then stays
  // until the bus is destroyed.
  void release() noexcept {
    registry_.reset();
    entry_ = nullptr;
  }

  // True until cancel() or release() (or a move from this object).
  [[nodiscard]] bool active() const noexcept { return entry_ != nullptr; }
  explicit operator bool() const noexcept { return active(); }

 private:
  friend class EventBus;
  Subscription(std::shared_ptr<detail::HandlerRegistry> registry,
               detail::HandlerEntry* entry) noexcept
      : registry_(std::move(registry)), entry_(entry) {}

  std::shared_ptr<detail::HandlerRegistry> registry_;
  detail::HandlerEntry* entry_ = nullptr;
};

}  // namespace fnbus
