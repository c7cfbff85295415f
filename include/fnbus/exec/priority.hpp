#pragma once

// Priority: the class an event is queued in (PublishOptions::priority; the
// lanes and their starvation bound are in exec/priority_lanes.hpp).

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fnbus {

// Workers take high-priority events first, but never starve the others:
// while normal events wait, a worker takes one at least once in every 8
// events it takes, and a waiting low event at least once in every 16
// (docs/priorities.md).
enum class Priority : std::uint8_t { kHigh = 0, kNormal = 1, kLow = 2 };

inline constexpr std::size_t kPriorityCount = 3;

[[nodiscard]] constexpr bool is_valid(Priority priority) noexcept {
  return static_cast<std::uint8_t>(priority) < kPriorityCount;
}

[[nodiscard]] constexpr std::string_view to_string(Priority priority) noexcept {
  switch (priority) {
    case Priority::kHigh:
      return "high";
    case Priority::kNormal:
      return "normal";
    case Priority::kLow:
      return "low";
  }
  return "invalid";
}

}  // namespace fnbus
