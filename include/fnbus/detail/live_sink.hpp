#pragma once

// A sink (a std::function the bus calls for failures, dead letters or
// unhandled events) that can be replaced while the bus runs.

#include <memory>
#include <mutex>
#include <utility>

namespace fnbus::detail {

// Calls `sink` if it is set. A sink that throws must not take a worker
// down, and there is nowhere left to report it: the exception is dropped.
template <typename Sink, typename... Args>
void call_guarded(const Sink& sink, const Args&... args) noexcept {
  if (!sink) return;
  try {
    sink(args...);
  } catch (...) {
  }
}

// Holds the current `Sink` (a std::function). A call sees a fully built
// sink; one replaced while a call runs lives until that call returns.
// Thread safety: call() and replace() from any thread, concurrently.
// Memory ordering: what the replacing thread did before replace() is
// visible to the calls that see the new sink (the mutex orders them).
// A mutex, not std::atomic<std::shared_ptr>: GCC 12's implementation of
// that guards the pointer with a lock bit that ThreadSanitizer does not
// see, so it reports a race between replace() and call() that is not
// one. Sinks run on failure paths only, where an uncontended lock held
// for a reference-count increment costs nothing that matters; the sink
// itself runs outside the lock.
template <typename Sink>
class LiveSink {
 public:
  explicit LiveSink(Sink initial)
      : current_(std::make_shared<const Sink>(std::move(initial))) {}

  template <typename... Args>
  void call(const Args&... args) const noexcept {
    const std::shared_ptr<const Sink> sink = current();
    if (sink) call_guarded(*sink, args...);
  }

  // An empty `sink` removes it. Throws std::bad_alloc.
  void replace(Sink sink) {
    std::shared_ptr<const Sink> next =
        std::make_shared<const Sink>(std::move(sink));
    {
      std::lock_guard lock(mutex_);
      current_.swap(next);
    }
    // `next` (the old sink) is released here, outside the lock.
  }

 private:
  std::shared_ptr<const Sink> current() const noexcept {
    std::lock_guard lock(mutex_);
    return current_;
  }

  mutable std::mutex mutex_;
  std::shared_ptr<const Sink> current_;  // guarded by mutex_
};

}  // namespace fnbus::detail
