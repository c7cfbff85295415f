// subscribe() with FunctionOptions that resilience::check_options<E>()
// refuses fails a precondition check, printing the check's message: a
// fallback written for another event type must not be called with this
// one's events. ctest matches the message (the process aborts).

#include "fnbus/event_bus.hpp"

struct OrderPlaced {
  int id = 0;
};
struct RefundIssued {
  int id = 0;
};

int main() {
  auto bus = fnbus::EventBus::Create({.execution = fnbus::Execution::kManual});
  if (!bus.ok()) return 2;
  auto sub = (*bus)->subscribe(
      [](const OrderPlaced&) {},
      {.name = "charge", .fallback = [](const RefundIssued&) {}});
  return 0;  // not reached
}
