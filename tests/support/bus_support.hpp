// EventBus helpers shared by the bus test files, on top of test_support.hpp.
// Uses Catch2: call these on the test thread only.
#pragma once

#include <memory>
#include <utility>

#include "test_support.hpp"
#include <catch2/catch.hpp>

#include "fnbus/event_bus.hpp"

namespace fnbus::testing_support {

// Creates a bus, failing the test if `config` is refused.
inline std::unique_ptr<EventBus> make_bus(BusConfig config = {}) {
  auto bus = EventBus::Create(std::move(config));
  REQUIRE(bus.ok());
  return *std::move(bus);
}

}  // namespace fnbus::testing_support
