// VersionedHandler (mesh/versioned_handler.hpp) through a real bus: deploy,
// weight, promote and rollback with exact counts on a manual bus; the
// automatic rollback of a failing and of a slow canary; sticky keys and a
// throwing key extractor; the request/reply form with serve(); and, on a
// pool of two workers, deploys/promotions/rollbacks and an automatic
// rollback while producers publish, every event handled exactly once.

#include "fnbus/mesh/versioned_handler.hpp"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../support/bus_support.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"
#include "fnbus/mesh/call.hpp"
#include "fnbus/testing/manual_clock.hpp"

namespace fnbus_versioned_handler_test {

using fnbus::Context;
using fnbus::EventBus;
using fnbus::Execution;
using fnbus::HandlerError;
using fnbus::mesh::RollbackReport;
using fnbus::mesh::VersionedFunction;
using fnbus::mesh::VersionedHandler;
using fnbus::mesh::VersionId;
using fnbus::testing::ManualClock;
using fnbus::testing_support::make_bus;
using fnbus::testing_support::message_of;
using namespace std::chrono_literals;

struct Order {
  int seq = 0;
  std::string key;
  // Published after the automatic rollback was reported.
  bool after_rollback = false;
};

using Orders = VersionedHandler<Order>;

// Publishes `count` orders numbered from `first` and runs them.
void run_orders(EventBus& bus, int first, int count) {
  for (int i = first; i < first + count; ++i) {
    REQUIRE(bus.publish(Order{.seq = i}).ok());
  }
  REQUIRE(bus.run_until_idle() == static_cast<std::size_t>(count));
}

// Publishes and runs orders 0, 1, ... one at a time until `reports` has
// one (at most 4000); returns how many ran.
int run_until_rollback(EventBus& bus,
                       const std::vector<RollbackReport>& reports) {
  int seq = 0;
  while (reports.empty() && seq < 4000) {
    REQUIRE(bus.publish(Order{.seq = seq++}).ok());
    REQUIRE(bus.run_one());
  }
  REQUIRE(reports.size() == 1);
  return seq;
}

// The calls stats() recorded for version `id`.
std::uint64_t calls_of(const VersionedFunction::Stats& stats, VersionId id) {
  REQUIRE(id >= 1);
  REQUIRE(id <= stats.versions.size());
  return stats.versions[id - 1].calls;
}

template <typename F>
Orders make_orders(F stable, Orders::Options options) {
  auto orders = Orders::Create("v1", std::move(stable), std::move(options));
  REQUIRE(orders.ok());
  return *std::move(orders);
}

TEST_CASE(
    "versioned_handler: deploy, weight, promote and rollback on a manual "
    "bus with exact counts",
    "[mesh][versioned_handler]") {
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus({.execution = Execution::kManual, .clock = clock});
  std::vector<int> handled(4, 0);  // by version id
  const auto version = [&](VersionId id) {
    return [&handled, id](const Order&) { ++handled[id]; };
  };
  auto created =
      Orders::Create("v1", version(1), {.clock = &bus->clock(), .seed = 7});
  REQUIRE(created.ok());
  Orders orders = *created;
  auto sub = bus->subscribe<Order>(orders, {.name = "pack"});

  run_orders(*bus, 0, 1000);
  CHECK(handled[1] == 1000);

  auto v2 = orders.deploy_canary("v2", version(2), 0.25);
  REQUIRE(v2.ok());
  CHECK(*v2 == 2);
  run_orders(*bus, 1000, 4000);
  CHECK(handled[1] + handled[2] == 5000);
  // A quarter of 4000 (seeded: the same figure every run).
  CHECK(handled[2] > 800);
  CHECK(handled[2] < 1200);
  VersionedFunction::Stats stats = orders.stats();
  CHECK(calls_of(stats, 1) == static_cast<std::uint64_t>(handled[1]));
  CHECK(calls_of(stats, 2) == static_cast<std::uint64_t>(handled[2]));
  CHECK(stats.versions[1].canary);

  // A second canary while one is live, an empty handler: refused.
  CHECK(orders.deploy_canary("v3", version(3), 0.5).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(orders.deploy_canary("v3", Orders::Handler(), 0.5).status().code() ==
        absl::StatusCode::kInvalidArgument);

  // Rollback in one call: v2 takes nothing more.
  REQUIRE(orders.rollback().ok());
  const int v2_before = handled[2];
  run_orders(*bus, 5000, 1000);
  CHECK(handled[2] == v2_before);
  CHECK(orders.set_weight(0.5).code() == absl::StatusCode::kFailedPrecondition);

  // Weight 0, then 1, then promotion: v3 takes everything, v1 nothing.
  auto v3 = orders.deploy_canary("v3", version(3), 0.0);
  REQUIRE(v3.ok());
  CHECK(*v3 == 3);  // the refused deploys took no id
  run_orders(*bus, 6000, 500);
  CHECK(handled[3] == 0);
  REQUIRE(orders.set_weight(1.0).ok());
  run_orders(*bus, 6500, 500);
  CHECK(handled[3] == 500);
  REQUIRE(orders.promote().ok());
  const int v1_before = handled[1];
  run_orders(*bus, 7000, 500);
  CHECK(handled[1] == v1_before);
  CHECK(handled[3] == 1000);

  stats = orders.stats();
  CHECK(stats.deploys == 2);
  CHECK(stats.promotions == 1);
  CHECK(stats.rollbacks == 1);
  CHECK(stats.automatic_rollbacks == 0);
  CHECK(stats.table.stable == 3);
  for (VersionId id = 1; id <= 3; ++id) {
    CHECK(calls_of(stats, id) == static_cast<std::uint64_t>(handled[id]));
  }
  CHECK(handled[1] + handled[2] + handled[3] == 7500);
}

TEST_CASE(
    "versioned_handler: a canary failing 20% is rolled back by itself, "
    "reported once, and takes no event after",
    "[mesh][versioned_handler]") {
  // A manual clock: only the failure rule can fire, whatever the machine.
  auto bus = make_bus({.execution = Execution::kManual,
                       .clock = std::make_shared<ManualClock>(),
                       .error_sink = [](const HandlerError&) {}});
  std::vector<RollbackReport> reports;
  int stable_calls = 0;
  int canary_calls = 0;
  int canary_failures = 0;
  auto created = Orders::Create(
      "v1", [&](const Order&) { ++stable_calls; },
      {.on_rollback = [&](const RollbackReport& r) { reports.push_back(r); },
       .clock = &bus->clock()});
  REQUIRE(created.ok());
  Orders orders = *created;
  auto sub = bus->subscribe<Order>(orders);
  REQUIRE(orders
              .deploy_canary(
                  "v2",
                  [&](const Order& order) -> absl::Status {
                    ++canary_calls;
                    if (order.seq % 5 != 0) return absl::OkStatus();
                    ++canary_failures;
                    return absl::UnavailableError("v2 is broken");
                  },
                  0.5)
              .ok());
  const int seq = run_until_rollback(*bus, reports);
  CHECK(reports[0].canary == 2);
  CHECK(reports[0].canary_label == "v2");
  CHECK(reports[0].stable_label == "v1");
  CHECK(reports[0].reason.find("failure rate") != std::string::npos);
  CHECK(canary_failures > 0);

  const int canary_at_rollback = canary_calls;
  run_orders(*bus, seq, 2000);
  CHECK(canary_calls == canary_at_rollback);
  CHECK(reports.size() == 1);

  const VersionedFunction::Stats stats = orders.stats();
  CHECK(stats.automatic_rollbacks == 1);
  CHECK(stats.table.canary == fnbus::mesh::kNoVersion);
  CHECK(calls_of(stats, 1) == static_cast<std::uint64_t>(stable_calls));
  CHECK(calls_of(stats, 2) == static_cast<std::uint64_t>(canary_calls));
  CHECK(stats.versions[1].failures ==
        static_cast<std::uint64_t>(canary_failures));
  CHECK(stable_calls + canary_calls == seq + 2000);
  CHECK(bus->stats().published == static_cast<std::uint64_t>(seq + 2000));

  const std::string text = fnbus::mesh::prometheus_text("pack", stats);
  CHECK(text.find("fnbus_version_calls_total{function=\"pack\",version=\"v2\","
                  "version_id=\"2\"} " +
                  std::to_string(canary_calls) + "\n") != std::string::npos);
  CHECK(text.find("fnbus_version_changes_total{function=\"pack\",kind="
                  "\"automatic_rollback\"} 1\n") != std::string::npos);
  CHECK(text.find("fnbus_version_canary_weight{function=\"pack\"} 0\n") !=
        std::string::npos);
}

TEST_CASE(
    "versioned_handler: a slow canary is rolled back on p99 latency read on "
    "the clock around the handler",
    "[mesh][versioned_handler]") {
  auto clock = std::make_shared<ManualClock>();
  auto bus = make_bus({.execution = Execution::kManual, .clock = clock});
  std::vector<RollbackReport> reports;
  Orders orders = make_orders(
      [&](const Order&) { clock->advance(1ms); },
      {.canary = {.max_failure_rate_margin = 1.0},
       .on_rollback = [&](const RollbackReport& r) { reports.push_back(r); },
       .clock = &bus->clock()});
  auto sub = bus->subscribe<Order>(orders);
  REQUIRE(orders
              .deploy_canary(
                  "v2", [&](const Order&) { clock->advance(10ms); }, 0.5)
              .ok());
  const int seq = run_until_rollback(*bus, reports);
  CHECK(reports[0].reason.find("p99") != std::string::npos);
  const VersionedFunction::Stats stats = orders.stats();
  CHECK(stats.versions[1].failures == 0);
  CHECK(calls_of(stats, 1) + calls_of(stats, 2) ==
        static_cast<std::uint64_t>(seq));
}

TEST_CASE(
    "versioned_handler: sticky keys keep a key on one version, and a key "
    "extractor that throws: clear absl::Status, no version runs",
    "[mesh][versioned_handler]") {
  std::vector<std::string> errors;
  // A manual clock: every call takes 0 ns, so the latency rule cannot roll
  // the canary back (and move keys) on a slow machine.
  auto bus = make_bus({.execution = Execution::kManual,
                       .clock = std::make_shared<ManualClock>(),
                       .error_sink = [&](const HandlerError& error) {
                         errors.emplace_back(error.message);
                       }});
  std::map<std::string, std::vector<int>> versions_of;  // key -> versions
  Orders orders =
      make_orders([&](const Order& o) { versions_of[o.key].push_back(1); },
                  {.clock = &bus->clock(), .key = [](const Order& o) {
                     if (o.key.empty())
                       throw std::runtime_error("order without a key");
                     return o.key;
                   }});
  auto sub = bus->subscribe<Order>(orders);
  REQUIRE(orders
              .deploy_canary(
                  "v2",
                  [&](const Order& o) { versions_of[o.key].push_back(2); }, 0.5)
              .ok());
  for (int round = 0; round < 10; ++round) {
    for (int k = 0; k < 40; ++k) {
      REQUIRE(
          bus->publish(Order{.seq = k, .key = "k" + std::to_string(k)}).ok());
    }
  }
  REQUIRE(bus->run_until_idle() == 400);
  int on_canary = 0;
  for (const auto& [key, versions] : versions_of) {
    CHECK(versions.size() == 10);
    for (const int v : versions) CHECK(v == versions.front());
    on_canary += versions.front() == 2 ? 1 : 0;
  }
  CHECK(versions_of.size() == 40);
  // Both versions got keys (half of 40, seeded by the labels).
  CHECK(on_canary > 5);
  CHECK(on_canary < 35);

  const auto before = orders.stats();
  REQUIRE(bus->publish(Order{.seq = 1}).ok());
  REQUIRE(bus->run_until_idle() == 1);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].find("key extractor threw (order without a key)") !=
        std::string::npos);
  CHECK(versions_of.count("") == 0);
  const auto after = orders.stats();
  CHECK(calls_of(after, 1) == calls_of(before, 1));
  CHECK(calls_of(after, 2) == calls_of(before, 2));
}

