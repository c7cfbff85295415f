// Tests of fnbus::Subscription: RAII, cancel semantics (from other threads
// and from inside the handler), and subscribing/cancelling while events
// flow.
//
// As in event_bus_test.cpp: no Catch2 assertion off the test thread, no
// sleeps to order threads, every wait bounded; state handlers use is
// declared before the bus.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <latch>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "support/bus_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"

namespace fnbus_subscription_test {

using namespace std::chrono_literals;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::OverflowPolicy;
using fnbus::Subscription;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::OnExit;
using fnbus::testing_support::wait_until;

struct Tick {
  int n = 0;
};
struct Churn {
  int n = 0;
};
struct Idle {};
struct Deep {
  int depth = 0;
};

// Captured by value in a handler: counts destructions of the live copy and
// records whether one happened while a handler using it was running.
struct Probe {
  struct Shared {
    std::atomic<int> destroyed{0};
    std::atomic<int> destroyed_while_inside{0};
    std::atomic<int> inside{0};  // handler calls in progress
  };

  explicit Probe(std::shared_ptr<Shared> s) : shared(std::move(s)) {}
  Probe(const Probe& other) = default;
  Probe(Probe&& other) noexcept : shared(std::move(other.shared)) {}
  Probe& operator=(const Probe&) = delete;
  Probe& operator=(Probe&&) = delete;
  ~Probe() {
    if (!shared) return;  // moved from
    if (shared->inside.load() != 0) shared->destroyed_while_inside.fetch_add(1);
    shared->destroyed.fetch_add(1);
  }

  std::shared_ptr<Shared> shared;
};

// A Tick handler that counts its calls and owns a piece of state, so that
// a test can see when the bus has dropped the handler. Declare it before
// the bus: the handler refers to it.
struct StatefulHandler {
  std::atomic<int> calls{0};
  std::weak_ptr<int> state;  // expires when the handler is destroyed

