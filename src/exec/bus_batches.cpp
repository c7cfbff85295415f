// EventBus's side of batch functions (detail/batch_function.hpp): their
// timers, queued deliveries, dead letters and error reports go through the
// bus's own, as its retries' do (src/resilience/bus_retries.cpp).

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"

#include "fnbus/detail/batch_delivery.hpp"
#include "fnbus/event_bus.hpp"

namespace fnbus {

namespace detail {

bool BusBatches::set_timer(EventBus& bus, TimePoint due,
                           timers::TimerTask task) noexcept {
  try {
    return bus.timers_.schedule_at(due, std::move(task)).ok();
  } catch (...) {  // bad_alloc: no timer was set
    return false;
  }
}

void BusBatches::timer_ended(EventBus& bus, bool published) noexcept {
  if (published) {
    bus.timers_.count_fired();
  } else {
    bus.timers_.count_dead_lettered();
  }
}

bool BusBatches::publish(EventBus& bus, BatchDelivery& delivery) noexcept {
  // As a timer's publish: wait out a full queue for the block timeout.
  // The trace is set, so that TraceHooks::ambient is not asked on the
  // timer thread: a batch is a new correlation (its items have their own).
  const PublishOptions options{.overflow = OverflowPolicy::kBlock,
                               .trace = TraceContext{}};
  return bus.try_publish(delivery, options).ok();
}

void BusBatches::dead_letter(EventBus& bus, const BatchFunctionInfo& function,
                             const EventRef& event, const EventTrace& trace,
                             DeadLetterReason reason, std::uint32_t attempts,
                             const absl::Status& last_error) noexcept {
  bus.metrics_.count_dead_letter(function.function_id, reason);
  bus.dead_letter_sink_.call(DeadLetter{.event = event,
                                        .reason = reason,
                                        .trace = trace,
                                        .function = function.name,
                                        .attempts = attempts,
                                        .last_error = last_error});
}

void BusBatches::report_failure(EventBus& bus,
                                const BatchFunctionInfo& function,
                                const EventRef& event, const EventTrace& trace,
                                const absl::Status& failure) noexcept {
  const HandlerError error{
      .function_name = function.name,
      .event_type = event.type_name(),
      .code = failure.code(),
      .message =
          std::string_view(failure.message().data(), failure.message().size()),
      .trace = trace,
      .event = event,
      .context = Context(event.type_name(), function.name, trace)};
  call_guarded(function.on_error, error);  // the function's own first
  bus.error_sink_.call(error);
}

absl::Status batch_function_problems(const BatchOptions& batch,
                                     const FunctionOptions& options) {
  std::vector<std::string> problems;
  if (absl::Status status = check(batch); !status.ok()) {
    problems.emplace_back(status.message());
  }
  if (options.retry) {
    absl::StatusOr<resilience::RetryPolicy> policy =
        resilience::RetryPolicy::Create(*options.retry);
    if (!policy.ok()) problems.emplace_back(policy.status().message());
  }
  // The stages that wrap one call of one event; a batch call is neither.
  const std::pair<bool, const char*> unsupported[] = {
      {static_cast<bool>(options.idempotency_key), "idempotency_key"},
      {options.seen_store != nullptr, "seen_store"},
      {options.breaker.has_value(), "breaker"},
      {static_cast<bool>(options.fallback), "fallback"},
      {options.deadline.has_value(), "deadline"},
      {options.max_concurrency.has_value(), "max_concurrency"}};
  for (const auto& [set, field] : unsupported) {
    if (set) {
      problems.push_back(fmt::format(
          "FunctionOptions::{} is not supported by subscribe_batch(); leave "
          "it unset (a batch function takes name, on_error, when and retry)",
          field));
    }
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError("subscribe_batch(): " +
                                    absl::StrJoin(problems, "; "));
}

}  // namespace detail

}  // namespace fnbus
