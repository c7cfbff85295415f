#include "fnbus/clock.hpp"

namespace fnbus {

bool SteadyClock::sleep_until(TimePoint deadline, std::stop_token stop) {
  std::unique_lock lock(mutex_);
  // Nothing but the deadline or `stop` ends the wait: the predicate is
  // never true, and wait_until wakes on a stop request by itself.
  (void)wake_.wait_until(lock, stop, deadline, [] { return false; });
  return !stop.stop_requested();
}

SteadyClock& SteadyClock::instance() noexcept {
  // Leaked: usable by threads that outlive static destruction.
  static SteadyClock* const clock = new SteadyClock();
  return *clock;
}

}  // namespace fnbus
