#pragma once

// EventRecorder: subscribes to one event type and keeps what it sees, so
// that a test can assert on the events a handler published.

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "fnbus/event.hpp"
#include "fnbus/event_bus.hpp"
#include "fnbus/options.hpp"
#include "fnbus/subscription.hpp"
#include "fnbus/testing/detail/record_log.hpp"
#include "fnbus/testing/wait_result.hpp"

namespace fnbus::testing {

// Records copies of the events of type E dispatched on a bus, with each
// event's trace ids (Context::event_trace()). Works with any test
// framework; nothing here asserts.
//
//   fnbus::testing::EventRecorder<PaymentRequested> payments(*bus);
//   bus->publish(OrderCreated{...});
//   // Execution::kInline: the handlers have run when publish() returns.
//   REQUIRE(payments.size() == 1);
//   CHECK(payments.last().amount_cents == 2599);
//   // Thread pool: wait (real time, bounded) for the workers.
//   REQUIRE(payments.wait_for(1, 1s));
//
// The recorder is an ordinary subscriber named `name` (default
// "recorder"): it runs in subscription order with E's other handlers, is
// counted in stats() and metrics(), and stops an event from counting as
// unhandled. Subscribe it before the handler under test to record events
// even when that handler fails. An optional predicate selects the events to
// keep; it is called on the dispatching thread, without the recorder's
// lock, and must be thread-safe on a thread-pool bus.
//
// When: at dispatch, never at publish. An event a handler has published is
// in the recorder only once the bus has dispatched it: on a thread pool
// possibly later than the publishing handler's return; in kInline after
// the current event's handlers (breadth-first), still inside the outermost
// publish(); in kManual when run_one() / run_all() / run_until_idle()
// reaches it. To assert "the handler published X" before X runs, use
// kManual: run_one() the event under test, read stats().published (or
// queue_depth), then run_one() again to record X.
//
// In Execution::kInline and kManual the events are recorded before
// publish() / run_one() / run_until_idle() return: read size() directly.
// wait_for() is for the thread pool; it waits in real time (a ManualClock
// does not shorten it) and returns at once when enough events are there.
//
// Thread safety: every method from any thread; handlers run concurrently
// with the test's reads. Accessors return copies, never references into
// the recording. E's copy and move constructors run under the recorder's
// lock. Lifetime: destroying the recorder (or unsubscribe()) cancels the
// subscription first, waiting for a recording call running on another
// thread; the recorder may outlive its bus. Neither copyable nor movable
// (the subscribed handler points to it).
template <Event E>
class EventRecorder {
  static_assert(std::is_copy_constructible_v<E>,
                "fnbus::testing::EventRecorder<E> keeps copies of the events "
                "it records, so E must be copy-constructible. For a move-only "
                "event, subscribe a handler that records a copyable summary "
                "of it.");

 public:
  using Predicate = std::function<bool(const E&)>;

  // Subscribes to E on `bus`, recording every event.
  explicit EventRecorder(EventBus& bus, std::string name = "recorder")
      : EventRecorder(bus, Predicate{}, std::move(name)) {}
  // Subscribes to E on `bus`, recording the events for which `predicate`
  // returns true (all of them if `predicate` is empty).
  EventRecorder(EventBus& bus, Predicate predicate,
                std::string name = "recorder");

  EventRecorder(const EventRecorder&) = delete;
  EventRecorder& operator=(const EventRecorder&) = delete;
  ~EventRecorder() = default;  // subscription_ is destroyed first

  // Events recorded so far.
  [[nodiscard]] std::size_t size() const { return log_.size(); }
  [[nodiscard]] bool empty() const { return log_.empty(); }

  // Copies of the recorded events, oldest first.
  [[nodiscard]] std::vector<E> events() const;
  // Their trace ids, in the same order as events().
  [[nodiscard]] std::vector<EventTrace> traces() const;

  // A copy of the i-th (0-based) or the latest event, or of its trace.
  // Throw std::out_of_range when there is no such event.
  [[nodiscard]] E at(std::size_t i) const { return log_.at(i, owner()).event; }
  [[nodiscard]] E last() const { return log_.last(owner()).event; }
  [[nodiscard]] EventTrace trace_at(std::size_t i) const {
    return log_.at(i, owner()).trace;
  }
  [[nodiscard]] EventTrace last_trace() const {
    return log_.last(owner()).trace;
  }

  // Forgets what was recorded; recording goes on.
  void clear() { log_.clear(); }

  // Blocks until at least `count` events are recorded (counting since the
  // last clear()) or `timeout` of real time passes. The result converts to
  // bool and prints as, e.g., "expected 3 shop.OrderCreated events within
  // 1000ms, recorded 2: [...]", listing the events if E has an operator<<
  // or an fmt::formatter. Use it inside the assertion, so that the
  // framework prints it: `REQUIRE(recorder.wait_for(3, 1s));`.
  [[nodiscard]] WaitResult wait_for(
      std::size_t count,
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

  // Stops recording (cancels the subscription; see Subscription::cancel()
  // for when it waits). What was recorded stays. Idempotent.
  void unsubscribe() noexcept { subscription_.cancel(); }
  // True until unsubscribe().
  [[nodiscard]] bool subscribed() const noexcept {
    return subscription_.active();
  }

  // The function name the recorder subscribed with.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  struct Record {
    E event;
    EventTrace trace;
  };

  static std::string owner() {
    return "EventRecorder<" + std::string(event_type_name<E>()) + ">";
  }
  void record(const E& event, const Context& context);

  // Declared before subscription_, which is destroyed first: no recording
  // call runs once the members it touches go away.
  const std::string name_;
  const Predicate predicate_;
  detail::RecordLog<Record> log_;
  Subscription subscription_;
};

// ---------------------------------------------------------------------------

template <Event E>
EventRecorder<E>::EventRecorder(EventBus& bus, Predicate predicate,
                                std::string name)
    : name_(std::move(name)), predicate_(std::move(predicate)) {
  // Field by field: users' -Wextra builds would warn about the fields a
  // designated initialiser leaves out.
  FunctionOptions options;
  options.name = name_;
  subscription_ = bus.subscribe<E>(
      [this](const E& event, Context& context) { record(event, context); },
      std::move(options));
}

template <Event E>
void EventRecorder<E>::record(const E& event, const Context& context) {
  if (predicate_ && !predicate_(event)) return;
  log_.push(Record{event, context.event_trace()});
}

template <Event E>
std::vector<E> EventRecorder<E>::events() const {
  std::vector<E> out;
  for (const Record& record : log_.snapshot()) out.push_back(record.event);
  return out;
}

template <Event E>
std::vector<EventTrace> EventRecorder<E>::traces() const {
  std::vector<EventTrace> out;
  for (const Record& record : log_.snapshot()) out.push_back(record.trace);
  return out;
}

template <Event E>
WaitResult EventRecorder<E>::wait_for(std::size_t count,
                                      std::chrono::milliseconds timeout) const {
  const std::string noun = std::string(event_type_name<E>()) + " event";
  if constexpr (detail::Printable<E>) {
    return log_.wait_for(count, timeout, noun, [](const Record& record) {
      return detail::to_text(record.event);
    });
  } else {
    return log_.wait_for(count, timeout, noun, nullptr);
  }
}

}  // namespace fnbus::testing
