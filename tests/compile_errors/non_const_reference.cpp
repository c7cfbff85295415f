// A handler taking the event by non-const reference.
#include "fnbus/event_bus.hpp"

struct OrderPlaced {
  int id = 0;
};

void subscribe_mutating(fnbus::EventBus& bus) {
  auto sub = bus.subscribe([](OrderPlaced& order) { order.id = 0; });
}