  Subscription subscribe(EventBus& bus) {
    auto owned = std::make_shared<int>(0);
    state = owned;
    // The handler holds the only reference to `owned` from here on.
    return bus.subscribe<Tick>(
        [this, owned](const Tick&) { calls.fetch_add(1); });
  }
};

// ---------------------------------------------------------------------------
// RAII and handle semantics.

static_assert(!std::is_copy_constructible_v<Subscription>);
static_assert(!std::is_copy_assignable_v<Subscription>);
static_assert(std::is_nothrow_move_constructible_v<Subscription>);
static_assert(std::is_nothrow_move_assignable_v<Subscription>);
static_assert(std::is_nothrow_destructible_v<Subscription>);

TEST_CASE(
    "subscription: a default Subscription is inactive and cancel does nothing",
    "[subscription]") {
  Subscription sub;
  CHECK_FALSE(sub.active());
  CHECK_FALSE(static_cast<bool>(sub));
  sub.cancel();
  sub.release();
  CHECK_FALSE(sub.active());
}

TEST_CASE("subscription: destroying a Subscription unsubscribes its handler",
          "[subscription]") {
  std::atomic<int> calls{0};
  std::atomic<int> kept_calls{0};
  auto bus = make_bus();
  auto kept =
      bus->subscribe<Tick>([&](const Tick&) { kept_calls.fetch_add(1); });
  {
    auto sub = bus->subscribe<Tick>([&](const Tick&) { calls.fetch_add(1); });
    CHECK(sub.active());
    bus->trigger(Tick{});
    CHECK(calls.load() == 1);
  }
  bus->trigger(Tick{});
  REQUIRE(bus->publish(Tick{}).ok());
  REQUIRE(bus->shutdown().ok());
  CHECK(calls.load() == 1);
  CHECK(kept_calls.load() == 3);
}

TEST_CASE("subscription: a Subscription moves its handler with it",
          "[subscription]") {
  std::atomic<int> a_calls{0};
  std::atomic<int> b_calls{0};
  auto bus = make_bus();
  auto a = bus->subscribe<Tick>([&](const Tick&) { a_calls.fetch_add(1); });

  SECTION("move construction") {
    Subscription moved(std::move(a));
    CHECK_FALSE(a.active());  // NOLINT(bugprone-use-after-move)
    CHECK(moved.active());
    a.cancel();  // the moved-from handle no longer owns the handler
    bus->trigger(Tick{});
    CHECK(a_calls.load() == 1);
    moved.cancel();
    bus->trigger(Tick{});
    CHECK(a_calls.load() == 1);
  }
  SECTION("move assignment cancels the target's old handler") {
    auto b = bus->subscribe<Tick>([&](const Tick&) { b_calls.fetch_add(1); });
    bus->trigger(Tick{});
    CHECK(a_calls.load() == 1);
    CHECK(b_calls.load() == 1);
    b = std::move(a);  // b's handler is cancelled, a's now owned by b
    CHECK(b.active());
    CHECK_FALSE(a.active());  // NOLINT(bugprone-use-after-move)
    bus->trigger(Tick{});
    CHECK(a_calls.load() == 2);
    CHECK(b_calls.load() == 1);
    b = Subscription();  // cancels a's handler
    CHECK_FALSE(b.active());
    bus->trigger(Tick{});
    CHECK(a_calls.load() == 2);
  }
  SECTION("self move assignment keeps the handler") {
    Subscription& alias = a;
    a = std::move(alias);
    CHECK(a.active());
    bus->trigger(Tick{});
    CHECK(a_calls.load() == 1);
  }
}

TEST_CASE("subscription: cancel is idempotent and active() follows it",
          "[subscription]") {
  std::atomic<int> calls{0};
  auto bus = make_bus();
  auto sub = bus->subscribe<Tick>([&](const Tick&) { calls.fetch_add(1); });
  CHECK(sub.active());
  CHECK(static_cast<bool>(sub));
  bus->trigger(Tick{});
  sub.cancel();
  CHECK_FALSE(sub.active());
  sub.cancel();
  sub.cancel();
  CHECK_FALSE(sub.active());
  bus->trigger(Tick{});
  REQUIRE(bus->publish(Tick{}).ok());
  REQUIRE(bus->shutdown().ok());
  CHECK(calls.load() == 1);
}

TEST_CASE(
    "subscription: release keeps the handler subscribed until the bus goes "
    "away",
    "[subscription]") {
  StatefulHandler handler;
  auto bus = make_bus();
  {
    auto sub = handler.subscribe(*bus);
    sub.release();
    CHECK_FALSE(sub.active());
  }  // destroying the released handle does not unsubscribe
  bus->trigger(Tick{});
  REQUIRE(bus->publish(Tick{}).ok());
  REQUIRE(bus->shutdown().ok());
  CHECK(handler.calls.load() == 2);
  CHECK_FALSE(handler.state.expired());  // the handler still holds its state
  bus.reset();
  CHECK(handler.state.expired());  // destroyed with the bus: no leak
}

TEST_CASE("subscription: a Subscription may outlive its bus",
          "[subscription]") {
  StatefulHandler handler;
  auto bus = make_bus();
  auto sub = handler.subscribe(*bus);
  auto other = bus->subscribe<Tick>([](const Tick&) {});
  REQUIRE(bus->publish(Tick{}).ok());
  bus.reset();  // drains, then drops every handler
  CHECK(handler.calls.load() == 1);
  CHECK(sub.active());  // the handle itself has not been cancelled

  SECTION("cancel after the bus is gone") {
    sub.cancel();
    CHECK_FALSE(sub.active());
    sub.cancel();
    other.cancel();
  }
  SECTION("destroy after the bus is gone") {
    sub = Subscription();
    CHECK_FALSE(sub.active());
  }
  SECTION("release after the bus is gone") {
    sub.release();
    CHECK_FALSE(sub.active());
  }
  CHECK(handler.state.expired());
}

// ---------------------------------------------------------------------------
// Cancelling from inside the handler.

TEST_CASE("subscription: a handler may cancel its own subscription (trigger)",
          "[subscription]") {
  auto probe_state = std::make_shared<Probe::Shared>();
  std::atomic<int> calls{0};
  std::atomic<int> destroyed_during_call{-1};
  std::atomic<bool> active_after_cancel{true};
  Subscription sub;
  auto bus = make_bus();

  sub = bus->subscribe<Tick>([&, probe = Probe(probe_state)](const Tick&) {
    probe.shared->inside.fetch_add(1);
    calls.fetch_add(1);
    sub.cancel();  // no deadlock: returns at once
    active_after_cancel.store(sub.active());
    // The callable (and so `probe`) must still be alive here.
    destroyed_during_call.store(probe.shared->destroyed.load());
    probe.shared->inside.fetch_sub(1);
  });
  bus->trigger(Tick{});
  bus->trigger(Tick{});
  REQUIRE(bus->publish(Tick{}).ok());
  REQUIRE(bus->shutdown().ok());

  CHECK(calls.load() == 1);
  CHECK_FALSE(active_after_cancel.load());
  CHECK(destroyed_during_call.load() == 0);
  bus.reset();
  // Destroyed exactly once, and never while the handler ran.
  CHECK(probe_state->destroyed.load() == 1);
  CHECK(probe_state->destroyed_while_inside.load() == 0);
}

TEST_CASE("subscription: a handler may cancel its own subscription (publish)",
          "[subscription]") {
  constexpr int kEvents = 200;
  auto probe_state = std::make_shared<Probe::Shared>();
  std::atomic<int> calls{0};
  std::atomic<int> late_calls{0};  // started after cancel() returned
  std::atomic<bool> cancel_claimed{false};
  std::atomic<bool> cancel_returned{false};
  std::atomic<int> destroyed_during_call{-1};
  std::atomic<int> witness{0};
  Subscription sub;
  auto bus = make_bus({.workers = 2});

  auto counter =
      bus->subscribe<Tick>([&](const Tick&) { witness.fetch_add(1); });
  sub = bus->subscribe<Tick>([&, probe = Probe(probe_state)](const Tick&) {
    if (cancel_returned.load()) late_calls.fetch_add(1);
    probe.shared->inside.fetch_add(1);
    calls.fetch_add(1);
    // Only one call touches `sub` (a Subscription is not thread-safe).
    if (!cancel_claimed.exchange(true)) {
      sub.cancel();  // waits for calls on the other worker, not for itself
      cancel_returned.store(true);
      destroyed_during_call.store(probe.shared->destroyed.load());
    }
    probe.shared->inside.fetch_sub(1);
  });

  for (int i = 0; i < kEvents; ++i) {
    REQUIRE(bus->publish(Tick{i}, {.overflow = OverflowPolicy::kBlock}).ok());
  }
  REQUIRE(bus->shutdown().ok());

  CHECK(witness.load() == kEvents);
  CHECK(cancel_returned.load());
  CHECK(calls.load() >= 1);
  CHECK(late_calls.load() == 0);
  CHECK(destroyed_during_call.load() == 0);
  CHECK_FALSE(sub.active());
  bus.reset();
  sub = Subscription();
  CHECK(probe_state->destroyed.load() == 1);
  CHECK(probe_state->destroyed_while_inside.load() == 0);
}

TEST_CASE(
    "subscription: a handler may cancel and subscribe other handlers "
    "mid-dispatch",
    "[subscription]") {
  std::atomic<int> a_calls{0};
  std::atomic<int> b_calls{0};
  std::atomic<int> c_calls{0};
  Subscription b;
  Subscription c;
  EventBus* raw = nullptr;
  auto bus = make_bus({.workers = 1});
  raw = bus.get();

  // a runs first; on the first event it cancels b (subscribed after a) and
  // subscribes c.
  auto a = bus->subscribe<Tick>([&](const Tick&) {
    if (a_calls.fetch_add(1) == 0) {
      b.cancel();
      c = raw->subscribe<Tick>([&](const Tick&) { c_calls.fetch_add(1); });
    }
  });
  b = bus->subscribe<Tick>([&](const Tick&) { b_calls.fetch_add(1); });

  SECTION("trigger") {
    bus->trigger(Tick{1});
    // b was cancelled before the dispatch reached it: it must not run.
    CHECK(b_calls.load() == 0);
    // c may or may not see the event under way; it sees the next one.
    const int c_before = c_calls.load();
    CHECK(c_before <= 1);
    bus->trigger(Tick{2});
    CHECK(c_calls.load() == c_before + 1);
  }
  SECTION("publish") {
    REQUIRE(bus->publish(Tick{1}).ok());
    REQUIRE(wait_until([&] { return a_calls.load() == 1; }));
    REQUIRE(bus->shutdown().ok());  // the first dispatch has finished
    const int c_before = c_calls.load();
    CHECK(c_before <= 1);
    CHECK(b_calls.load() == 0);
    bus->trigger(Tick{2});
    CHECK(c_calls.load() == c_before + 1);
  }
  CHECK(a_calls.load() == 2);
  CHECK(b_calls.load() == 0);
}

// ---------------------------------------------------------------------------
// Cancelling from another thread.

TEST_CASE(
    "subscription: cancel from another thread waits for the running handler",
    "[subscription]") {
  constexpr int kIterations = 200;
  constexpr int kTicksBefore = 4;
  constexpr int kTicksAfter = 4;

  struct Iteration {
    std::atomic<int> calls{0};
    std::atomic<int> late_calls{0};  // started after cancel() returned
    std::atomic<bool> gated{false};  // the first call was held
    std::atomic<bool> running{false};
    std::atomic<bool> cancel_called{false};
    std::atomic<bool> cancel_returned{false};
    std::atomic<int> gate_timeouts{0};
    std::shared_ptr<Probe::Shared> probe = std::make_shared<Probe::Shared>();
  };

  std::atomic<std::uint64_t> witness{0};
  std::uint64_t published = 0;
  int inside_after_cancel = 0;
  int calls_after_cancel = 0;
  int late_calls = 0;
  int gate_timeouts = 0;
  int destroyed_while_inside = 0;
  int not_destroyed = 0;
  std::vector<std::shared_ptr<Iteration>> done;
  auto bus = make_bus({.workers = 2, .overflow = OverflowPolicy::kBlock});
  auto counter =
      bus->subscribe<Tick>([&](const Tick&) { witness.fetch_add(1); });

  for (int it = 0; it < kIterations; ++it) {
    auto state = std::make_shared<Iteration>();
    auto sub =
        bus->subscribe<Tick>([state, probe = Probe(state->probe)](const Tick&) {
          if (state->cancel_returned.load()) state->late_calls.fetch_add(1);
          probe.shared->inside.fetch_add(1);
          state->calls.fetch_add(1);
          if (!state->gated.exchange(true)) {
            state->running.store(true);
            if (!wait_until([&] { return state->cancel_called.load(); })) {
              state->gate_timeouts.fetch_add(1);
            }
            // Stay a little longer so that cancel() is really waiting.
            for (int i = 0; i < 50; ++i) std::this_thread::yield();
          }
          probe.shared->inside.fetch_sub(1);
        });
    for (int i = 0; i < kTicksBefore; ++i) {
      REQUIRE(bus->publish(Tick{i}).ok());
      ++published;
    }
    REQUIRE(wait_until([&] { return state->running.load(); }));
    state->cancel_called.store(true);
    sub.cancel();
    // When cancel() returns the handler is not running anywhere.
    const int inside = state->probe->inside.load();
    state->cancel_returned.store(true);
    const int calls_at_cancel = state->calls.load();
    for (int i = 0; i < kTicksAfter; ++i) {
      REQUIRE(bus->publish(Tick{i}).ok());
      ++published;
    }
    REQUIRE(wait_until([&] { return witness.load() == published; }));

    if (inside != 0) ++inside_after_cancel;
    if (state->calls.load() != calls_at_cancel) ++calls_after_cancel;
    done.push_back(std::move(state));
  }
  REQUIRE(bus->shutdown().ok());
  bus.reset();
  for (const auto& state : done) {
    late_calls += state->late_calls.load();
    gate_timeouts += state->gate_timeouts.load();
    destroyed_while_inside += state->probe->destroyed_while_inside.load();
    if (state->probe->destroyed.load() != 1) ++not_destroyed;
  }

  CHECK(inside_after_cancel == 0);
  CHECK(calls_after_cancel == 0);
  CHECK(late_calls == 0);
  CHECK(gate_timeouts == 0);
  CHECK(destroyed_while_inside == 0);
  CHECK(not_destroyed == 0);
}

// ---------------------------------------------------------------------------
// Subscribing and cancelling while events flow.

// Per dynamic subscription: its calls, and calls that started after its
// cancel() returned.
struct DynamicState {
  std::atomic<int> calls{0};
  std::atomic<int> late_calls{0};
  std::atomic<bool> cancel_returned{false};
};

struct DynamicSub {
  std::shared_ptr<DynamicState> state;
  Subscription sub;
};

Subscription subscribe_dynamic(EventBus& bus,
                               const std::shared_ptr<DynamicState>& state) {
  return bus.subscribe<Tick>([state](const Tick&) {
    if (state->cancel_returned.load()) state->late_calls.fetch_add(1);
    state->calls.fetch_add(1);
  });
}

// A pool of dynamic subscriptions shared by threads and handlers. cancel()
// runs outside the pool's lock: it may wait for a handler, and a handler
// may be waiting for the lock.
struct DynamicPool {
  std::mutex mutex;
  std::deque<DynamicSub> subs;
  std::vector<std::shared_ptr<DynamicState>> all;  // for the final checks

