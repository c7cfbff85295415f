// Checks the "never allocates" promise of the hot paths: once warm,
// publish() of a small event, its dispatch on a worker, and trigger() make
// no call to operator new on any thread.
//
// This file replaces the global operator new/delete of the whole test
// binary with versions that forward to malloc/aligned_alloc/free and can
// count calls. Under AddressSanitizer or ThreadSanitizer the replacement is
// left out (the sanitizer runtime provides its own operator new, and ours
// would hide its checks), and the test reports itself skipped.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <thread>
#include <utility>

#include "support/bus_support.hpp"
#include <catch2/catch.hpp>
#include <execinfo.h>

#include "fnbus/event_bus.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ALLOC_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ALLOC_TEST_SANITIZED 1
#endif
#endif

namespace {

#if defined(ALLOC_TEST_SANITIZED)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// Counting state, shared by every thread. seq_cst throughout: this is test
// scaffolding, and it keeps "enabled before the window's first publish"
// simple to reason about on the worker side.
std::atomic<bool> g_counting{false};
std::atomic<std::uint64_t> g_allocations{0};

// Where the first counted allocation came from, for the failure message.
constexpr int kMaxFrames = 48;
void* g_first_frames[kMaxFrames];
std::atomic<int> g_first_depth{0};
std::atomic<std::size_t> g_first_size{0};
std::atomic<bool> g_first_taken{false};

[[maybe_unused]] void note_allocation(std::size_t size) noexcept {
  if (!g_counting.load()) return;
  g_allocations.fetch_add(1);
  if (!g_first_taken.exchange(true)) {
    g_first_size.store(size);
    // backtrace() uses malloc (not operator new) if it allocates at all,
    // and it was called once before counting began.
    g_first_depth.store(backtrace(g_first_frames, kMaxFrames));
  }
}

[[maybe_unused]] void* allocate_or_null(std::size_t size) noexcept {
  return std::malloc(size == 0 ? 1 : size);
}

[[maybe_unused]] void* allocate_aligned_or_null(
    std::size_t size, std::align_val_t alignment) noexcept {
  std::size_t align = static_cast<std::size_t>(alignment);
  if (align < sizeof(void*)) align = sizeof(void*);
  // aligned_alloc wants a size that is a multiple of the alignment.
  const std::size_t rounded =
      size == 0 ? align : (size + align - 1) & ~(align - 1);
  return std::aligned_alloc(align, rounded);
}

[[maybe_unused]] void* allocate(std::size_t size) {
  note_allocation(size);
  void* p = allocate_or_null(size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

[[maybe_unused]] void* allocate_aligned(std::size_t size,
                                        std::align_val_t alignment) {
  note_allocation(size);
  void* p = allocate_aligned_or_null(size, alignment);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

#if !defined(ALLOC_TEST_SANITIZED)

void* operator new(std::size_t size) { return allocate(size); }
void* operator new[](std::size_t size) { return allocate(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  note_allocation(size);
  return allocate_or_null(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  note_allocation(size);
  return allocate_or_null(size);
}
void* operator new(std::size_t size, std::align_val_t alignment) {
  return allocate_aligned(size, alignment);
}
void* operator new[](std::size_t size, std::align_val_t alignment) {
  return allocate_aligned(size, alignment);
}
void* operator new(std::size_t size, std::align_val_t alignment,
                   const std::nothrow_t&) noexcept {
  note_allocation(size);
  return allocate_aligned_or_null(size, alignment);
}
void* operator new[](std::size_t size, std::align_val_t alignment,
                     const std::nothrow_t&) noexcept {
  note_allocation(size);
  return allocate_aligned_or_null(size, alignment);
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t,
                     const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t,
                       const std::nothrow_t&) noexcept {
  std::free(p);
}

#endif  // !ALLOC_TEST_SANITIZED

namespace alloc_test_ns {

// 12 bytes: stored in the queue slot.
struct Tick {
  int a = 0;
  int b = 0;
  int c = 0;
};

}  // namespace alloc_test_ns

namespace {

using alloc_test_ns::Tick;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::wait_until;

// Bounds waits for the worker; reaching it means a stuck bus, not a slow
// machine.
constexpr auto kWaitBound = std::chrono::seconds(30);

struct PublishOutcome {
  std::uint64_t refused = 0;  // publish() returned non-OK
  bool timed_out = false;     // the worker did not catch up
};

// Publishes `count` Ticks in batches that fit the queue (so that kReject
// never refuses one), waiting after each batch until the worker has
// dispatched everything published so far.
PublishOutcome publish_and_wait(fnbus::EventBus& bus, std::uint64_t count) {
  constexpr std::uint64_t kBatch = 256;  // < queue_capacity
  PublishOutcome outcome;
  for (std::uint64_t done = 0; done < count;) {
    const std::uint64_t batch = std::min(kBatch, count - done);
    for (std::uint64_t i = 0; i < batch; ++i) {
      const int n = static_cast<int>(done + i);
      if (!bus.publish(Tick{n, 1, 2}).ok()) ++outcome.refused;
    }
    done += batch;
    const std::uint64_t target = bus.stats().published;
    if (!wait_until([&] { return bus.stats().dispatched >= target; },
                    kWaitBound)) {
      outcome.timed_out = true;
      return outcome;
    }
  }
  return outcome;
}

// Starts counting operator new calls on every thread.
void start_counting() {
  g_allocations.store(0);
  g_first_depth.store(0);
  g_first_size.store(0);
  g_first_taken.store(false);
  g_counting.store(true);
}

// Stops counting and returns the number of calls since start_counting().
std::uint64_t stop_counting() {
  g_counting.store(false);
  return g_allocations.load();
}

void print_first_allocation() {
  const int depth = g_first_depth.load();
  if (depth <= 0) return;
  std::fprintf(stderr,
               "first counted operator new (%zu bytes) was called from:\n",
               g_first_size.load());
  backtrace_symbols_fd(g_first_frames, depth, 2);
  std::fprintf(
      stderr,
      "(resolve with: addr2line -f -C -e <test binary> <offset in +0x...>)\n");
}

}  // namespace

TEST_CASE(
    "alloc: publish, dispatch and trigger of a small event do not allocate",
    "[alloc]") {
  if constexpr (kSanitized) {
    // The sanitizer runtime owns operator new; see the file comment.
    SUCCEED("skipped: built with a sanitizer");
    return;
  }

  fnbus::BusConfig config;
  config.queue_capacity = 1024;
  config.workers = 1;
  // Park at once when idle, so that the window exercises the wake path too.
  config.idle_spin = std::chrono::nanoseconds(0);
  const auto owned_bus = make_bus(std::move(config));
  fnbus::EventBus& bus = *owned_bus;

  std::atomic<std::uint64_t> first_calls{0};
  std::atomic<std::uint64_t> sum{0};
  std::atomic<std::uint64_t> second_calls{0};
  std::atomic<std::uint64_t> wrong_context{0};
  fnbus::Subscription first = bus.subscribe<Tick>(
      [&](const Tick& tick) {
        first_calls.fetch_add(1, std::memory_order_relaxed);
        sum.fetch_add(static_cast<std::uint64_t>(tick.a + tick.b + tick.c),
                      std::memory_order_relaxed);
      },
      {.name = "first"});
  fnbus::Subscription second = bus.subscribe<Tick>(
      [&](const Tick&, fnbus::Context& context) {
        if (context.function_name() != "second" ||
            context.event_type() != fnbus::event_type_name<Tick>()) {
          wrong_context.fetch_add(1, std::memory_order_relaxed);
        }
        second_calls.fetch_add(1, std::memory_order_relaxed);
      },
      {.name = "second"});

  // Warm up: thread records, lazily built statics, the park/wake path.
  void* frames[4];
  REQUIRE(backtrace(frames, 4) > 0);  // loads what backtrace() needs
  PublishOutcome warm = publish_and_wait(bus, 1000);
  REQUIRE(warm.refused == 0);
  REQUIRE_FALSE(warm.timed_out);
  for (int i = 0; i < 10; ++i) bus.trigger(Tick{i, 0, 0});
  REQUIRE(wait_until([&] { return bus.pool_stats().parked == 1; }, kWaitBound));
  warm = publish_and_wait(bus, 1);
  REQUIRE(warm.refused == 0);
  REQUIRE_FALSE(warm.timed_out);
  const std::uint64_t calls_before = first_calls.load();

  // The window: no Catch2 assertion inside it (they allocate).
  constexpr std::uint64_t kPublishes = 10'000;
  constexpr std::uint64_t kTriggers = 10'000;
  start_counting();
  const PublishOutcome outcome = publish_and_wait(bus, kPublishes);
  for (std::uint64_t i = 0; i < kTriggers; ++i) {
    bus.trigger(Tick{static_cast<int>(i), 1, 2});
  }
  const std::uint64_t allocations = stop_counting();

  CHECK(outcome.refused == 0);
  CHECK_FALSE(outcome.timed_out);
  CHECK(first_calls.load() - calls_before == kPublishes + kTriggers);
  CHECK(second_calls.load() == first_calls.load());
  CHECK(wrong_context.load() == 0);
  CHECK(bus.stats().failed == 0);
  CHECK(bus.stats().unhandled == 0);
  if (allocations != 0) print_first_allocation();
  INFO(
      "operator new calls during 10'000 publishes + dispatches and "
      "10'000 triggers (first of "
      << g_first_size.load() << " bytes; backtrace on stderr)");
  CHECK(allocations == 0);
  REQUIRE(sum.load() > 0);
}

TEST_CASE("alloc: the allocation counter sees allocations on other threads",
          "[alloc]") {
  if constexpr (kSanitized) {
    SUCCEED("skipped: built with a sanitizer");
    return;
  }
  // Guards the test above against a counter that silently counts nothing.
  struct alignas(64) Aligned {
    char c = 0;
  };
  // Stored into an atomic so that the compiler cannot elide the pairs of
  // new and delete.
  std::atomic<void*> sink{nullptr};
  std::thread warm([] {});  // std::thread's own state, before counting
  warm.join();
  start_counting();
  std::thread([&sink] {
    int* single = new int(1);
    sink.store(single);
    delete static_cast<int*>(sink.load());
    long* array = new (std::nothrow) long[4];
    sink.store(array);
    delete[] static_cast<long*>(sink.load());
    Aligned* aligned = new Aligned;
    sink.store(aligned);
    delete static_cast<Aligned*>(sink.load());
  }).join();
  const std::uint64_t allocations = stop_counting();
  // std::thread allocates its state too: at least our three.
  CHECK(allocations >= 3);
  CHECK(g_first_depth.load() > 0);
}
