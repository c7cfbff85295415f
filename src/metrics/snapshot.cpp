#include "fnbus/metrics/snapshot.hpp"

#include <algorithm>
#include <string_view>

namespace fnbus::metrics {

void EventTypeMetrics::merge(const EventTypeMetrics& other) {
  published += other.published;
  rejected += other.rejected;
  dispatched += other.dispatched;
  unhandled += other.unhandled;
  dead_lettered += other.dead_lettered;
  queue_wait.merge(other.queue_wait);
  end_to_end.merge(other.end_to_end);
}

void FunctionMetrics::merge(const FunctionMetrics& other) {
  delivered += other.delivered;
  failed += other.failed;
  filtered += other.filtered;
  duplicates += other.duplicates;
  rejected += other.rejected;
  fell_back += other.fell_back;
  timed_out += other.timed_out;
  retried += other.retried;
  dead_lettered += other.dead_lettered;
  dead_letter_reasons.merge(other.dead_letter_reasons);
  throttled += other.throttled;
  late += other.late;
  run_time.merge(other.run_time);
  breakers.closed += other.breakers.closed;
  breakers.half_open += other.breakers.half_open;
  breakers.open += other.breakers.open;
  breaker_opened += other.breaker_opened;
  breaker_half_opened += other.breaker_half_opened;
  breaker_closed += other.breaker_closed;
}

std::optional<resilience::BreakerState> FunctionMetrics::breaker_state()
    const noexcept {
  if (breakers.open > 0) return resilience::BreakerState::kOpen;
  if (breakers.half_open > 0) return resilience::BreakerState::kHalfOpen;
  if (breakers.closed > 0) return resilience::BreakerState::kClosed;
  return std::nullopt;
}

bool FunctionMetrics::has_breaker_metrics() const noexcept {
  return breakers.closed + breakers.half_open + breakers.open + breaker_opened +
             breaker_half_opened + breaker_closed >
         0;
}

EventTypeMetrics MetricsSnapshot::total_events() const {
  EventTypeMetrics total;
  for (const EventTypeMetrics& e : events) total.merge(e);
  return total;
}

FunctionMetrics MetricsSnapshot::total_functions() const {
  FunctionMetrics total;
  for (const FunctionMetrics& f : functions) total.merge(f);
  return total;
}

const EventTypeMetrics* MetricsSnapshot::find_event(
    std::string_view event) const noexcept {
  const auto it =
      std::find_if(events.begin(), events.end(),
                   [&](const EventTypeMetrics& e) { return e.event == event; });
  return it == events.end() ? nullptr : &*it;
}

const FunctionMetrics* MetricsSnapshot::find_function(
    std::string_view event, std::string_view function) const noexcept {
  const auto it = std::find_if(
      functions.begin(), functions.end(), [&](const FunctionMetrics& f) {
        return f.event == event && f.function == function;
      });
  return it == functions.end() ? nullptr : &*it;
}

}  // namespace fnbus::metrics