TEST_CASE(
    "versioned_handler: a version that throws is recorded as failed and the "
    "bus sees the throw",
    "[mesh][versioned_handler]") {
  std::vector<std::string> errors;
  // A manual clock: every call takes 0 ns, so the latency rule cannot roll
  // the canary back (and move keys) on a slow machine.
  auto bus = make_bus({.execution = Execution::kManual,
                       .clock = std::make_shared<ManualClock>(),
                       .error_sink = [&](const HandlerError& error) {
                         errors.emplace_back(error.message);
                       }});
  Orders orders = make_orders(
      [](const Order& o) {
        if (o.seq == 1) throw std::runtime_error("v1 threw");
      },
      {.clock = &bus->clock()});
  auto sub = bus->subscribe<Order>(orders);
  run_orders(*bus, 0, 3);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == "v1 threw");
  const VersionedFunction::Stats stats = orders.stats();
  CHECK(stats.versions[0].calls == 3);
  CHECK(stats.versions[0].failures == 1);
}

struct GetQuote {
  int quantity = 1;
};
struct Quote {
  long cents = 0;
  std::string version;
};

TEST_CASE("versioned_handler: the request/reply form serves calls by version",
          "[mesh][versioned_handler]") {
  // A manual clock: no latency rollback on a slow machine.
  auto bus = make_bus({.execution = Execution::kManual,
                       .clock = std::make_shared<ManualClock>()});
  using Quotes = VersionedHandler<GetQuote, absl::StatusOr<Quote>>;
  auto created = Quotes::Create("v1",
                                [](const GetQuote& q) -> absl::StatusOr<Quote> {
                                  return Quote{.cents = 100L * q.quantity,
                                               .version = "v1"};
                                },
                                {.clock = &bus->clock()});
  REQUIRE(created.ok());
  Quotes quotes = *created;
  auto service = bus->serve(quotes);
  const auto ask = [&](int quantity) {
    auto future = bus->call<Quote>(GetQuote{.quantity = quantity});
    bus->run_until_idle();
    return future.get();
  };
  absl::StatusOr<Quote> quote = ask(2);
  REQUIRE(quote.ok());
  CHECK(quote->cents == 200);
  CHECK(quote->version == "v1");

  // A canary returning a plain Reply, with Context, at weight 1.
  REQUIRE(quotes
              .deploy_canary(
                  "v2",
                  [](const GetQuote& q, Context&) {
                    return Quote{.cents = 90L * q.quantity, .version = "v2"};
                  },
                  1.0)
              .ok());
  quote = ask(2);
  REQUIRE(quote.ok());
  CHECK(quote->version == "v2");
  CHECK(quote->cents == 180);
  REQUIRE(quotes.rollback().ok());
  quote = ask(1);
  REQUIRE(quote.ok());
  CHECK(quote->version == "v1");
  const VersionedFunction::Stats stats = quotes.stats();
  CHECK(calls_of(stats, 1) == 2);
  CHECK(calls_of(stats, 2) == 1);
}

