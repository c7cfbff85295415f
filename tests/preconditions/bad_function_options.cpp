// subscribe() with FunctionOptions that resilience::check_options<E>()
// refuses fails a precondition check, printing the check's message. ctest
// runs one case per argument and matches the message (the process aborts):
//   fallback         a fallback written for another event type (it must
//                    not be called with this one's events);
//   deadline         a deadline of zero;
//   max_concurrency  a concurrency limit of zero (alone: no other stage).

#include <chrono>
#include <string_view>

#include "fnbus/event_bus.hpp"

struct OrderPlaced {
  int id = 0;
};
struct RefundIssued {
  int id = 0;
};

fnbus::FunctionOptions bad_options(std::string_view which) {
  if (which == "deadline") {
    return {.name = "charge", .deadline = std::chrono::milliseconds(0)};
  }
  if (which == "max_concurrency") {
    return {.name = "charge", .max_concurrency = 0};
  }
  return {.name = "charge", .fallback = [](const RefundIssued&) {}};
}

int main(int argc, char** argv) {
  auto bus = fnbus::EventBus::Create({.execution = fnbus::Execution::kManual});
  if (!bus.ok()) return 2;
  const std::string_view which = argc > 1 ? argv[1] : "fallback";
  auto sub = (*bus)->subscribe([](const OrderPlaced&) {}, bad_options(which));
  return 0;  // not reached
}
