#pragma once

// Internal to fnbus::nats: the client's handles behind a Connection, and
// the translation of the client's errors into absl::Status.

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include <nats/nats.h>

#include "fnbus/nats/connection.hpp"

namespace fnbus::nats {

struct Connection::Handles {
  natsConnection* connection = nullptr;
  jsCtx* jetstream = nullptr;
};

namespace internal {

// `status` (not NATS_OK) from `doing` (e.g. "connecting to nats://..."),
// with the client's last error text and a hint at what to do.
[[nodiscard]] absl::Status to_status(natsStatus status, std::string_view doing);

}  // namespace internal
}  // namespace fnbus::nats