  void add(EventBus& bus) {
    auto state = std::make_shared<DynamicState>();
    Subscription sub = subscribe_dynamic(bus, state);
    std::lock_guard lock(mutex);
    all.push_back(state);
    subs.push_back({std::move(state), std::move(sub)});
  }
  // Cancels the oldest subscription if more than `keep` are live.
  void trim(std::size_t keep) {
    DynamicSub victim;
    {
      std::lock_guard lock(mutex);
      if (subs.size() <= keep) return;
      victim = std::move(subs.front());
      subs.pop_front();
    }
    victim.sub.cancel();
    victim.state->cancel_returned.store(true);
  }
  void cancel_all() {
    while (true) {
      DynamicSub victim;
      {
        std::lock_guard lock(mutex);
        if (subs.empty()) return;
        victim = std::move(subs.front());
        subs.pop_front();
      }
      victim.sub.cancel();
      victim.state->cancel_returned.store(true);
    }
  }
  int late_calls() {
    std::lock_guard lock(mutex);
    int late = 0;
    for (const auto& s : all) late += s->late_calls.load();
    return late;
  }
  std::size_t created() {
    std::lock_guard lock(mutex);
    return all.size();
  }
};

TEST_CASE(
    "subscription: handlers subscribe and cancel while dispatch is under way",
    "[subscription]") {
  constexpr int kRounds = 400;
  DynamicPool pool;
  std::atomic<int> witness{0};
  std::atomic<int> churns{0};
  EventBus* raw = nullptr;
  auto bus = make_bus({.workers = 2, .overflow = OverflowPolicy::kBlock});
  raw = bus.get();

  auto counter =
      bus->subscribe<Tick>([&](const Tick&) { witness.fetch_add(1); });
  // On each Churn: subscribe a new Tick handler and cancel the oldest.
  auto churner = bus->subscribe<Churn>([&](const Churn&) {
    pool.add(*raw);
    pool.trim(4);
    churns.fetch_add(1);
  });
  // Some Tick handlers churn too, from inside a Tick dispatch.
  auto tick_churner = bus->subscribe<Tick>([&](const Tick& t) {
    if (t.n % 8 == 0) {
      pool.add(*raw);
      pool.trim(4);
      churns.fetch_add(1);
    }
  });

  int ticks = 0;
  int churn_events = 0;
  for (int i = 0; i < kRounds; ++i) {
    REQUIRE(bus->publish(Tick{i}).ok());
    ++ticks;
    if (i % 2 == 0) {
      REQUIRE(bus->publish(Churn{i}).ok());
      ++churn_events;
    }
    if (i % 5 == 0) {
      bus->trigger(Tick{i + 1});  // churns when (i + 1) % 8 == 0
      ++ticks;
    }
  }
  REQUIRE(bus->shutdown().ok());
  pool.cancel_all();

  int expected_churns = churn_events;
  for (int i = 0; i < kRounds; ++i) {
    if (i % 8 == 0) ++expected_churns;                      // published Tick{i}
    if (i % 5 == 0 && (i + 1) % 8 == 0) ++expected_churns;  // triggered
  }
  CHECK(witness.load() == ticks);
  CHECK(churns.load() == expected_churns);
  CHECK(pool.created() == static_cast<std::size_t>(expected_churns));
  CHECK(pool.late_calls() == 0);
  const auto stats = bus->stats();
  CHECK(stats.published == stats.dispatched);
  CHECK(stats.failed == 0);
}

struct ConcurrentRun {
  int publishers = 2;
  int publishes = 4'000;  // per publisher
  int triggers = 2'000;   // by one trigger thread
  int churners = 2;
  int churns = 300;  // subscribe + cancel cycles per churner
};

void run_concurrent(const ConcurrentRun& run) {
  DynamicPool pool;
  std::atomic<std::uint64_t> witness{0};
  std::atomic<int> publish_errors{0};
  auto bus = make_bus({.queue_capacity = 256,
                       .workers = 2,
                       .overflow = OverflowPolicy::kBlock,
                       .block_timeout = 30s});
  auto counter =
      bus->subscribe<Tick>([&](const Tick&) { witness.fetch_add(1); });

  std::latch start(run.publishers + 1 + run.churners);
  {
    std::vector<std::jthread> threads;
    for (int p = 0; p < run.publishers; ++p) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        for (int i = 0; i < run.publishes; ++i) {
          if (!bus->publish(Tick{i}).ok()) publish_errors.fetch_add(1);
        }
      });
    }
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (int i = 0; i < run.triggers; ++i) bus->trigger(Tick{i});
    });
    for (int c = 0; c < run.churners; ++c) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        for (int i = 0; i < run.churns; ++i) {
          pool.add(*bus);
          pool.trim(3);
        }
      });
    }
  }  // joins
  REQUIRE(bus->shutdown().ok());
  pool.cancel_all();

  const std::uint64_t expected =
      static_cast<std::uint64_t>(run.publishers) * run.publishes + run.triggers;
  CHECK(publish_errors.load() == 0);
  CHECK(witness.load() == expected);
  CHECK(pool.created() == static_cast<std::size_t>(run.churners) * run.churns);
  CHECK(pool.late_calls() == 0);
  const auto stats = bus->stats();
  CHECK(stats.published == stats.dispatched);
  CHECK(stats.dead_lettered == 0);
}

