// The outbox: events the bus refuses stay with the caller.
//
// publish(event) takes the event by value: when the bus refuses it (a
// full queue under kReject, a timeout under kBlock, a bus shutting down),
// the event is gone. try_publish(event) takes it by reference and moves
// from it only when the bus accepts it: on any refusal `event` still holds
// what it held, so the caller can keep it -- in its own outbox -- and
// publish it again later.
//
// The mail service is down while the checkout issues 100 invoices
// (InvoiceIssued is move-only: it owns its Invoice). send_invoice waits for
// the mail service, so the single worker waits in it and the 16-slot queue
// fills up; the bus refuses what follows and the checkout keeps it. When
// the mail service is back, the checkout flushes its outbox until it is
// empty. Every invoice is sent exactly once, whole, and in order.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "checks.hpp"
#include "fmt/core.h"
#include "parts.hpp"

#include "fnbus/fnbus.hpp"

namespace shop {
namespace {

constexpr std::int64_t kInvoices = 100;
constexpr std::size_t kQueueCapacity = 16;

// Events the bus refused, kept by the caller and published again later,
// oldest first. (Keep it in a database table to survive a restart.)
template <typename E>
class Outbox {
 public:
  // Publishes `event` after the events kept before it; keeps it if the
  // bus refuses it, or if older events are still waiting.
  void publish(fnbus::EventBus& bus, E event) {
    if (flush(bus) && try_publish(bus, event)) return;
    kept_.push_back(std::move(event));
  }

  // Publishes the kept events, oldest first, until the bus refuses one
  // (which stays first). Returns true if the outbox is now empty.
  bool flush(fnbus::EventBus& bus) {
    while (!kept_.empty()) {
      if (!try_publish(bus, kept_.front())) return false;
      kept_.pop_front();  // moved from: the bus has it
    }
    return true;
  }

  [[nodiscard]] std::size_t size() const { return kept_.size(); }
  [[nodiscard]] bool empty() const { return kept_.empty(); }
  // How many times the bus refused an event.
  [[nodiscard]] std::uint64_t refused() const { return refused_; }

 private:
  bool try_publish(fnbus::EventBus& bus, E& event) {
    // On any error `event` is untouched; on OK it is moved from.
    if (bus.try_publish(event).ok()) return true;
    ++refused_;
    return false;
  }

  std::deque<E> kept_;
  std::uint64_t refused_ = 0;
};

// A stand-in for a mail provider that is down until bring_up().
class MailService {
 public:
  void wait_until_up() const {
    // acquire: pairs with the release store in bring_up().
    up_.wait(false, std::memory_order_acquire);
  }
  void bring_up() {
    // release: pairs with the acquire wait in wait_until_up().
    up_.store(true, std::memory_order_release);
    up_.notify_all();
  }

 private:
  std::atomic<bool> up_{false};
};

// What send_invoice sent, in order (under a mutex: handlers may run on
// several workers).
struct SentLog {
  std::mutex mutex;
  std::vector<std::int64_t> order_ids;
  std::int64_t damaged = 0;  // invoices missing or not matching the event
};

void send_invoice(MailService& mail, SentLog& log,
                  const InvoiceIssued& issued) {
  mail.wait_until_up();
  const bool whole = issued.invoice != nullptr &&
                     issued.invoice->order_id == issued.order_id &&
                     !issued.invoice->email.empty();
  std::lock_guard lock(log.mutex);
  log.order_ids.push_back(issued.order_id);
  if (!whole) ++log.damaged;
}

InvoiceIssued make_invoice(std::int64_t order_id) {
  return InvoiceIssued{
      .order_id = order_id,
      .invoice = std::make_unique<Invoice>(
          Invoice{.order_id = order_id,
                  .email = fmt::format("customer{}@example.com", order_id),
                  .amount_cents = 1'000 + order_id}),
  };
}

fnbus::BusConfig outbox_config() {
  fnbus::BusConfig config;
  config.queue_capacity = kQueueCapacity;
  config.workers = 1;
  config.overflow = fnbus::OverflowPolicy::kReject;  // the default
  return config;
}

// Flushes `outbox` until it is empty, backing off 1 ms between attempts
// (at most a minute). Returns the number of attempts.
int flush_until_empty(fnbus::EventBus& bus, Outbox<InvoiceIssued>& outbox) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::minutes(1);
  int attempts = 1;
  while (!outbox.flush(bus) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ++attempts;
  }
  return attempts;
}

void check_sent(Checks& check, SentLog& log) {
  std::lock_guard lock(log.mutex);
  std::vector<std::int64_t> expected;
  for (std::int64_t id = 1; id <= kInvoices; ++id) expected.push_back(id);
  check(log.order_ids == expected, "every invoice sent exactly once, in order");
  check(log.damaged == 0, "every invoice arrived whole");
}

}  // namespace

bool run_outbox() {
  fmt::print(
      "\n== outbox: {} invoices while the mail service is down ({}-slot "
      "queue, kReject) ==\n",
      kInvoices, kQueueCapacity);
  Checks check("outbox");
  auto bus_or = fnbus::EventBus::Create(outbox_config());
  if (!bus_or.ok()) {
    check(false, "cannot start the bus: " + bus_or.status().ToString());
    return check.report();
  }
  fnbus::EventBus& bus = **bus_or;
  MailService mail;
  SentLog log;
  const fnbus::Subscription sending = bus.subscribe(
      [&mail, &log](const InvoiceIssued& issued) {
        send_invoice(mail, log, issued);
      },
      named("send_invoice"));

  Outbox<InvoiceIssued> outbox;
  for (std::int64_t id = 1; id <= kInvoices; ++id) {
    outbox.publish(bus, make_invoice(id));
  }
  const std::size_t kept = outbox.size();
  const std::uint64_t refused_while_down = outbox.refused();
  fmt::print(
      "mail down: {} invoices queued, {} kept in the outbox, {} refusals\n",
      kInvoices - static_cast<std::int64_t>(kept), kept, refused_while_down);
  // One invoice in send_invoice, a full queue: the rest must be kept.
  check(kept + kQueueCapacity + 1 >= static_cast<std::size_t>(kInvoices),
        "the bus refused what the full queue could not take");

  mail.bring_up();
  const int attempts = flush_until_empty(bus, outbox);
  const absl::Status status = bus.shutdown(fnbus::ShutdownMode::kDrain);
  const fnbus::BusStats stats = bus.stats();
  fmt::print(
      "mail up: outbox emptied in {} flushes, {} more refusals; {} "
      "refusals in all\n",
      attempts, outbox.refused() - refused_while_down, outbox.refused());
  print_stats("outbox stats", stats);

  check(status.ok(), "shutdown: " + status.ToString());
  check(outbox.empty(), "outbox empty");
  check(stats.rejected == outbox.refused(), "rejected == refusals counted");
  check(stats.published == static_cast<std::uint64_t>(kInvoices) &&
            stats.delivered == static_cast<std::uint64_t>(kInvoices),
        "every invoice published and delivered once");
  check(stats.published == stats.dispatched + stats.dead_lettered &&
            stats.dead_lettered == 0 && stats.failed == 0,
        "nothing lost");
  check_sent(check, log);
  return check.report();
}

}  // namespace shop
