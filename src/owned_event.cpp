#include "fnbus/owned_event.hpp"

#include <new>
#include <string>

#include <fmt/format.h>

#include "fnbus/detail/exception_message.hpp"

namespace fnbus {

absl::StatusOr<OwnedEvent> OwnedEvent::Copy(const EventRef& event) {
  const std::string type(event.type_name());
  if (event.event_ == nullptr) {
    return absl::InvalidArgumentError(
        "OwnedEvent::Copy: the EventRef refers to no event");
  }
  if (event.ops_ == nullptr) {
    return absl::FailedPreconditionError(fmt::format(
        "OwnedEvent::Copy: this EventRef to a {} does not know how to copy "
        "it (the refs of the dead-letter and error sinks and of "
        "OwnedEvent::ref() do; the unhandled sink's do not); copy it "
        "yourself with get<{}>()",
        type, type));
  }
  if (event.ops_->clone == nullptr) {
    return absl::FailedPreconditionError(fmt::format(
        "OwnedEvent::Copy: {} has no copy constructor, so it cannot be "
        "kept beyond the call; give {} a copy constructor, or copy what you "
        "need with get<{}>()",
        type, type, type));
  }
  try {
    return OwnedEvent(detail::Envelope(
        detail::CopyOf{.ops = event.ops_, .event = event.event_}, event.slot_,
        {}));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        fmt::format("OwnedEvent::Copy: out of memory copying a {}", type));
  } catch (...) {
    return absl::UnknownError(
        fmt::format("OwnedEvent::Copy: the copy constructor of {} threw: {}",
                    type, detail::current_exception_message()));
  }
}

bool OwnedEvent::copyable() const noexcept {
  return empty() || envelope_.ref().ops_->clone != nullptr;
}

absl::StatusOr<OwnedEvent> OwnedEvent::clone() const {
  if (empty()) return OwnedEvent();
  return Copy(ref());
}

}  // namespace fnbus
