// The handler registry's reclamation bound: a retired list waits only for
// the dispatches that read that very list (hazard pointers), so a long
// dispatch holds back one list -- not every list retired on every bus.
//
// Before the hazard pointers, one dispatch running anywhere in the process
// held back every list retired on every bus: 20,000 subscribe/cancel pairs
// with 1,000 live subscriptions grew the heap by 467 MB.

#include "fnbus/detail/handler_registry.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "../support/test_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/detail/thread_activity.hpp"

namespace {

using fnbus::Context;
using fnbus::EventTrace;
using fnbus::detail::DispatchScope;
using fnbus::detail::ErasedHandler;
using fnbus::detail::HandlerEntry;
using fnbus::detail::HandlerList;
using fnbus::detail::HandlerRegistry;
using fnbus::detail::TypeSlot;
using fnbus::testing_support::wait_until;

constexpr TypeSlot kHeldSlot = 1;
constexpr TypeSlot kOtherSlot = 2;

ErasedHandler noop() {
  return [](const void*, Context&, absl::Status&) {
    return fnbus::Outcome::kDelivered;
  };
}

HandlerEntry* add(HandlerRegistry& registry, TypeSlot slot) {
  return registry.add(slot, "f", 0, noop());
}

void cancel(HandlerRegistry& registry, HandlerEntry* entry) {
  registry.cancel(entry->serial, entry);
}

// Subscribes and cancels `pairs` times on `slot`; returns the most retired
// memory the registry kept after any one operation.
std::size_t churn(HandlerRegistry& registry, TypeSlot slot, int pairs) {
  std::size_t most = 0;
  for (int i = 0; i < pairs; ++i) {
    HandlerEntry* entry = add(registry, slot);
    most = std::max(most, registry.retired_count());
    cancel(registry, entry);
    most = std::max(most, registry.retired_count());
  }
  return most;
}

// A thread inside a dispatch of `registry` that has read the list of
// `slot`, held there (a long handler) until release(). The hold is bounded
// generously (a sanitizer build churns slowly); reaching the bound fails.
class HeldDispatch {
 public:
  HeldDispatch(HandlerRegistry& registry, TypeSlot slot)
      : thread_([this, &registry, slot] {
          fnbus::detail::ThreadRecord& record =
              fnbus::detail::this_thread_record();
          const EventTrace trace{};
          DispatchScope scope(record, &registry, trace);
          // relaxed: published by the release store of holding_ below.
          list_.store(registry.find(slot, scope), std::memory_order_relaxed);
          holding_.store(true, std::memory_order_release);
          if (!wait_until(
                  [&] { return released_.load(std::memory_order_acquire); },
                  std::chrono::minutes(10))) {
            timed_out_.store(true, std::memory_order_relaxed);
          }
        }) {
    REQUIRE(
        wait_until([&] { return holding_.load(std::memory_order_acquire); }));
  }
  ~HeldDispatch() { release(); }
  void release() {
    released_.store(true, std::memory_order_release);
    if (thread_.joinable()) thread_.join();
    CHECK_FALSE(timed_out_.load());
  }
  [[nodiscard]] const HandlerList* list() const {
    // relaxed: stored before holding_ (release/acquire there).
    return list_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<bool> holding_{false};
  std::atomic<bool> released_{false};
  std::atomic<bool> timed_out_{false};
  std::atomic<const HandlerList*> list_{nullptr};
  std::thread thread_;
};

TEST_CASE(
    "handler_registry: a long dispatch on one bus holds back nothing on "
    "another",
    "[handler_registry]") {
  HandlerRegistry busy;
  HandlerRegistry idle;
  for (int i = 0; i < 10; ++i) (void)add(busy, kHeldSlot);
  std::vector<HandlerEntry*> live;
  for (int i = 0; i < 1000; ++i) live.push_back(add(idle, kHeldSlot));
  HeldDispatch held(busy, kHeldSlot);
  // Every subscribe and cancel on the idle bus frees the list it replaced.
  CHECK(churn(idle, kHeldSlot, 2000) == 0);
  for (HandlerEntry* entry : live) cancel(idle, entry);
  CHECK(idle.retired_count() == 0);
}

TEST_CASE(
    "handler_registry: a long dispatch holds back only the list it read and "
    "the entries in it",
    "[handler_registry]") {
  HandlerRegistry registry;
  std::vector<HandlerEntry*> live;
  for (int i = 0; i < 1000; ++i) live.push_back(add(registry, kHeldSlot));
  HeldDispatch held(registry, kHeldSlot);
  REQUIRE(held.list() != nullptr);
  REQUIRE(held.list()->entries.size() == 1000);

  // Another type of the same bus: nothing held.
  CHECK(churn(registry, kOtherSlot, 500) == 0);
  // The held type: the held list stays, every later one is freed.
  CHECK(churn(registry, kHeldSlot, 2000) == 1);

  // Cancelled entries the held list names stay until the dispatch ends
  // (it may be about to call them), and nothing else does.
  for (HandlerEntry* entry : live) cancel(registry, entry);
  CHECK(registry.retired_count() == 1 + live.size());

  held.release();
  // The next write reclaims the rest.
  cancel(registry, add(registry, kOtherSlot));
  CHECK(registry.retired_count() == 0);
}

TEST_CASE(
    "handler_registry: nested dispatches protect each level's list until "
    "that level ends",
    "[handler_registry]") {
  HandlerRegistry registry;
  (void)add(registry, kHeldSlot);
  (void)add(registry, kOtherSlot);
  fnbus::detail::ThreadRecord& record = fnbus::detail::this_thread_record();
  const EventTrace trace{};
  DispatchScope outer(record, &registry, trace);
  const HandlerList* outer_list = registry.find(kHeldSlot, outer);
  {
    DispatchScope inner(record, &registry, trace);
    const HandlerList* inner_list = registry.find(kOtherSlot, inner);
    // Replace both lists: both are read, both are kept.
    cancel(registry, add(registry, kHeldSlot));
    cancel(registry, add(registry, kOtherSlot));
    CHECK(registry.retired_count() == 2);
    CHECK(inner_list->entries.size() == 1);  // still readable
  }
  // The inner level ended: its list goes at the next write.
  cancel(registry, add(registry, kOtherSlot));
  CHECK(registry.retired_count() == 1);
  CHECK(outer_list->entries.size() == 1);
}

}  // namespace
