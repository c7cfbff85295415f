// EventBus helpers shared by the bus test files, on top of test_support.hpp.
// Uses Catch2: call these on the test thread only.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "test_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"

namespace fnbus::testing_support {

// Creates a bus, failing the test if `config` is refused.
inline std::unique_ptr<EventBus> make_bus(BusConfig config = {}) {
  auto bus = EventBus::Create(std::move(config));
  REQUIRE(bus.ok());
  return *std::move(bus);
}

// Debian's absl::string_view is not std::string_view: copy the message.
inline std::string message_of(const absl::Status& status) {
  return std::string(status.message());
}

// The accounting identity every bus satisfies once shutdown() returned.
inline void check_final_stats(const BusStats& stats) {
  CHECK(stats.published == stats.dispatched + stats.dead_lettered);
  CHECK(stats.queue_depth == 0);
}

// Runs `publish` (a call returning absl::Status, typically a publish that
// may block) on a thread of its own, so that the test can see whether and
// when it returns. Destroying it joins the thread: release whatever the
// call may block on first.
class PublishOnThread {
 public:
  template <typename F>
  explicit PublishOnThread(F publish)
      : thread_([this, publish = std::move(publish)]() mutable {
          status_ = publish();
          // release: the status written above is visible to returned().
          done_.store(true, std::memory_order_release);
        }) {}

  // Whether the call has returned by now. acquire: pairs with the release
  // store above.
  [[nodiscard]] bool returned() const {
    return done_.load(std::memory_order_acquire);
  }
  // Waits (bounded by wait_until's default) for the call to return.
  [[nodiscard]] bool wait_returned() const {
    return wait_until([&] { return returned(); });
  }
  // Joins the thread and returns the call's status.
  absl::Status join() {
    thread_.join();
    return status_;
  }

 private:
  std::atomic<bool> done_{false};
  absl::Status status_ = absl::UnknownError("not run");
  std::jthread thread_;  // last: starts once the members above exist
};

// A bus with one worker held at a gate by E{0} and its `Capacity`-slot
// queue filled with E{1}..E{Capacity}, for tests of what a full queue
// refuses or blocks. E is an aggregate whose first member is an int id.
// The handler counts the events it ran and sums their ids. The destructor
// opens the gate, so that a failed REQUIRE does not leave the worker held.
template <typename E, std::size_t Capacity>
struct FullBus {
  static constexpr std::size_t kCapacity = Capacity;

  Gate gate;
  std::atomic<int> handled{0};
  std::atomic<int> handled_ids_sum{0};
  std::unique_ptr<EventBus> bus;
  Subscription sub;

  // `config`'s queue_capacity and workers are overridden.
  explicit FullBus(BusConfig config) {
    config.queue_capacity = kCapacity;
    config.workers = 1;
    bus = make_bus(std::move(config));
    sub = bus->subscribe<E>([this](const E& e) {
      if (e.id == 0) gate.pass();
      handled_ids_sum.fetch_add(e.id);
      handled.fetch_add(1);
    });
    try {
      fill();
    } catch (...) {
      gate.open();  // the destructor does not run: release the worker
      throw;
    }
  }
  FullBus(const FullBus&) = delete;
  FullBus& operator=(const FullBus&) = delete;
  ~FullBus() {
    gate.open();
    sub.cancel();
    bus.reset();
  }

  // Opens the gate, drains, and checks that every accepted event ran.
  void finish() {
    gate.open();
    REQUIRE(bus->shutdown().ok());
    CHECK(gate.timeouts.load() == 0);
    const BusStats stats = bus->stats();
    CHECK(static_cast<std::uint64_t>(handled.load()) == stats.published);
    check_final_stats(stats);
  }

 private:
  void fill() {
    REQUIRE(bus->publish(E{0}).ok());
    REQUIRE(gate.wait_for_waiter());  // the worker holds E{0}
    for (int i = 1; i <= static_cast<int>(kCapacity); ++i) {
      REQUIRE(bus->publish(E{i}, {.overflow = OverflowPolicy::kReject}).ok());
    }
    REQUIRE(bus->stats().queue_depth == kCapacity);
  }
};

}  // namespace fnbus::testing_support