// Publishes orders [first, first + count) from this thread, retrying a
// full queue; marks those published after `rolled_back` was seen. Counts
// other refusals in `refused` (no Catch2 assertion off the test thread).
void produce(EventBus& bus, int first, int count,
             const std::atomic<bool>* rolled_back, std::atomic<int>& refused) {
  for (int i = first; i < first + count; ++i) {
    // acquire: pairs with the observer's release store, so an order marked
    // here is routed on a snapshot without the canary.
    const bool after =
        rolled_back != nullptr && rolled_back->load(std::memory_order_acquire);
    while (true) {
      Order order{.seq = i, .after_rollback = after};
      const absl::Status status = bus.try_publish(order);
      if (status.ok()) break;
      if (status.code() != absl::StatusCode::kResourceExhausted) {
        refused.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      std::this_thread::yield();
    }
  }
}

TEST_CASE(
    "versioned_handler: deploys, promotions and rollbacks while two "
    "producers publish on a pool of two workers: each event handled once",
    "[mesh][versioned_handler][concurrent]") {
  constexpr int kPerProducer = 10'000;
  constexpr int kEvents = 2 * kPerProducer;
  constexpr int kMaxVersions = 2'000;
  auto bus = make_bus({.workers = 2});
  ManualClock latency_clock;  // never advanced: latency plays no part
  std::vector<std::atomic<int>> seen(kEvents);
  std::vector<std::atomic<int>> handled(kMaxVersions + 2);  // by version id
  const auto version = [&](VersionId id) {
    return [&seen, &handled, id](const Order& order) {
      // Relaxed: read after shutdown() joined the workers.
      seen[order.seq].fetch_add(1, std::memory_order_relaxed);
      handled[id].fetch_add(1, std::memory_order_relaxed);
    };
  };
  Orders orders = make_orders(
      version(1),
      {.canary = {.max_p99_ratio = std::numeric_limits<double>::infinity()},
       .clock = &latency_clock});
  auto sub = bus->subscribe<Order>(orders);

  std::atomic<bool> producing{true};
  std::atomic<int> change_errors{0};
  std::atomic<int> refused{0};
  int changes = 0;  // read after join()
  std::thread changer([&] {
    for (VersionId id = 2;
         id < kMaxVersions && producing.load(std::memory_order_relaxed); ++id) {
      const bool ok =
          orders.deploy_canary("v" + std::to_string(id), version(id), 0.5)
              .ok() &&
          orders.set_weight(0.3).ok() &&
          (id % 2 == 0 ? orders.promote() : orders.rollback()).ok();
      if (!ok) change_errors.fetch_add(1, std::memory_order_relaxed);
      ++changes;
    }
  });
  {
    std::jthread a([&] { produce(*bus, 0, kPerProducer, nullptr, refused); });
    std::jthread b(
        [&] { produce(*bus, kPerProducer, kPerProducer, nullptr, refused); });
  }
  producing.store(false, std::memory_order_relaxed);
  changer.join();
  REQUIRE(bus->shutdown().ok());
  CHECK(refused.load() == 0);
  CHECK(change_errors.load() == 0);

  for (int i = 0; i < kEvents; ++i) {
    if (seen[i].load() != 1)
      FAIL("order " << i << " handled " << seen[i] << "x");
  }
  const VersionedFunction::Stats stats = orders.stats();
  CHECK(stats.deploys == static_cast<std::uint64_t>(changes));
  CHECK(stats.automatic_rollbacks == 0);
  std::uint64_t total = 0;
  for (const VersionedFunction::VersionStats& v : stats.versions) {
    CHECK(v.calls == static_cast<std::uint64_t>(handled[v.id].load()));
    CHECK(v.label == "v" + std::to_string(v.id));
    total += v.calls;
  }
  CHECK(total == kEvents);
  INFO("changes made while publishing: " << changes);
  CHECK(changes > 0);
}

TEST_CASE(
    "versioned_handler: a canary failing 20% under concurrent publishing is "
    "rolled back by itself, and no event published after reaches it",
    "[mesh][versioned_handler][concurrent]") {
  constexpr int kPerProducer = 5'000;
  constexpr int kEvents = 2 * kPerProducer;
  auto bus = make_bus({.workers = 2, .error_sink = [](const HandlerError&) {}});
  ManualClock latency_clock;
  std::vector<std::atomic<int>> seen(kEvents);
  std::atomic<int> stable_calls{0};
  std::atomic<int> canary_calls{0};
  std::atomic<int> canary_after_rollback{0};
  std::atomic<bool> rolled_back{false};
  std::atomic<int> reports{0};
  std::atomic<int> refused{0};
  Orders orders = make_orders(
      [&](const Order& order) {
        seen[order.seq].fetch_add(1, std::memory_order_relaxed);
        stable_calls.fetch_add(1, std::memory_order_relaxed);
      },
      {.on_rollback =
           [&](const RollbackReport&) {
             reports.fetch_add(1, std::memory_order_relaxed);
             // release: the snapshot without the canary, published before
             // this call, is seen by whoever sees the flag.
             rolled_back.store(true, std::memory_order_release);
           },
       .clock = &latency_clock});
  auto sub = bus->subscribe<Order>(orders);
  REQUIRE(orders
              .deploy_canary(
                  "v2",
                  [&](const Order& order) -> absl::Status {
                    seen[order.seq].fetch_add(1, std::memory_order_relaxed);
                    canary_calls.fetch_add(1, std::memory_order_relaxed);
                    if (order.after_rollback) {
                      canary_after_rollback.fetch_add(
                          1, std::memory_order_relaxed);
                    }
                    return order.seq % 5 == 0 ? absl::UnavailableError("broken")
                                              : absl::OkStatus();
                  },
                  0.5)
              .ok());
  {
    std::jthread a(
        [&] { produce(*bus, 0, kPerProducer, &rolled_back, refused); });
    std::jthread b([&] {
      produce(*bus, kPerProducer, kPerProducer, &rolled_back, refused);
    });
  }
  REQUIRE(bus->shutdown().ok());
  CHECK(refused.load() == 0);

  for (int i = 0; i < kEvents; ++i) {
    if (seen[i].load() != 1)
      FAIL("order " << i << " handled " << seen[i] << "x");
  }
  CHECK(reports.load() == 1);
  CHECK(canary_after_rollback.load() == 0);
  const VersionedFunction::Stats stats = orders.stats();
  CHECK(stats.automatic_rollbacks == 1);
  CHECK(calls_of(stats, 1) == static_cast<std::uint64_t>(stable_calls.load()));
  CHECK(calls_of(stats, 2) == static_cast<std::uint64_t>(canary_calls.load()));
  CHECK(stable_calls.load() + canary_calls.load() == kEvents);
  CHECK(bus->stats().published == static_cast<std::uint64_t>(kEvents));
}

}  // namespace fnbus_versioned_handler_test
