// The flash sale: order chains that survive a saturated queue.
//
// Shoppers on other threads publish PageViewed events as fast as the bus
// takes them, into a small queue with OverflowPolicy::kBlock: the queue is
// full nearly all the time, and every external publish waits for a slot.
// Meanwhile the checkout publishes 1000 OrderPlaced events, and each
// order's handlers publish its follow-ups from inside the handler
// (see the chain in parts.hpp).
//
// A handler's follow-up must not wait for a slot (with every worker doing
// so, nobody would free one), and it must not be refused either, or the
// order's chain breaks. With BusConfig::follow_up_headroom (1024 per
// worker by default) the worker keeps what its handlers publish while the
// queue is full, and runs it before it takes anything else from the queue:
// every chain completes. The control run sets the headroom to 0: the same
// follow-ups get ResourceExhausted at once and most chains break (how many
// varies from run to run; only the run with headroom is checked).

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "checks.hpp"
#include "fmt/core.h"
#include "parts.hpp"

#include "fnbus/fnbus.hpp"

namespace shop {
namespace {

constexpr std::int64_t kOrders = 1000;
constexpr std::int64_t kShoppers = 2;  // threads publishing PageViewed
constexpr std::size_t kQueueCapacity = 256;

// What the handlers of one sale share. They run on the workers, so
// everything is atomic; relaxed is enough for counters read after
// shutdown() (which joins the workers).
struct Sale {
  // Per order: how many of PaymentCaptured and StockReserved were handled.
  std::vector<std::atomic<int>> steps =
      std::vector<std::atomic<int>>(static_cast<std::size_t>(kOrders));
  std::atomic<std::int64_t> orders_handled{0};  // OrderPlaced dispatched
  std::atomic<std::int64_t> confirmed{0};       // OrderConfirmed handled
  std::atomic<std::int64_t> page_views{0};      // PageViewed published
  std::atomic<std::uint64_t> refused{0};        // follow-ups refused
  std::atomic<std::uint64_t> last_pick{0};      // recommend_products' result
};

// --- Handlers. Returning the publish Status makes a refused follow-up a
// failure of the handler: the chain is broken, and the error sink hears.

absl::Status request_payment(fnbus::EventBus& bus, const OrderPlaced& order) {
  return bus.publish(PaymentRequested{.order_id = order.order_id,
                                      .amount_cents = order.amount_cents});
}

absl::Status reserve_stock(fnbus::EventBus& bus, Sale& sale,
                           const OrderPlaced& order) {
  sale.orders_handled.fetch_add(1, std::memory_order_relaxed);
  return bus.publish(StockReserved{.order_id = order.order_id});
}

absl::Status capture_payment(fnbus::EventBus& bus,
                             const PaymentRequested& request) {
  return bus.publish(PaymentCaptured{.order_id = request.order_id});
}

// PaymentCaptured and StockReserved may be handled in either order, on
// either worker: whichever comes second confirms the order.
absl::Status complete_step(fnbus::EventBus& bus, Sale& sale,
                           std::int64_t order_id) {
  // acq_rel: the second step sees the first one's writes.
  if (sale.steps[static_cast<std::size_t>(order_id - 1)].fetch_add(
          1, std::memory_order_acq_rel) == 1) {
    return bus.publish(OrderConfirmed{.order_id = order_id});
  }
  return absl::OkStatus();
}

void confirm_order(Sale& sale, const OrderConfirmed& /*order*/) {
  sale.confirmed.fetch_add(1, std::memory_order_relaxed);
}

// A page view costs a little work (ranking 64 products), so that the
// shoppers outpace the workers and keep the queue full.
void recommend_products(Sale& sale, const PageViewed& view) {
  std::uint64_t best = 0;
  for (std::uint64_t product = 0; product < 64; ++product) {
    const std::uint64_t score =
        (static_cast<std::uint64_t>(view.visitor_id) * 6364136223846793005ULL +
         product * 1442695040888963407ULL) >>
        33;
    if (score > best) best = score;
  }
  sale.last_pick.store(best, std::memory_order_relaxed);
}

fnbus::BusConfig sale_config(std::size_t headroom, Sale& sale) {
  fnbus::BusConfig config;
  config.queue_capacity = kQueueCapacity;
  config.workers = 2;
  config.overflow = fnbus::OverflowPolicy::kBlock;
  config.block_timeout = std::chrono::seconds(10);
  config.follow_up_headroom = headroom;
  config.error_sink = [&sale](const fnbus::HandlerError& error) {
    // Only the first refusal is printed: the control run has thousands.
    if (sale.refused.fetch_add(1, std::memory_order_relaxed) == 0) {
      fmt::print("  [error_sink] first refused follow-up: {} on {}: {}\n",
                 error.function_name, error.event_type, error.message);
    }
  };
  return config;
}

std::vector<fnbus::Subscription> subscribe_sale(fnbus::EventBus& bus,
                                                Sale& sale) {
  std::vector<fnbus::Subscription> subs;
  subs.push_back(bus.subscribe(
      [&bus](const OrderPlaced& order) { return request_payment(bus, order); },
      named("request_payment")));
  subs.push_back(bus.subscribe(
      [&bus, &sale](const OrderPlaced& order) {
        return reserve_stock(bus, sale, order);
      },
      named("reserve_stock")));
  subs.push_back(bus.subscribe(
      [&bus](const PaymentRequested& request) {
        return capture_payment(bus, request);
      },
      named("capture_payment")));
  subs.push_back(bus.subscribe(
      [&bus, &sale](const PaymentCaptured& paid) {
        return complete_step(bus, sale, paid.order_id);
      },
      named("mark_paid")));
  subs.push_back(bus.subscribe(
      [&bus, &sale](const StockReserved& reserved) {
        return complete_step(bus, sale, reserved.order_id);
      },
      named("mark_reserved")));
  subs.push_back(bus.subscribe(
      [&sale](const OrderConfirmed& order) { confirm_order(sale, order); },
      named("confirm_order")));
  subs.push_back(bus.subscribe(
      [&sale](const PageViewed& view) { recommend_products(sale, view); },
      named("recommend_products")));
  return subs;
}

// One shopper: publishes page views until asked to stop. Each publish
// waits (kBlock) for a free slot.
void shop_around(std::stop_token stop, fnbus::EventBus& bus, Sale& sale,
                 std::int64_t shopper) {
  for (std::int64_t n = 0; !stop.stop_requested(); ++n) {
    const PageViewed view{.visitor_id = shopper * 1'000'000'000 + n,
                          .product_id = n % 64};
    if (bus.publish(view).ok()) {
      sale.page_views.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

struct SaleResult {
  std::int64_t orders_accepted = 0;
  std::int64_t samples = 0;       // of the queue depth, during the sale
  std::int64_t full_samples = 0;  // of them, with the queue full
  std::int64_t confirmed = 0;
  std::int64_t page_views = 0;
  std::uint64_t refused = 0;
  bool all_orders_handled = false;
  absl::Status shutdown;
  fnbus::BusStats stats;
};

// Samples the queue depth every 100 us until asked to stop: how full the
// shoppers kept it.
void watch_queue(std::stop_token stop, const fnbus::EventBus& bus,
                 SaleResult& result) {
  while (!stop.stop_requested()) {
    ++result.samples;
    if (bus.stats().queue_depth >= kQueueCapacity) ++result.full_samples;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

// The checkout, on this thread: publishes the orders (waiting for slots
// like everybody else), then waits until each accepted one was handled.
void check_out(fnbus::EventBus& bus, Sale& sale, SaleResult& result) {
  for (std::int64_t id = 1; id <= kOrders; ++id) {
    const OrderPlaced order{.order_id = id, .amount_cents = 1'999 + id};
    if (bus.publish(order).ok()) ++result.orders_accepted;
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (sale.orders_handled.load(std::memory_order_relaxed) <
             result.orders_accepted &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  result.all_orders_handled =
      sale.orders_handled.load(std::memory_order_relaxed) ==
      result.orders_accepted;
}

SaleResult run_sale(std::size_t headroom, Checks& check) {
  SaleResult result;
  Sale sale;
  auto bus_or = fnbus::EventBus::Create(sale_config(headroom, sale));
  if (!bus_or.ok()) {
    check(false, "cannot start the bus: " + bus_or.status().ToString());
    return result;
  }
  fnbus::EventBus& bus = **bus_or;
  const std::vector<fnbus::Subscription> subscriptions =
      subscribe_sale(bus, sale);
  {
    std::vector<std::jthread> shoppers;
    for (std::int64_t shopper = 0; shopper < kShoppers; ++shopper) {
      shoppers.emplace_back(shop_around, std::ref(bus), std::ref(sale),
                            shopper);
    }
    // The monitor writes result.samples and full_samples, which are read
    // after its jthread has joined.
    const std::jthread monitor(watch_queue, std::cref(bus), std::ref(result));
    check_out(bus, sale, result);
  }  // ~jthread: asks the monitor and each shopper to stop and joins them
  result.shutdown = bus.shutdown(fnbus::ShutdownMode::kDrain);
  result.stats = bus.stats();
  result.confirmed = sale.confirmed.load(std::memory_order_relaxed);
  result.page_views = sale.page_views.load(std::memory_order_relaxed);
  result.refused = sale.refused.load(std::memory_order_relaxed);
  return result;
}

void print_result(std::size_t headroom, const SaleResult& result) {
  fmt::print(
      "follow_up_headroom={}: {}/{} order chains complete, {} broken; {} "
      "follow-ups refused; queue full in {} of {} samples; {} page views\n",
      headroom, result.confirmed, kOrders, kOrders - result.confirmed,
      result.refused, result.full_samples, result.samples, result.page_views);
  print_stats("  stats", result.stats);
}

}  // namespace

bool run_flash_sale() {
  fmt::print(
      "\n== flash sale: {} orders while {} shoppers keep a {}-slot kBlock "
      "queue full ==\n",
      kOrders, kShoppers, kQueueCapacity);
  Checks check("flash sale");
  // The default headroom: 1024 follow-ups per worker.
  const std::size_t headroom = fnbus::BusConfig{}.follow_up_headroom;
  const SaleResult sale = run_sale(headroom, check);
  print_result(headroom, sale);
  check(sale.orders_accepted == kOrders, "every order accepted");
  check(sale.all_orders_handled, "every order handled within a minute");
  check(sale.confirmed == kOrders, "every order chain complete");
  check(sale.refused == 0 && sale.stats.failed == 0, "no follow-up refused");
  check(sale.shutdown.ok(), "shutdown: " + sale.shutdown.ToString());
  check(
      sale.stats.published == sale.stats.dispatched + sale.stats.dead_lettered,
      "published == dispatched + dead_lettered");
  check(sale.stats.dead_lettered == 0, "nothing dead-lettered");

  // The control: no headroom. How many chains break depends on timing.
  fmt::print("control, without headroom:\n");
  const SaleResult control = run_sale(0, check);
  print_result(0, control);
  check(control.shutdown.ok(),
        "control shutdown: " + control.shutdown.ToString());
  check(control.stats.published ==
            control.stats.dispatched + control.stats.dead_lettered,
        "control: published == dispatched + dead_lettered");
  return check.report();
}

}  // namespace shop
