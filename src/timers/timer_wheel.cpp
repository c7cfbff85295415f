#include "fnbus/timers/timer_wheel.hpp"

#include <algorithm>
#include <limits>

#include "fmt/format.h"

#include "fnbus/detail/saturating_time.hpp"

namespace fnbus::timers {
namespace {

// now - then for now >= then, exact in unsigned arithmetic even where the
// signed difference does not fit (a clock anywhere in its range).
std::uint64_t nanos_between(TimePoint then, TimePoint now) {
  return static_cast<std::uint64_t>(now.time_since_epoch().count()) -
         static_cast<std::uint64_t>(then.time_since_epoch().count());
}

}  // namespace

absl::StatusOr<TimerWheel> TimerWheel::Create(TimerWheelOptions options,
                                              TimePoint start) {
  if (options.tick <= Duration::zero() ||
      options.tick > std::chrono::hours(1)) {
    return absl::InvalidArgumentError(fmt::format(
        "TimerWheelOptions: tick is {} ns; use more than 0 and at most 1 "
        "hour (timers are rounded up to it)",
        options.tick.count()));
  }
  return TimerWheel(options.tick, start);
}

std::uint64_t TimerWheel::due_tick_of(TimePoint due) const {
  if (due <= start_) return 0;
  const std::uint64_t nanos = nanos_between(start_, due);
  const auto tick = static_cast<std::uint64_t>(tick_.count());
  // Rounded up, and capped as tick_at() is.
  return std::min(nanos / tick + (nanos % tick != 0 ? 1 : 0),
                  std::numeric_limits<std::uint64_t>::max() - 1);
}

std::uint64_t TimerWheel::tick_at(TimePoint now) const {
  // Capped one below the largest, so that tick + 1 never wraps.
  return std::min(
      nanos_between(start_, now) / static_cast<std::uint64_t>(tick_.count()),
      std::numeric_limits<std::uint64_t>::max() - 1);
}

TimePoint TimerWheel::time_of(std::uint64_t tick) const {
  const auto per_tick = static_cast<std::uint64_t>(tick_.count());
  const auto largest =
      static_cast<std::uint64_t>(std::numeric_limits<Duration::rep>::max());
  if (tick > largest / per_tick) return TimePoint::max();
  return detail::saturating_add(
      start_, Duration(static_cast<Duration::rep>(tick * per_tick)));
}

TimerId TimerWheel::schedule(TimePoint due, std::uint64_t payload) {
  const std::uint32_t index = allocate();
  Node& node = nodes_[index];
  node.due_tick = due_tick_of(due);
  node.payload = payload;
  ++pending_;
  place(index);
  return TimerId{(std::uint64_t{node.generation} << 32) | index};
}

bool TimerWheel::cancel(TimerId id) {
  const auto index = static_cast<std::uint32_t>(id.value & 0xffff'ffff);
  const auto generation = static_cast<std::uint32_t>(id.value >> 32);
  if (index >= nodes_.size()) return false;
  const Node& node = nodes_[index];
  if (node.generation != generation || node.list == kNone) return false;
  unlink(index);
  release(index);
  return true;
}

std::size_t TimerWheel::advance(TimePoint now,
                                absl::FunctionRef<void(std::uint64_t)> fire) {
  if (now < start_) return 0;
  const std::uint64_t last = tick_at(now);
  std::size_t fired = 0;
  while (next_tick_ <= last) {
    const std::optional<std::uint64_t> work = earliest_work_tick();
    if (!work || *work > last) {
      // Nothing to cascade or fire up to `last`: skipping there passes no
      // occupied slot (see earliest_work_tick()).
      next_tick_ = last + 1;
      break;
    }
    next_tick_ = *work;
    if (next_tick_ % kSlots == 0) cascade();
    const std::uint32_t list = static_cast<std::uint32_t>(next_tick_ % kSlots);
    // Past this tick before anything fires: a callback's timer for "now"
    // goes to the next tick, never into the list being fired.
    ++next_tick_;
    // Taken off the wheel first, so that callbacks may schedule and
    // cancel freely (cancelling one of these returns false: it fires).
    std::vector<std::uint64_t>& payloads = firing_;
    payloads.clear();
    for (std::uint32_t index = heads_[list]; index != kNone;) {
      const std::uint32_t next = nodes_[index].next;
      payloads.push_back(nodes_[index].payload);
      release(index);
      index = next;
    }
    heads_[list] = kNone;
    occupied_[0][list / 64] &= ~(std::uint64_t{1} << (list % 64));
    for (const std::uint64_t payload : payloads) fire(payload);
    fired += payloads.size();
  }
  return fired;
}

std::optional<TimePoint> TimerWheel::next_wake() const {
  const std::optional<std::uint64_t> tick = earliest_work_tick();
  if (!tick) return std::nullopt;
  return time_of(*tick);
}

std::optional<std::uint64_t> TimerWheel::earliest_work_tick() const {
  if (pending_ == 0) return std::nullopt;
  const std::uint64_t now = next_tick_;
  // A slot boundary not yet processed: a higher level's slot may start
  // here and must be cascaded.
  if (now % kSlots == 0) return now;
  if (auto slot = next_occupied(occupied_[0], now % kSlots)) {
    return (now & ~std::uint64_t{kSlots - 1}) | *slot;
  }
  // Each level's timers lie in its current rotation, after the lower
  // levels' (which end where the level's next slot starts): the first
  // occupied slot found, level by level, starts earliest.
  for (int level = 1; level < kLevels; ++level) {
    const int shift = kSlotBits * level;
    const auto position = static_cast<std::uint32_t>((now >> shift) % kSlots);
    if (position + 1 == kSlots) continue;
    if (auto slot = next_occupied(occupied_[static_cast<std::size_t>(level)],
                                  position + 1)) {
      const std::uint64_t rotation = (now >> (shift + kSlotBits))
                                     << (shift + kSlotBits);
      return rotation | (std::uint64_t{*slot} << shift);
    }
  }
  if (heads_[kOverflow] != kNone) {
    constexpr int kTopShift = kSlotBits * kLevels;
    return ((now >> kTopShift) + 1) << kTopShift;
  }
  return now;  // unreachable while pending_ counts the lists' nodes
}

std::optional<std::uint32_t> TimerWheel::next_occupied(
    const Occupancy& occupancy, std::uint32_t from) {
  for (std::uint32_t word = from / 64; word < occupancy.size(); ++word) {
    std::uint64_t bits = occupancy[word];
    if (word == from / 64) bits &= ~std::uint64_t{0} << (from % 64);
    if (bits != 0) {
      return word * 64 + static_cast<std::uint32_t>(std::countr_zero(bits));
    }
  }
  return std::nullopt;
}

void TimerWheel::cascade() {
  const std::uint64_t now = next_tick_;
  constexpr int kTopShift = kSlotBits * kLevels;
  if (now != 0 && now % (std::uint64_t{1} << kTopShift) == 0) {
    cascade_list(kOverflow);
  }
  // Highest first: a level's slot may move timers into the lower level's
  // slot that starts at this same tick.
  for (int level = kLevels - 1; level >= 1; --level) {
    const int shift = kSlotBits * level;
    if (now % (std::uint64_t{1} << shift) != 0) continue;
    const auto slot = static_cast<std::uint32_t>((now >> shift) % kSlots);
    cascade_list(static_cast<std::uint32_t>(level) * kSlots + slot);
  }
}

void TimerWheel::cascade_list(std::uint32_t list) {
  std::uint32_t index = heads_[list];
  if (index == kNone) return;
  heads_[list] = kNone;
  if (list != kOverflow) {
    occupied_[list / kSlots][(list % kSlots) / 64] &=
        ~(std::uint64_t{1} << (list % 64));
  }
  while (index != kNone) {
    const std::uint32_t next = nodes_[index].next;
    place(index);
    index = next;
  }
}

void TimerWheel::place(std::uint32_t index) {
  const std::uint64_t due = std::max(nodes_[index].due_tick, next_tick_);
  const std::uint64_t differing = due ^ next_tick_;
  for (int level = 0; level < kLevels; ++level) {
    const int shift = kSlotBits * level;
    if ((differing >> (shift + kSlotBits)) == 0) {
      const auto slot = static_cast<std::uint32_t>((due >> shift) % kSlots);
      link(index, static_cast<std::uint32_t>(level) * kSlots + slot);
      return;
    }
  }
  link(index, kOverflow);
}

void TimerWheel::link(std::uint32_t index, std::uint32_t list) {
  Node& node = nodes_[index];
  node.list = list;
  node.prev = kNone;
  node.next = heads_[list];
  if (node.next != kNone) nodes_[node.next].prev = index;
  heads_[list] = index;
  if (list != kOverflow) {
    occupied_[list / kSlots][(list % kSlots) / 64] |= std::uint64_t{1}
                                                      << (list % 64);
  }
}

void TimerWheel::unlink(std::uint32_t index) {
  Node& node = nodes_[index];
  if (node.prev != kNone) {
    nodes_[node.prev].next = node.next;
  } else {
    heads_[node.list] = node.next;
    if (node.next == kNone && node.list != kOverflow) {
      occupied_[node.list / kSlots][(node.list % kSlots) / 64] &=
          ~(std::uint64_t{1} << (node.list % 64));
    }
  }
  if (node.next != kNone) nodes_[node.next].prev = node.prev;
  node.prev = kNone;
  node.next = kNone;
}

std::uint32_t TimerWheel::allocate() {
  if (!free_.empty()) {
    const std::uint32_t index = free_.back();
    free_.pop_back();
    return index;
  }
  nodes_.emplace_back();
  return static_cast<std::uint32_t>(nodes_.size() - 1);
}

void TimerWheel::release(std::uint32_t index) {
  Node& node = nodes_[index];
  node.list = kNone;
  node.prev = kNone;
  node.next = kNone;
  // 0 is never a generation: TimerId{0} names no timer.
  if (++node.generation == 0) node.generation = 1;
  free_.push_back(index);
  --pending_;
}

}  // namespace fnbus::timers
