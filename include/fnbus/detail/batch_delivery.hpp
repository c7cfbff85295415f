#pragma once

// A batch on its way to its batch function (EventBus::subscribe_batch):
// an age cut or a retry of failed items, queued like any event so that it
// runs on a worker (it counts as published and dispatched under its own
// type name, "fnbus.batch"). Each batch function subscribes to
// BatchDelivery with a condition accepting its own deliveries only, so a
// delivery runs inside that function's subscription: cancelling it waits
// for the batch, as for any handler.
//
// A delivery ends exactly once: run by its function, or its items
// dead-lettered one by one, for that function -- when the bus dead-letters
// the delivery (shutdown), when publishing it is refused, or, if neither
// happened, when it is destroyed unrun (its function was cancelled:
// kFunctionGone).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"

#include "fnbus/clock.hpp"
#include "fnbus/dead_letter_reason.hpp"
#include "fnbus/event.hpp"
#include "fnbus/timers/scheduler.hpp"

namespace fnbus {

class EventBus;
struct HandlerError;

namespace detail {

// The items of one batch, however it is run.
class BatchWork {
 public:
  virtual ~BatchWork() = default;
  // Runs the batch through its function. Called once, by the function's
  // BatchDelivery handler.
  virtual void run() noexcept = 0;
  // The batch will not run: its items are dead-lettered for `reason`.
  virtual void lost(DeadLetterReason reason) noexcept = 0;
  // The batch function it belongs to (its condition compares this).
  [[nodiscard]] virtual const void* owner() const noexcept = 0;
};

// The queued event. Move-only: a copy would share (and could run) its
// batch twice.
struct BatchDelivery {
  static constexpr std::string_view kEventName = "fnbus.batch";

  explicit BatchDelivery(std::shared_ptr<BatchWork> batch) noexcept
      : work(std::move(batch)) {}
  BatchDelivery(BatchDelivery&&) noexcept = default;
  BatchDelivery& operator=(BatchDelivery&&) noexcept = default;
  BatchDelivery(const BatchDelivery&) = delete;
  BatchDelivery& operator=(const BatchDelivery&) = delete;

  std::shared_ptr<BatchWork> work;
};

}  // namespace detail

template <>
inline constexpr bool kCopyableEvent<detail::BatchDelivery> = false;

namespace detail {

// Who a batch function is, for its dead letters and error reports.
struct BatchFunctionInfo {
  std::string name;               // FunctionOptions::name, resolved
  std::uint32_t function_id = 0;  // its collector's metrics series
  std::function<void(const HandlerError&)> on_error;
};

// EventBus's side of batch functions (src/exec/bus_batches.cpp): a friend,
// so that batches use the bus's timers and sinks as its own retries do.
struct BusBatches {
  // Sets a timer on the bus's timers; false when refused (shutdown() has
  // begun, or no memory), and then `task` is gone without running.
  [[nodiscard]] static bool set_timer(EventBus& bus, TimePoint due,
                                      timers::TimerTask task) noexcept;
  // Counts a batch timer's end in metrics().timers.
  static void timer_ended(EventBus& bus, bool published) noexcept;
  // Queues `delivery` (waiting out a full queue for the block timeout, as
  // a timer's publish does); false, `delivery` kept, when refused.
  [[nodiscard]] static bool publish(EventBus& bus,
                                    BatchDelivery& delivery) noexcept;
  // Hands `event` to the dead-letter sink for `function`, counted in its
  // series (FunctionMetrics::dead_letter_reasons).
  static void dead_letter(EventBus& bus, const BatchFunctionInfo& function,
                          const EventRef& event, const EventTrace& trace,
                          DeadLetterReason reason, std::uint32_t attempts,
                          const absl::Status& last_error) noexcept;
  // `function` failed on `event` for good: its on_error, then the bus's
  // error sink.
  static void report_failure(EventBus& bus, const BatchFunctionInfo& function,
                             const EventRef& event, const EventTrace& trace,
                             const absl::Status& failure) noexcept;
  // The bus dead-letters a queued BatchDelivery (at shutdown): its items
  // go instead, for their function.
  static void delivery_lost(const void* delivery,
                            DeadLetterReason reason) noexcept {
    static_cast<const BatchDelivery*>(delivery)->work->lost(reason);
  }
};

}  // namespace detail
}  // namespace fnbus
