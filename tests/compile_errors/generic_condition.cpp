// FunctionOptions::when with a generic lambda: no event type to read off.
#include "fnbus/event_bus.hpp"

struct OrderPlaced {
  int id = 0;
};

void subscribe_with_generic_condition(fnbus::EventBus& bus) {
  auto sub = bus.subscribe([](const OrderPlaced&) {},
                           {.when = [](const auto& o) { return o.id > 0; }});
}
