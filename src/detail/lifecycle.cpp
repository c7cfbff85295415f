#include "fnbus/detail/lifecycle.hpp"

#include "fnbus/detail/saturating_time.hpp"

namespace fnbus::detail {

bool Lifecycle::drain_expired() noexcept {
  // relaxed: once set it stays set; a thread that reads it late reads the
  // clock instead and comes to the same answer.
  if (drain_expired_.load(std::memory_order_relaxed)) return true;
  // relaxed: stored before the state that makes anyone ask (begin_stop());
  // a stale TimePoint::max() only delays the expiry to the next check.
  const TimePoint deadline(
      Duration(drain_deadline_.load(std::memory_order_relaxed)));
  if (clock_.now() < deadline) return false;
  // relaxed: as above.
  drain_expired_.store(true, std::memory_order_relaxed);
  return true;
}

Fate Lifecycle::fate_when_stopping(int state) noexcept {
  // relaxed: written before the state left kRunning (begin_stop()).
  if (state == kCancelling || cancel_at_stop_.load(std::memory_order_relaxed)) {
    return Fate::kCancelledAtShutdown;
  }
  return drain_expired() ? Fate::kDrainTimeout : Fate::kDispatch;
}

void Lifecycle::begin_stop(bool cancel, Duration drain_timeout) noexcept {
  // relaxed, both: read only once the state below has left kRunning, and
  // made visible to every thread by the heavy barrier the caller runs next
  // (a stale view only delays a drain's expiry by one event).
  cancel_at_stop_.store(cancel, std::memory_order_relaxed);
  drain_deadline_.store(
      saturating_add(clock_.now(), drain_timeout).time_since_epoch().count(),
      std::memory_order_relaxed);
  // Retract (the writer's half of the handshake in thread_activity.hpp).
  state_.store(cancel ? kCancelling : kDraining, kAnnounceOrder);
}

void Lifecycle::finish_stop() noexcept {
  // Retract, as in begin_stop().
  state_.store(kStopped, kAnnounceOrder);
}

}  // namespace fnbus::detail
