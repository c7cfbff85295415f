#pragma once

// The queued token of a strand (PublishOptions::key; exec/strands.hpp):
// a keyed event waits in its strand, and one StrandTurn per keyed event
// goes through the bus's queue (or a worker's follow-up headroom) instead.
// EventBus::handle() recognises it before anything is counted, and runs
// the strand (EventBus::run_strand()): turns are never counted, published
// or dead-lettered themselves -- their events are.

#include <cstdint>
#include <string_view>

#include "fnbus/exec/priority.hpp"

namespace fnbus::detail {

struct StrandTurn {
  static constexpr std::string_view kEventName = "fnbus.strand";
  std::uint32_t strand;  // Strands::index_of(key)
  Priority priority;     // the lane it is queued in, and requeued in
};

}  // namespace fnbus::detail