TEST_CASE(
    "subscription: threads subscribe and cancel while others publish and "
    "trigger",
    "[subscription]") {
  run_concurrent({});
}

TEST_CASE("subscription: threads subscribe and cancel under load (stress)",
          "[subscription][.stress]") {
  for (int round = 0; round < 5; ++round) {
    INFO("round " << round);
    run_concurrent({.publishers = 3,
                    .publishes = 50'000,
                    .triggers = 20'000,
                    .churners = 3,
                    .churns = 3'000});
  }
}

// ---------------------------------------------------------------------------
// cancel() of a handler that is not running must not wait for unrelated
// handlers, however deeply they are nested on another thread (each nesting
// level up to detail::kMaxNesting is tracked on its own).

void cancel_while_nested(int depth) {
  std::atomic<bool> deep_reached{false};
  std::atomic<bool> release{false};
  std::atomic<int> gate_timeouts{0};
  std::atomic<int> idle_calls{0};
  std::atomic<bool> cancel_returned{false};
  EventBus* raw = nullptr;
  auto bus = make_bus();
  raw = bus.get();
  auto deep = bus->subscribe<Deep>([&](const Deep& d) {
    if (d.depth < depth) {
      raw->trigger(Deep{d.depth + 1});
      return;
    }
    deep_reached.store(true);
    if (!wait_until([&] { return release.load(); })) gate_timeouts.fetch_add(1);
  });
  auto idle =
      bus->subscribe<Idle>([&](const Idle&) { idle_calls.fetch_add(1); });

  std::jthread nester([&] { raw->trigger(Deep{1}); });
  REQUIRE(wait_until([&] { return deep_reached.load(); }));
  std::jthread canceller([&] {
    idle.cancel();  // `idle` is not running anywhere
    cancel_returned.store(true);
  });
  const bool returned_while_nested =
      wait_until([&] { return cancel_returned.load(); }, 5s);
  release.store(true);
  nester.join();
  canceller.join();

  CHECK(returned_while_nested);
  CHECK(gate_timeouts.load() == 0);
  bus->trigger(Idle{});
  CHECK(idle_calls.load() == 0);
}

TEST_CASE(
    "subscription: cancel does not wait for an unrelated handler (shallow "
    "nesting)",
    "[subscription]") {
  cancel_while_nested(4);
}

TEST_CASE(
    "subscription: cancel does not wait for an unrelated handler nested 100 "
    "deep",
    "[subscription]") {
  cancel_while_nested(100);
}

TEST_CASE(
    "subscription: a one-shot handler running on two workers may cancel "
    "itself on both",
    "[subscription]") {
  std::atomic<int> calls{0};
  std::atomic<int> both_inside_timeouts{0};
  std::atomic<int> inside{0};
  Subscription once;
  auto bus = make_bus({.workers = 2});
  once = bus->subscribe<Tick>([&](const Tick&) {
    calls.fetch_add(1);
    inside.fetch_add(1);
    // Wait (bounded) for the other worker to be inside too, so that both
    // cancel the same Subscription at the same time.
    if (!wait_until([&] { return inside.load() >= 2; })) {
      both_inside_timeouts.fetch_add(1);
    }
    once.cancel();
  });
  REQUIRE(bus->publish(Tick{}).ok());
  REQUIRE(bus->publish(Tick{}).ok());
  REQUIRE(wait_until([&] { return bus->stats().dispatched == 2; }));
  REQUIRE(bus->publish(Tick{}).ok());  // after the cancel: nobody listens
  REQUIRE(bus->shutdown().ok());
  CHECK_FALSE(once.active());
  CHECK(both_inside_timeouts.load() == 0);
  CHECK(calls.load() == 2);
  CHECK(bus->stats().unhandled == 1);
}

// ---------------------------------------------------------------------------
// Two cancels of one Subscription at once: when either returns, the handler
// is not running and will not start again -- also for the cancel() that
// lost the race to unsubscribe it.

struct Spin {  // its handler publishes another Spin: it keeps itself busy
  int n = 0;
};

// One round's observations, written by the handler and by the cancelling
// threads, read by the test after shutdown() joined everybody.
struct CancelRace {
  std::atomic<int> inside{0};  // handler calls in progress
  std::atomic<int> calls{0};
  std::atomic<bool> cancel_returned{false};  // some cancel() has returned
  std::atomic<int> late_starts{0};           // calls that began after that
  std::atomic<int> running_at_return{0};     // returns that saw inside != 0
};

struct ConcurrentCancelOutcome {
  int rounds_started_late = 0;       // a call began after a cancel returned
  int rounds_running_at_return = 0;  // a cancel returned during a call
  int busy_timeouts = 0;  // the handler never got going: the test must fail
  int idle_timeouts = 0;  // the Spins did not stop: the test must fail
};

// Per round: subscribes a Spin handler that re-publishes its event (a
// call in flight on each worker), then two threads released by a latch
// cancel the same Subscription. Meanwhile two more threads subscribe and
// cancel other functions, so that the cancels contend for the registry:
// that widens the window between the winning cancel() taking the entry
// and marking it unsubscribed. (Two workers rather than more: on a
// two-core machine the race shows more often, and each round is faster.)
ConcurrentCancelOutcome cancel_twice_concurrently(int rounds) {
  constexpr int kWorkers = 2;
  constexpr int kCallsBeforeCancel = 5;
  constexpr int kChurners = 2;
  constexpr int kChurnsPerRound = 100;
  std::vector<std::shared_ptr<CancelRace>> races;
  ConcurrentCancelOutcome outcome;
  // Each round wakes the churners for kChurnsPerRound subscribe + cancel
  // cycles each: churn is costly (each cancel runs a process-wide barrier).
  std::atomic<bool> stop_churn{false};
  std::atomic<int> churn_round{0};  // bumped per round; the churners wait
  EventBus* raw = nullptr;
  auto bus = make_bus({.workers = kWorkers});
  raw = bus.get();

  std::vector<std::jthread> churners;
  for (int c = 0; c < kChurners; ++c) {
    churners.emplace_back([raw, &churn_round, &stop_churn] {
      int seen = 0;
      while (!stop_churn.load()) {
        churn_round.wait(seen);
        seen = churn_round.load();
        for (int i = 0; i < kChurnsPerRound && !stop_churn.load(); ++i) {
          Subscription other = raw->subscribe<Churn>([](const Churn&) {});
          other.cancel();
        }
      }
    });
  }
  // Stops the churners when the function returns (also by a REQUIRE),
  // before `churners` joins them.
  OnExit stop{[&] {
    stop_churn.store(true);
    churn_round.fetch_add(1);
    churn_round.notify_all();
  }};
  for (int round = 0; round < rounds; ++round) {
    auto race = std::make_shared<CancelRace>();
    races.push_back(race);
    Subscription sub = bus->subscribe<Spin>([race, raw](const Spin& s) {
      // seq_cst (inside, cancel_returned): with the store and load in
      // `cancel` below, a call that begins after a cancel() returned is
      // seen by one side or the other.
      race->inside.fetch_add(1);
      if (race->cancel_returned.load()) race->late_starts.fetch_add(1);
      race->calls.fetch_add(1);
      (void)raw->publish(Spin{s.n + 1});
      race->inside.fetch_sub(1);
    });
    for (int i = 0; i < kWorkers; ++i) {
      const absl::Status status = bus->publish(Spin{});
      INFO(status.ToString());
      REQUIRE(status.ok());
    }
    if (!wait_until([&] { return race->calls.load() >= kCallsBeforeCancel; })) {
      ++outcome.busy_timeouts;
    }
    std::latch start(2);
    auto cancel = [&] {
      start.arrive_and_wait();
      sub.cancel();
      race->cancel_returned.store(true);
      if (race->inside.load() != 0) race->running_at_return.fetch_add(1);
    };
    churn_round.fetch_add(1);
    churn_round.notify_all();
    {
      std::jthread first(cancel);
      std::jthread second(cancel);
    }
    // The chains of Spins end once nobody handles them: let them, so that
    // each round starts with kWorkers.
    if (!wait_until([&] {
          const auto stats = bus->stats();
          return stats.dispatched == stats.published;
        })) {
      ++outcome.idle_timeouts;
    }
  }
  stop.fn();
  churners.clear();  // joins
  REQUIRE(bus->shutdown().ok());
  for (const auto& race : races) {
    if (race->late_starts.load() != 0) ++outcome.rounds_started_late;
    if (race->running_at_return.load() != 0) ++outcome.rounds_running_at_return;
  }
  return outcome;
}

void check_concurrent_cancels(int rounds) {
  const ConcurrentCancelOutcome outcome = cancel_twice_concurrently(rounds);
  INFO(rounds << " rounds");
  CHECK(outcome.busy_timeouts == 0);
  CHECK(outcome.idle_timeouts == 0);
  CHECK(outcome.rounds_running_at_return == 0);
  CHECK(outcome.rounds_started_late == 0);
}

TEST_CASE(
    "subscription: when either of two concurrent cancels returns the handler "
    "is stopped",
    "[subscription]") {
  check_concurrent_cancels(100);
}

TEST_CASE(
    "subscription: when either of two concurrent cancels returns the handler "
    "is stopped (stress)",
    "[subscription][.stress]") {
  check_concurrent_cancels(300);
}

// ---------------------------------------------------------------------------
// The owner ends a Subscription (destroys it, or move-assigns another
// subscription into it) while the handler cancels that same Subscription
// through a pointer. When the owner's call returns, the handler is not
// running and will not start again, so the owner may free what the
// handler uses (under ASan a late handler reads freed memory).

struct SelfCancel {
  int n = 0;
};
struct Replacement {};

// What the handler reads after its cancel(): freed by the test as soon as
// the Subscription is ended. Small and flat (no pointers), so that a late
// read on a build without ASan reads stale heap memory and goes no further.
struct Payload {
  std::array<int, 64> values = [] {
    std::array<int, 64> ones;
    ones.fill(1);
    return ones;
  }();
};

struct OwnerRace {
  std::atomic<int> inside{0};  // handler calls in progress
  std::atomic<int> calls{0};
  std::atomic<bool> entered{false};     // the handler is running
  std::atomic<bool> ending{false};      // the owner is about to end the sub
  std::atomic<bool> cancelling{false};  // kTogether: the handler's turn
  std::atomic<bool> ended{false};       // the owner's destroy/assign returned
  std::atomic<int> late_starts{0};      // calls that began after `ended`
  std::atomic<int> gate_timeouts{0};
  std::atomic<int> replacement_calls{0};
  std::atomic<long> payload_sum{0};
  int inside_when_ended = -1;  // test thread only
};

enum class EndBy { kDestroy, kMoveAssign };
enum class CancelTiming {
  kHandlerFirst,  // the handler's cancel() returned before the owner starts
  kTogether,      // the owner starts as the handler calls cancel()
};

struct OwnerRaceOutcome {
  int running_when_ended = 0;
  int late_starts = 0;
  int wrong_calls = 0;  // the old handler ran other than once
  int gate_timeouts = 0;
  int replacement_missing = 0;  // kMoveAssign: the new handler did not run
};

// How many yields the handler goes on for after it cancelled itself and
// saw the owner start: not synchronisation (the outcome does not depend
// on it), only a window in which a destructor or assignment that does not
// wait for the handler returns while it still runs.
constexpr int kLingerYields = 200;

// Busy work of about `n` steps. Not synchronisation: under kTogether the
// owner, once the handler is about to call cancel(), waits a different
// little while each round before it ends the Subscription, so that the
// rounds sweep the handler's cancel() across the owner's destructor or
// assignment. (`owner_delay` < 0: the owner does not wait for the handler.)
void busy_steps(int n) {
  std::atomic<int> sink{0};
  for (int i = 0; i < n; ++i) sink.fetch_add(1, std::memory_order_relaxed);
}

void end_one_subscription(EventBus& bus, EndBy how, CancelTiming timing,
                          int owner_delay,
                          const std::shared_ptr<OwnerRace>& race) {
  auto payload = std::make_unique<Payload>();
  // On the heap, so that ASan sees any use after the destructor.
  auto sub = std::make_unique<Subscription>();
  *sub = bus.subscribe<SelfCancel>([race, self = sub.get(),
                                    payload = payload.get(),
                                    timing](const SelfCancel&) {
    // seq_cst (inside, ended): with the owner's store and load below, a
    // call running or beginning after the owner returned is seen.
    race->inside.fetch_add(1);
    if (race->ended.load()) race->late_starts.fetch_add(1);
    race->calls.fetch_add(1);
    if (timing == CancelTiming::kHandlerFirst) self->cancel();
    race->entered.store(true);
    if (!wait_until([&] { return race->ending.load(); })) {
      race->gate_timeouts.fetch_add(1);
    }
    if (timing == CancelTiming::kTogether) {
      race->cancelling.store(true);
      self->cancel();
    }
    for (int i = 0; i < kLingerYields; ++i) std::this_thread::yield();
    long sum = 0;
    for (int v : payload->values) sum += v;  // freed once the owner returns
    race->payload_sum.store(sum);
    race->inside.fetch_sub(1);
  });
  REQUIRE(bus.publish(SelfCancel{}).ok());
  REQUIRE(wait_until([&] { return race->entered.load(); }));
  race->ending.store(true);
  if (owner_delay >= 0) {
    REQUIRE(wait_until([&] { return race->cancelling.load(); }));
    busy_steps(owner_delay);
  }
  if (how == EndBy::kDestroy) {
    sub.reset();
  } else {
    *sub = bus.subscribe<Replacement>(
        [race](const Replacement&) { race->replacement_calls.fetch_add(1); });
  }
  race->ended.store(true);
  race->inside_when_ended = race->inside.load();
  payload.reset();
  // Later events of the type must not reach the old handler; the
  // replacement gets its own.
  REQUIRE(bus.publish(SelfCancel{}).ok());
  if (how == EndBy::kMoveAssign) REQUIRE(bus.publish(Replacement{}).ok());
  REQUIRE(wait_until([&] {
    const auto stats = bus.stats();
    return stats.dispatched == stats.published;
  }));
  sub.reset();
}

OwnerRaceOutcome end_while_handler_cancels(EndBy how, CancelTiming timing,
                                           int rounds) {
  std::vector<std::shared_ptr<OwnerRace>> races;
  auto bus = make_bus({.workers = 1});
  for (int round = 0; round < rounds; ++round) {
    races.push_back(std::make_shared<OwnerRace>());
    // kTogether: odd rounds end the Subscription at once (the owner is
    // usually first), even ones once the handler is about to cancel, after
    // 0 to 300 steps (the handler is usually first).
    const int owner_delay = timing == CancelTiming::kTogether && round % 2 == 0
                                ? (round / 2 % 16) * 20
                                : -1;
    end_one_subscription(*bus, how, timing, owner_delay, races.back());
  }
  REQUIRE(bus->shutdown().ok());
  OwnerRaceOutcome outcome;
  for (const auto& race : races) {
    if (race->inside_when_ended != 0) ++outcome.running_when_ended;
    outcome.late_starts += race->late_starts.load();
    if (race->calls.load() != 1) ++outcome.wrong_calls;
    outcome.gate_timeouts += race->gate_timeouts.load();
    if (how == EndBy::kMoveAssign && race->replacement_calls.load() != 1) {
      ++outcome.replacement_missing;
    }
  }
  return outcome;
}

void check_owner_race(EndBy how, CancelTiming timing, int rounds) {
  const OwnerRaceOutcome outcome =
      end_while_handler_cancels(how, timing, rounds);
  INFO(rounds << " rounds");
  CHECK(outcome.running_when_ended == 0);
  CHECK(outcome.late_starts == 0);
  CHECK(outcome.wrong_calls == 0);
  CHECK(outcome.gate_timeouts == 0);
  CHECK(outcome.replacement_missing == 0);
}

TEST_CASE(
    "subscription: destroying a Subscription whose handler cancelled it "
    "waits for the handler",
    "[subscription]") {
  check_owner_race(EndBy::kDestroy, CancelTiming::kHandlerFirst, 20);
}

TEST_CASE(
    "subscription: destroying a Subscription while its handler cancels it "
    "waits for the handler",
    "[subscription]") {
  check_owner_race(EndBy::kDestroy, CancelTiming::kTogether, 20);
}

TEST_CASE(
    "subscription: move-assigning into a Subscription whose handler "
    "cancelled it stops the old handler first",
    "[subscription]") {
  check_owner_race(EndBy::kMoveAssign, CancelTiming::kHandlerFirst, 20);
}

TEST_CASE(
    "subscription: move-assigning into a Subscription while its handler "
    "cancels it stops the old handler first",
    "[subscription]") {
  check_owner_race(EndBy::kMoveAssign, CancelTiming::kTogether, 20);
}

TEST_CASE(
    "subscription: ending a Subscription while its handler cancels it "
    "(stress)",
    "[subscription][.stress]") {
  SECTION("destroy, handler first") {
    check_owner_race(EndBy::kDestroy, CancelTiming::kHandlerFirst, 100);
  }
  SECTION("destroy, together") {
    check_owner_race(EndBy::kDestroy, CancelTiming::kTogether, 100);
  }
  SECTION("move-assign, handler first") {
    check_owner_race(EndBy::kMoveAssign, CancelTiming::kHandlerFirst, 100);
  }
  SECTION("move-assign, together") {
    check_owner_race(EndBy::kMoveAssign, CancelTiming::kTogether, 100);
  }
}

// ---------------------------------------------------------------------------
// A handler that cancels its own subscription: its callable (and what it
// captured) is destroyed once its call has returned, not kept until some
// later subscribe() or cancel() on the bus.

// Subscribes a Tick handler capturing a Probe that cancels its own
// subscription on its first call.
Subscription subscribe_self_cancelling(EventBus& bus, Subscription& sub,
                                       std::shared_ptr<Probe::Shared> state) {
  return bus.subscribe<Tick>(
      [&sub, probe = Probe(std::move(state))](const Tick&) {
        probe.shared->inside.fetch_add(1);
        sub.cancel();
        probe.shared->inside.fetch_sub(1);
      });
}

TEST_CASE(
    "subscription: a self-cancelling handler's captures are destroyed when "
    "run_one returns",
    "[subscription]") {
  auto probe_state = std::make_shared<Probe::Shared>();
  Subscription sub;
  auto bus = make_bus({.execution = Execution::kManual});
  sub = subscribe_self_cancelling(*bus, sub, probe_state);
  REQUIRE(bus->publish(Tick{}).ok());
  REQUIRE(bus->run_one());
  // No subscribe() or cancel() on the bus since the call.
  CHECK(probe_state->destroyed.load() == 1);
  REQUIRE(bus->shutdown().ok());
  CHECK(probe_state->destroyed.load() == 1);
  CHECK(probe_state->destroyed_while_inside.load() == 0);
}

TEST_CASE(
    "subscription: a self-cancelling handler's captures are destroyed when "
    "trigger returns",
    "[subscription]") {
  auto probe_state = std::make_shared<Probe::Shared>();
  Subscription sub;
  auto bus = make_bus();
  sub = subscribe_self_cancelling(*bus, sub, probe_state);
  bus->trigger(Tick{});
  CHECK(probe_state->destroyed.load() == 1);
  CHECK(probe_state->destroyed_while_inside.load() == 0);
}

TEST_CASE(
    "subscription: a self-cancelling handler's captures are destroyed after "
    "its call on a worker",
    "[subscription]") {
  auto probe_state = std::make_shared<Probe::Shared>();
  Subscription sub;
  auto bus = make_bus({.workers = 2});
  sub = subscribe_self_cancelling(*bus, sub, probe_state);
  REQUIRE(bus->publish(Tick{}).ok());
  SECTION("while the bus runs") {
    CHECK(wait_until([&] { return probe_state->destroyed.load() == 1; }));
  }
  SECTION("after shutdown") {
    REQUIRE(bus->shutdown().ok());
    CHECK(probe_state->destroyed.load() == 1);
  }
  CHECK(probe_state->destroyed_while_inside.load() == 0);
}

}  // namespace fnbus_subscription_test
