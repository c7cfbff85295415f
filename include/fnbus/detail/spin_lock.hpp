#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

#include "fnbus/detail/config.hpp"

namespace fnbus::detail {

// A test-and-test-and-set lock for short critical sections that two
// threads hit back to back (a strand's few loads and stores, a call
// deadline's set insert): a waiter spins briefly, then yields, instead of
// sleeping on a futex as std::mutex does -- microseconds per contended
// hand-off on a busy machine. Never held around user code.
class SpinLock {
 public:
  void lock() noexcept {
    for (std::uint32_t spins = 0;;) {
      // acquire: pairs with the release store in unlock(): the previous
      // holder's writes happen-before ours.
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
      // relaxed: only a hint of when to try the exchange again.
      while (locked_.load(std::memory_order_relaxed)) {
        if (++spins < 128) {
          cpu_relax();
        } else {
          std::this_thread::yield();
        }
      }
    }
  }
  void unlock() noexcept {
    // release: pairs with the acquire exchange in lock().
    locked_.store(false, std::memory_order_release);
  }

 private:
  // True while held. Written by exchange (lock) and store (unlock) of the
  // holder; read by waiters.
  std::atomic<bool> locked_{false};
};

}  // namespace fnbus::detail
