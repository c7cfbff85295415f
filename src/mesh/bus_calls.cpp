// EventBus's untyped request/reply parts (the templates are in
// detail/bus_call_inl.hpp).

#include <string_view>

#include "absl/status/status.h"
#include "fmt/chrono.h"
#include "fmt/format.h"

#include "fnbus/event_bus.hpp"

namespace fnbus {

bool EventBus::has_handlers(detail::TypeSlot slot) noexcept {
  // A scope of this bus, as a dispatch's: the list it protects stays
  // readable while we look at it.
  const EventTrace no_trace{};  // the scope keeps a reference
  detail::DispatchScope scope(detail::this_thread_record(), this, no_trace);
  const detail::HandlerList* list = registry_->find(slot, scope);
  return list != nullptr && !list->entries.empty();
}

namespace detail {

absl::Status BusCalls::problem(EventBus& bus, Duration timeout,
                               TypeSlot call_slot,
                               std::string_view request_type,
                               std::string_view reply_type) {
  if (timeout <= Duration::zero()) {
    return absl::InvalidArgumentError(fmt::format(
        "call<{}>({}): the timeout is {}; use more than 0 (CallOptions::"
        "timeout, default 30s)",
        reply_type, request_type,
        std::chrono::duration_cast<std::chrono::nanoseconds>(timeout)));
  }
  if (!bus.has_handlers(call_slot)) {
    return absl::NotFoundError(fmt::format(
        "call<{}>({}): no function serves {} with a {} reply; register one "
        "with bus.serve([](const {}&) -> absl::StatusOr<{}> {{ ... }}) first",
        reply_type, request_type, request_type, reply_type, request_type,
        reply_type));
  }
  return absl::OkStatus();
}

}  // namespace detail

}  // namespace fnbus
