#include "fnbus/timers/timer_wheel.hpp"

#include <algorithm>
#include <limits>

#include "fmt/format.h"

#include "fnbus/detail/saturating_time.hpp"

namespace fnbus::timers {
namespace {

using detail::nanos_between;

// How many nodes ahead a walk over a slot prefetches: enough misses in
// flight to hide most of the memory latency, few enough that the lines
// are still in cache when the walk reaches them.
constexpr std::size_t kPrefetchAhead = 8;

// Asks for the cache line at `address`, to be written soon. Only a hint:
// a wheel larger than the caches touches each node at random.
void prefetch_for_write(const void* address) {
#if defined(__GNUC__)
  __builtin_prefetch(address, 1);
#else
  (void)address;
#endif
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
  if (node.generation != generation || node.slot == kNone) return false;
  remove(index);
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
    const auto slot = static_cast<std::uint32_t>(next_tick_ % kSlots);
    // Past this tick before anything fires: a callback's timer for "now"
    // goes to the next tick, never into the slot being fired.
    ++next_tick_;
    // Taken off the wheel first, so that callbacks may schedule and
    // cancel freely (cancelling one of these returns false: it fires).
    take_due(slot);
    for (const std::uint64_t payload : firing_) fire(payload);
    fired += firing_.size();
  }
  return fired;
}

void TimerWheel::take_due(std::uint32_t slot) {
  Slot& due = slots_[slot];
  firing_.clear();
  for (std::size_t i = 0; i < due.size(); ++i) {
    if (i + kPrefetchAhead < due.size()) {
      prefetch_for_write(&nodes_[due[i + kPrefetchAhead]]);
    }
    firing_.push_back(nodes_[due[i]].payload);
    release(due[i]);
  }
  reset(due);
  mark_empty(slot);
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
  if (!slots_[kOverflow].empty()) {
    // The top-level wrap that starts the earliest overflow timer's
    // rotation: the wraps before it would only put everything back (with
    // a 1 ns tick, 2^32 of them).
    constexpr int kTopShift = kSlotBits * kLevels;
    return std::max(((now >> kTopShift) + 1) << kTopShift,
                    (overflow_earliest_ >> kTopShift) << kTopShift);
  }
  return now;  // unreachable while pending_ counts the slots' nodes
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
    cascade_slot(kOverflow);
  }
  // Highest first: a level's slot may move timers into the lower level's
  // slot that starts at this same tick.
  for (int level = kLevels - 1; level >= 1; --level) {
    const int shift = kSlotBits * level;
    if (now % (std::uint64_t{1} << shift) != 0) continue;
    const auto slot = static_cast<std::uint32_t>((now >> shift) % kSlots);
    cascade_slot(static_cast<std::uint32_t>(level) * kSlots + slot);
  }
}

void TimerWheel::cascade_slot(std::uint32_t slot) {
  if (slots_[slot].empty()) return;
  // Swapped out first: the overflow slot's timers may go back into it.
  cascading_.swap(slots_[slot]);
  mark_empty(slot);
  // The walk is over contiguous indices, so the nodes it is about to move
  // (each a likely cache miss) are fetched several at a time.
  for (std::size_t i = 0; i < cascading_.size(); ++i) {
    if (i + kPrefetchAhead < cascading_.size()) {
      prefetch_for_write(&nodes_[cascading_[i + kPrefetchAhead]]);
    }
    place(cascading_[i]);
  }
  reset(cascading_);
}

void TimerWheel::place(std::uint32_t index) {
  const std::uint64_t due = std::max(nodes_[index].due_tick, next_tick_);
  const std::uint64_t differing = due ^ next_tick_;
  for (int level = 0; level < kLevels; ++level) {
    const int shift = kSlotBits * level;
    if ((differing >> (shift + kSlotBits)) == 0) {
      const auto slot = static_cast<std::uint32_t>((due >> shift) % kSlots);
      append(index, static_cast<std::uint32_t>(level) * kSlots + slot);
      return;
    }
  }
  append(index, kOverflow);
}

void TimerWheel::append(std::uint32_t index, std::uint32_t slot) {
  Slot& nodes = slots_[slot];
  Node& node = nodes_[index];
  node.slot = slot;
  node.position = static_cast<std::uint32_t>(nodes.size());
  nodes.push_back(index);
  if (slot == kOverflow) {
    overflow_earliest_ = std::min(overflow_earliest_, node.due_tick);
  } else {
    occupied_[slot / kSlots][(slot % kSlots) / 64] |= std::uint64_t{1}
                                                      << (slot % 64);
  }
}

void TimerWheel::remove(std::uint32_t index) {
  const Node& node = nodes_[index];
  Slot& nodes = slots_[node.slot];
  const std::uint32_t moved = nodes.back();
  nodes[node.position] = moved;
  nodes_[moved].position = node.position;
  nodes.pop_back();
  if (nodes.empty()) {
    reset(nodes);
    mark_empty(node.slot);
  }
}

void TimerWheel::reset(Slot& slot) {
  if (slot.capacity() > kKeptCapacity) {
    Slot().swap(slot);  // frees the array
  } else {
    slot.clear();
  }
}

void TimerWheel::mark_empty(std::uint32_t slot) {
  if (slot == kOverflow) {
    overflow_earliest_ = std::numeric_limits<std::uint64_t>::max();
    return;
  }
  occupied_[slot / kSlots][(slot % kSlots) / 64] &=
      ~(std::uint64_t{1} << (slot % 64));
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
  node.slot = kNone;
  node.position = 0;
  // 0 is never a generation: TimerId{0} names no timer.
  if (++node.generation == 0) node.generation = 1;
  free_.push_back(index);
  --pending_;
}

}  // namespace fnbus::timers
