// Autoscaling: a checkout service whose pool follows a flash sale.
//
// OrderCreated events arrive at a steady 150/s; for one second a flash
// sale sends 1 500/s. Each order takes about 2 ms (a call to a payment
// gateway, simulated by sleeping). Two workers keep up with the steady
// load (30 % busy) but the sale needs about four; the Autoscaler, running
// the recommended SloGuard policy, grows the pool within a tick or two
// and shrinks it back once the sale is over.
//
//   autoscaling [--seconds N]     (default 4; the sale starts at 1 s)
//
// Prints one line per 100 ms tick (arrival rate, workers, queue, wait
// p99) and checks that every order was handled once and that the pool
// grew during the sale; exits with 1 otherwise.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "fmt/core.h"

#include "fnbus/fnbus.hpp"

namespace {

using namespace std::chrono_literals;

struct OrderCreated {
  std::uint64_t order_id = 0;
  std::int64_t amount_cents = 0;
};

void charge_card(const OrderCreated&) {
  std::this_thread::sleep_for(2ms);  // the payment gateway's round trip
}

// Orders per second at time t since the start.
double orders_per_second(std::chrono::duration<double> t) {
  const bool sale = t >= 1s && t < 2s;
  return sale ? 1'500.0 : 150.0;
}

// Publishes orders at orders_per_second() until `duration` has passed;
// returns how many were accepted.
std::uint64_t run_shop(fnbus::EventBus& bus,
                       std::chrono::duration<double> duration) {
  const auto start = std::chrono::steady_clock::now();
  auto next = start;
  std::uint64_t accepted = 0;
  for (std::uint64_t id = 1;; ++id) {
    const std::chrono::duration<double> t = next - start;
    if (t >= duration) break;
    std::this_thread::sleep_until(next);
    if (bus.publish(OrderCreated{.order_id = id, .amount_cents = 4'250}).ok()) {
      ++accepted;
    }
    next += std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(1.0 / orders_per_second(t)));
  }
  return accepted;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 4;
  if (argc == 3 && std::string_view(argv[1]) == "--seconds") {
    seconds = std::strtod(argv[2], nullptr);
  }
  if (!(seconds >= 2.5 && seconds <= 600)) {
    fmt::print(stderr, "usage: autoscaling [--seconds N], 2.5 <= N <= 600\n");
    return 2;
  }

  // The pool may grow to 16 workers; it starts with 2.
  auto bus_or =
      fnbus::EventBus::Create({.queue_capacity = 1 << 14,
                               .workers = 2,
                               .max_workers = 16,
                               .overflow = fnbus::OverflowPolicy::kBlock,
                               .block_timeout = 1s});
  if (!bus_or.ok()) {
    fmt::print(stderr, "cannot start the bus: {}\n",
               bus_or.status().ToString());
    return 1;
  }
  fnbus::EventBus& bus = **bus_or;
  std::atomic<std::uint64_t> charged{0};
  fnbus::Subscription subscription = bus.subscribe<OrderCreated>(
      [&charged](const OrderCreated& order) {
        charge_card(order);
        // relaxed: a count read after shutdown() joined the workers.
        charged.fetch_add(1, std::memory_order_relaxed);
      },
      {.name = "charge_card"});

  // SloGuard: the fewest workers whose predicted queue wait stays under
  // 20 ms for 99 % of orders (Erlang C on the measured arrival rate and
  // service time), and in a burst enough to clear the queue within one
  // SLO. A 1 s down-stabilisation window (30 s by default) so that the
  // shrink shows within this short run.
  auto policy = fnbus::scaling::SloGuard::Create(
      {.slo = {.wait_slo = 20ms, .epsilon = 0.01}});
  std::atomic<std::size_t> largest{0};
  auto autoscaler_or = fnbus::scaling::Autoscaler::Start(
      bus, *std::move(policy),
      {.tick = 100ms,
       .governor = {.min_workers = 2,
                    .max_workers = 16,
                    .down_stabilisation = 1s},
       .fast_window = 1s,
       .slow_window = 10s,
       .error_sink =
           [](const absl::Status& error) {
             fmt::print(stderr, "autoscaler: {}\n", error.ToString());
           },
       .on_tick =
           [&largest](const fnbus::scaling::AutoscalerTick& tick) {
             const auto& load = tick.load;
             fmt::print(
                 "tick {:3}  arrivals {:6.0f}/s  service {:4.1f} ms  queue "
                 "{:4}  wait p99 {:6.1f} ms  workers {:2} -> {:2}  ({})\n",
                 tick.number, load.arrival_rate_fast,
                 load.service_time_mean * 1e3, load.queue_depth,
                 load.wait_p99 * 1e3, tick.workers_before, tick.workers_after,
                 tick.governed.reason);
             // relaxed: only this (controller) thread writes it; read
             // after stop() joined the controller.
             if (tick.workers_after > largest.load(std::memory_order_relaxed)) {
               largest.store(tick.workers_after, std::memory_order_relaxed);
             }
           }});
  if (!autoscaler_or.ok()) {
    fmt::print(stderr, "cannot start the autoscaler: {}\n",
               autoscaler_or.status().ToString());
    return 1;
  }
  fnbus::scaling::Autoscaler& autoscaler = **autoscaler_or;

  const std::uint64_t accepted =
      run_shop(bus, std::chrono::duration<double>(seconds));
  autoscaler.stop();  // before the bus goes away
  const std::size_t final_size = bus.pool_stats().workers;
  if (absl::Status status = bus.shutdown(); !status.ok()) {
    fmt::print(stderr, "shutdown: {}\n", status.ToString());
    return 1;
  }

  const fnbus::scaling::AutoscalerStats stats = autoscaler.stats();
  fmt::print(
      "\norders accepted {}, charged {}; pool 2 -> at most {} -> {} workers "
      "({} resizes in {} ticks)\n",
      accepted, charged.load(), largest.load(), final_size, stats.resizes,
      stats.ticks);
  bool ok = true;
  if (charged.load() != accepted || bus.stats().dispatched != accepted) {
    fmt::print(stderr, "CHECK FAILED: every accepted order charged once\n");
    ok = false;
  }
  if (largest.load() <= 2) {
    fmt::print(stderr, "CHECK FAILED: the pool grew during the sale\n");
    ok = false;
  }
  return ok ? 0 : 1;
}
