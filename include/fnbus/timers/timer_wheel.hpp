#pragma once

// A hierarchical timing wheel: the structure behind delayed publishes,
// periodic schedules and waiting retries. Four levels of 256 slots cover
// 2^32 ticks (49 days at the default 1 ms tick); later timers wait in an
// overflow slot. schedule() and cancel() cost O(1) however many timers
// are pending; advance() costs O(1) per timer fired or moved down a level,
// plus one step per 256 ticks skipped.
//
//   auto wheel = fnbus::timers::TimerWheel::Create({.tick = 1ms}, clock.now());
//   TimerId id = wheel->schedule(clock.now() + 30min, order_id);
//   wheel->advance(clock.now(), [](std::uint64_t payload) { ... });
//   std::optional<TimePoint> wake = wheel->next_wake();  // sleep until then
//
// A timer fires at the first advance() whose `now` is at or past its due
// time rounded up to a whole tick: never early, late by less than a tick
// plus the caller's own lateness (at the very end of the clock's range,
// whose last two ticks count as one, by a tick early). The payload is the
// caller's token (an
// index into its own table of events).
//
// Layout: each pending timer is a 32-byte node in one table (due tick,
// payload, its slot and its position there) plus a 4-byte entry in its
// slot's array of node indices: 36 bytes, plus the arrays' growth slack.
// cancel() moves the slot's last entry into the hole. A cascade or a
// firing walks a slot's contiguous array and prefetches the nodes a few
// entries ahead, so that with a wheel far larger than the caches the
// misses overlap instead of following a linked list one at a time. The
// 1,025 slot arrays cost 24 KB when empty; an emptied slot keeps at most
// 256 bytes of capacity.
//
// next_wake() is exact when the earliest timer is within the current
// 256-tick rotation, and otherwise the start of the slot that holds it
// (a lower bound; for a timer in the overflow slot, the start of its
// 2^32-tick rotation or earlier): waking there, advance() moves it down,
// and next_wake() is exact again. So a scheduler sleeps until next_wake()
// instead of ticking.
//
// Thread safety: none (the owner serialises). fire() callbacks may
// schedule and cancel; a timer scheduled at or before the tick being fired
// fires on the next tick (so a callback re-arming itself for "now" cannot
// spin inside one advance() forever).

#include <array>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"

namespace fnbus::timers {

// Names one scheduled timer; stale ids (fired, cancelled) are recognised.
struct TimerId {
  std::uint64_t value = 0;  // 0: no timer
  friend bool operator==(TimerId, TimerId) = default;
};

struct TimerWheelOptions {
  // The resolution (> 0, at most 1 hour): timers are rounded up to it.
  Duration tick = std::chrono::milliseconds(1);
};

class TimerWheel {
 public:
  // InvalidArgument if the tick is out of range. `start` is time zero.
  static absl::StatusOr<TimerWheel> Create(TimerWheelOptions options,
                                           TimePoint start);

  // Schedules `payload` for `due`. A due time at or before the last
  // advance() fires at the first advance() that reaches the next tick.
  TimerId schedule(TimePoint due, std::uint64_t payload);
  // Removes a pending timer: true if it was pending (not yet fired,
  // not cancelled).
  bool cancel(TimerId id);
  // Fires every timer due at or before `now`, tick by tick (within one
  // tick, in no set order); returns how many fired. A `now` at or before
  // an earlier advance()'s is a no-op. Not reentrant: fire() must not call
  // advance(). Cancelling a timer of the tick being fired returns false:
  // it fires.
  std::size_t advance(TimePoint now,
                      absl::FunctionRef<void(std::uint64_t payload)> fire);
  // When advance() next has something to do; nullopt if nothing is
  // pending. See the class comment.
  [[nodiscard]] std::optional<TimePoint> next_wake() const;

  [[nodiscard]] std::size_t size() const noexcept { return pending_; }
  [[nodiscard]] bool empty() const noexcept { return pending_ == 0; }

