// EventBus's publishing of an OwnedEvent (a kept dead letter, say): kept
// out of event_bus.cpp. It goes through publish_event(), as an E does.

#include "fnbus/event_bus.hpp"

namespace fnbus {

absl::Status EventBus::publish(OwnedEvent event, PublishOptions options) {
  return try_publish(event, std::move(options));
}

absl::Status EventBus::try_publish(OwnedEvent& event, PublishOptions options) {
  if (event.empty()) {
    return absl::InvalidArgumentError(
        "publish(OwnedEvent): the OwnedEvent holds no event (it was moved "
        "from or default-constructed); publish one made by OwnedEvent::Of() "
        "or OwnedEvent::Copy()");
  }
  // Queued in place: a refusal leaves the event in `event`.
  return publish_event<false>(event.envelope_, options);
}

}  // namespace fnbus
