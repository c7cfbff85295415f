// Helpers shared by the test files. Header-only; include it by a path
// relative to the including file ("support/test_support.hpp" from tests/,
// "../support/test_support.hpp" from a subfolder). No Catch2 here: the
// helpers are also used off the test thread (inside handlers and workers).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <thread>
#include <vector>

namespace fnbus::testing_support {

// The default bound of wait_until(): generous for waits that should end
// almost at once, so that reaching it means a deadlock or a lost wake-up,
// not a slow machine.
inline constexpr std::chrono::nanoseconds kDefaultWaitBound =
    std::chrono::seconds(10);

// Polls `pred` (yielding between polls) until it holds or `timeout`
// passes; returns its last value, so a test that REQUIREs the result fails
// instead of hanging. `pred` is called once more at the deadline.
template <typename Pred>
bool wait_until(Pred pred,
                std::chrono::nanoseconds timeout = kDefaultWaitBound) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::yield();
  }
  return true;
}

// A string literal as a template argument: the name of a test event.
template <std::size_t N>
struct EventName {
  // NOLINTNEXTLINE(google-explicit-constructor): taken from a literal.
  constexpr EventName(const char (&literal)[N]) {
    std::copy_n(literal, N, text);
  }
  [[nodiscard]] constexpr std::string_view view() const {
    return {text, N - 1};
  }
  char text[N] = {};
};

// Test events, one type a name: `using Order = IdEvent<"metrics.Order">;`
// declares an event named "metrics.Order" with an int id, published as
// `Order{.id = 1}` or `Order{1}`; NamedEvent has no payload. Each test
// file prefixes the names with its own, so that its events stay apart
// from other files' in the bus's per-name metrics.
template <EventName Name>
struct IdEvent {
  static constexpr std::string_view kEventName = Name.view();
  int id = 0;
};
template <EventName Name>
struct NamedEvent {
  static constexpr std::string_view kEventName = Name.view();
};

// Runs `fn` when the scope ends (also when a REQUIRE throws), e.g. to open
// a gate before the bus is destroyed.
template <typename F>
struct OnExit {
  F fn;
  ~OnExit() { fn(); }
};
template <typename F>
OnExit(F) -> OnExit<F>;

// Whether `needle` occurs in `haystack`.
inline bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// How many of per-event delivery counters (one per event id, read after
// the workers are joined) show an event never handled, or handled twice.
struct DeliveryCount {
  std::uint64_t missing = 0;
  std::uint64_t repeated = 0;
};
template <typename Counters>
DeliveryCount count_deliveries(const Counters& counters) {
  DeliveryCount result;
  for (const auto& counter : counters) {
    // relaxed: the writers were joined before the call.
    const auto n = counter.load(std::memory_order_relaxed);
    if (n == 0) ++result.missing;
    if (n > 1) ++result.repeated;
  }
  return result;
}

// A gate a handler waits at (bounded) until the test opens it.
struct Gate {
  std::atomic<bool> opened{false};
  std::atomic<int> waiting{0};   // handlers currently at the gate
  std::atomic<int> timeouts{0};  // waits that gave up: the test must fail

  // release/acquire: what the test did before open() is visible to the
  // handlers it lets through.
  void open() { opened.store(true, std::memory_order_release); }
  void pass() {
    // acq_rel: wait_for_waiter() seeing the count sees the handler arrive.
    waiting.fetch_add(1, std::memory_order_acq_rel);
    if (!wait_until([&] { return opened.load(std::memory_order_acquire); })) {
      // relaxed: read after the threads are joined.
      timeouts.fetch_add(1, std::memory_order_relaxed);
    }
    // acq_rel: as above.
    waiting.fetch_sub(1, std::memory_order_acq_rel);
  }
  [[nodiscard]] bool wait_for_waiter() const {
    return wait_until(
        [&] { return waiting.load(std::memory_order_acquire) > 0; });
  }
};

// Lifetime counters of Counted, for single-threaded tests; each test that
// uses them resets them first (`counts = {};`).
struct Counts {
  int constructed = 0;  // every constructor, including copies and moves
  int moved = 0;        // move constructions and move assignments
  int destroyed = 0;
  int bad_destroys = 0;  // destructor ran on an object that was not alive
  int bad_moves = 0;     // moved from or into an object that was not alive
};
inline Counts counts;

// An element (or event member) type that records its lifetime in
// `counts`. `magic_` tells a live object from a destroyed (or never built)
// one, so a double destruction or a move from a dead object is noticed.
class Counted {
 public:
  static constexpr std::uint32_t kAlive = 0xA11CE;
  static constexpr std::uint32_t kDead = 0xDEAD;

  Counted() noexcept : Counted(-1) {}
  explicit Counted(int value) noexcept : value_(value) { ++counts.constructed; }
  Counted(const Counted& other) noexcept : value_(other.value_) {
    ++counts.constructed;
  }
  Counted(Counted&& other) noexcept : value_(other.value_) {
    if (other.magic_ != kAlive) ++counts.bad_moves;
    other.value_ = -2;
    ++counts.constructed;
    ++counts.moved;
  }
  Counted& operator=(const Counted& other) noexcept {
    value_ = other.value_;
    return *this;
  }
  Counted& operator=(Counted&& other) noexcept {
    if (other.magic_ != kAlive || magic_ != kAlive) ++counts.bad_moves;
    value_ = other.value_;
    other.value_ = -2;
    ++counts.moved;
    return *this;
  }
  ~Counted() {
    if (magic_ != kAlive) ++counts.bad_destroys;
    magic_ = kDead;
    ++counts.destroyed;
  }

  [[nodiscard]] int value() const noexcept { return value_; }

 private:
  int value_;
  std::uint32_t magic_ = kAlive;
};

// Counts the calls inside a section (enter() ... leave()) from any
// threads, and the most seen inside at once: for tests of a concurrency
// limit.
class HighWater {
 public:
  void enter() {
    // relaxed: one counter, whose modification order is all that counts;
    // a limit's hand-over (a mutex) orders one holder's leave() before the
    // next holder's enter(). most() is read after the calls are over.
    const int now = inside_.fetch_add(1, std::memory_order_relaxed) + 1;
    int seen = most_.load(std::memory_order_relaxed);
    while (now > seen &&
           !most_.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
    }
  }
  void leave() { inside_.fetch_sub(1, std::memory_order_relaxed); }
  [[nodiscard]] int most() const {
    return most_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<int> inside_{0};
  std::atomic<int> most_{0};
};

// In a sequence of taken items, the most taken between two of `kind` (or
// from the start to the first) while some of `kind` were still to come:
// how long `kind` waited at worst (the priorities' starvation bound).
template <typename T>
std::size_t longest_wait(const std::vector<T>& taken, const T& kind) {
  std::size_t left =
      static_cast<std::size_t>(std::count(taken.begin(), taken.end(), kind));
  std::size_t longest = 0;
  std::size_t since = 0;
  for (const T& item : taken) {
    if (left == 0) break;
    ++since;
    if (item == kind) {
      longest = std::max(longest, since);
      since = 0;
      --left;
    }
  }
  return longest;
}

}  // namespace fnbus::testing_support
