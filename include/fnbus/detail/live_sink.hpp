#pragma once

// A sink (a std::function the bus calls for failures, dead letters or
// unhandled events) that can be replaced while the bus runs.

#include <atomic>
#include <memory>
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
// visible to the calls that see the new sink.
template <typename Sink>
class LiveSink {
 public:
  explicit LiveSink(Sink initial)
      : current_(std::make_shared<const Sink>(std::move(initial))) {}

  template <typename... Args>
  void call(const Args&... args) const noexcept {
    // acquire: pairs with the release store in replace().
    const std::shared_ptr<const Sink> sink =
        current_.load(std::memory_order_acquire);
    if (sink) call_guarded(*sink, args...);
  }

  // An empty `sink` removes it. Throws std::bad_alloc.
  void replace(Sink sink) {
    // release: pairs with the acquire load in call().
    current_.store(std::make_shared<const Sink>(std::move(sink)),
                   std::memory_order_release);
  }

 private:
  std::atomic<std::shared_ptr<const Sink>> current_;
};

}  // namespace fnbus::detail
