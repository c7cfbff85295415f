#include "fnbus/metrics/snapshot.hpp"

#include <algorithm>
#include <string_view>

namespace fnbus::metrics {

EventTypeMetrics MetricsSnapshot::total_events() const {
  EventTypeMetrics total;
  for (const EventTypeMetrics& e : events) {
    total.published += e.published;
    total.rejected += e.rejected;
    total.dispatched += e.dispatched;
    total.unhandled += e.unhandled;
    total.dead_lettered += e.dead_lettered;
    total.queue_wait.merge(e.queue_wait);
    total.end_to_end.merge(e.end_to_end);
  }
  return total;
}

FunctionMetrics MetricsSnapshot::total_functions() const {
  FunctionMetrics total;
  for (const FunctionMetrics& f : functions) {
    total.delivered += f.delivered;
    total.failed += f.failed;
    total.retried += f.retried;
    total.timed_out += f.timed_out;
    total.run_time.merge(f.run_time);
  }
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
