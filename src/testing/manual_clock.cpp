#include "fnbus/testing/manual_clock.hpp"

#include <iterator>

#include "fnbus/detail/saturating_time.hpp"

namespace fnbus::testing {

TimePoint ManualClock::now() const noexcept {
  // acquire: pairs with the release stores in advance(), so that whatever
  // the test did before advancing is visible to code that sees the new time.
  return now_.load(std::memory_order_acquire);
}

bool ManualClock::sleep_until(TimePoint deadline, std::stop_token stop) {
  std::unique_lock lock(mutex_);
  const auto entry = deadlines_.insert(deadline);
  changed_.notify_all();  // for wait_for_sleepers()
  const bool reached =
      // relaxed: now_ is only written under mutex_, which we hold.
      changed_.wait(lock, stop, [&] {
        return now_.load(std::memory_order_relaxed) >= deadline;
      });
  deadlines_.erase(entry);
  return reached;
}

void ManualClock::advance(Duration step) {
  if (step <= Duration::zero()) return;
  std::lock_guard lock(mutex_);
  // relaxed load: writers hold mutex_. release store: see now().
  const TimePoint now = now_.load(std::memory_order_relaxed);
  // Saturates at TimePoint::max() instead of overflowing (also from an
  // early start, where TimePoint::max() - now itself would overflow).
  const TimePoint later = fnbus::detail::saturating_add(now, step);
  now_.store(later, std::memory_order_release);
  changed_.notify_all();
}

void ManualClock::advance_to(TimePoint when) {
  std::lock_guard lock(mutex_);
  // relaxed load, release store: as in advance().
  if (when <= now_.load(std::memory_order_relaxed)) return;
  now_.store(when, std::memory_order_release);
  changed_.notify_all();
}

std::size_t ManualClock::sleepers_locked() const {
  // relaxed: now_ is only written under mutex_, which the caller holds.
  const TimePoint now = now_.load(std::memory_order_relaxed);
  return static_cast<std::size_t>(
      std::distance(deadlines_.upper_bound(now), deadlines_.end()));
}

std::size_t ManualClock::sleepers() const {
  std::lock_guard lock(mutex_);
  return sleepers_locked();
}

bool ManualClock::wait_for_sleepers(std::size_t count,
                                    std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout,
                           [&] { return sleepers_locked() >= count; });
}

}  // namespace fnbus::testing
