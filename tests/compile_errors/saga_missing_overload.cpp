// subscribe<E1, E2>(saga) where the saga has no overload for E2.
#include "fnbus/event_bus.hpp"

struct OrderPlaced {
  int id = 0;
};
struct PaymentCompleted {
  int id = 0;
};
struct Saga {
  void operator()(const OrderPlaced&) {}
};

void subscribe_saga(fnbus::EventBus& bus) {
  auto sub = bus.subscribe<OrderPlaced, PaymentCompleted>(Saga{});
}