 private:
  static constexpr int kLevels = 4;
  static constexpr int kSlotBits = 8;
  static constexpr std::uint32_t kSlots = 1u << kSlotBits;      // per level
  static constexpr std::uint32_t kNone = 0xffff'ffff;           // no node
  static constexpr std::uint32_t kOverflow = kLevels * kSlots;  // slot id
  // An emptied slot array keeps at most this much capacity (256 bytes),
  // so that slots reused tick after tick do not reallocate, while the
  // memory held by empty slots stays bounded whatever the peak was.
  static constexpr std::size_t kKeptCapacity = 64;

  // One pending (or free) timer. 32-byte aligned so that a node never
  // straddles two cache lines: each touch is one miss at most.
  struct alignas(32) Node {
    std::uint64_t due_tick = 0;
    std::uint64_t payload = 0;
    std::uint32_t slot = kNone;    // level * kSlots + slot, kOverflow, or
                                   // kNone when free
    std::uint32_t position = 0;    // where slots_[slot] holds this node
    std::uint32_t generation = 1;  // bumped when freed: stale ids fail
  };
  static_assert(sizeof(Node) == 32, "two nodes per cache line");
  // The node indices of one slot, in no order.
  using Slot = std::vector<std::uint32_t>;
  // One bit per slot: which slots of a level hold a timer.
  using Occupancy = std::array<std::uint64_t, kSlots / 64>;

  TimerWheel(Duration tick, TimePoint start)
      : tick_(tick), start_(start), slots_(kLevels * kSlots + 1) {}

  [[nodiscard]] std::uint64_t due_tick_of(TimePoint due) const;
  [[nodiscard]] std::uint64_t tick_at(TimePoint now) const;
  [[nodiscard]] TimePoint time_of(std::uint64_t tick) const;
  // Appends a node to the slot its due tick belongs to, seen from
  // next_tick_.
  void place(std::uint32_t index);
  void append(std::uint32_t index, std::uint32_t slot);
  // Takes a node out of its slot: the slot's last node moves into its
  // place.
  void remove(std::uint32_t index);
  // Empties a slot that has been taken apart, keeping a little capacity.
  static void reset(Slot& slot);
  // Records that a slot holds no timer (its occupancy bit; for the
  // overflow slot, its earliest due tick).
  void mark_empty(std::uint32_t slot);
  std::uint32_t allocate();
  void release(std::uint32_t index);
  // Releases the timers of a level-0 slot, their payloads into firing_.
  void take_due(std::uint32_t slot);
  // Moves the timers of every level's slot that starts at next_tick_ (and
  // of the overflow slot at a top-level wrap) down to where they belong.
  void cascade();
  void cascade_slot(std::uint32_t slot);
  // The first tick at or after next_tick_ at which advance() has work: a
  // slot boundary to cascade or a level-0 slot to fire. Never later than
  // the start of any occupied slot.
  [[nodiscard]] std::optional<std::uint64_t> earliest_work_tick() const;
  [[nodiscard]] static std::optional<std::uint32_t> next_occupied(
      const Occupancy& occupancy, std::uint32_t from);

  Duration tick_;
  TimePoint start_;
  std::uint64_t next_tick_ = 0;  // the next tick advance() processes
  std::size_t pending_ = 0;
  std::vector<Node> nodes_;
  std::vector<std::uint32_t> free_;
  std::vector<std::uint64_t> firing_;  // advance()'s scratch: payloads
  Slot cascading_;                     // cascade_slot()'s scratch
  // The kLevels * kSlots slots, then the overflow slot. For every pending
  // node n: slots_[n.slot][n.position] == n's index.
  std::vector<Slot> slots_;
  std::array<Occupancy, kLevels> occupied_{};
  // At most the earliest due tick in the overflow slot (exact but for
  // cancels since it last emptied); the largest tick while it is empty.
  std::uint64_t overflow_earliest_ = std::numeric_limits<std::uint64_t>::max();
};

}  // namespace fnbus::timers
