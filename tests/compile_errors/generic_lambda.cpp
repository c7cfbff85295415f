// subscribe(handler) with a generic lambda: no event type to read off.
#include "fnbus/event_bus.hpp"

struct OrderPlaced {
  int id = 0;
};

void subscribe_generic(fnbus::EventBus& bus) {
  auto sub = bus.subscribe([](const auto&) {});
}
