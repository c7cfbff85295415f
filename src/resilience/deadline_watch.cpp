#include "fnbus/resilience/deadline_watch.hpp"

#include <algorithm>
#include <thread>
#include <utility>

#include "fnbus/detail/bus_metrics.hpp"
#include "fnbus/detail/saturating_time.hpp"
#include "fnbus/detail/thread_activity.hpp"
#include "fnbus/timers/scheduler.hpp"

namespace fnbus::resilience {

// One thread's slots by nesting level (ThreadRecord::depth: 0 outside any
// dispatch, up to kMaxNesting inside). Written by its owner thread only.
struct DeadlineWatch::ThreadSlots {
  // Levels below this may have a slot. Only grows. Stored (release) by
  // the owner after it published the new slot; loaded (acquire) by the
  // scanners, which then read levels[] below it.
  std::atomic<std::uint32_t> levels_used{0};
  // The slot of each level, or null. Stored (release) once by the owner,
  // publishing the constructed slot; loaded (acquire) by scanners. The
  // owner reads its own stores (relaxed).
  std::atomic<Slot*> levels[detail::kMaxNesting + 1] = {};

  ~ThreadSlots() {
    for (auto& level : levels) {
      // relaxed: destruction; no thread uses the watch any more.
      delete level.load(std::memory_order_relaxed);
    }
  }
};

// The threads' slots, indexed by ThreadRecord::index (dense, reused when a
// thread exits: its successor inherits its idle slots).
struct DeadlineWatch::Threads {
  detail::LazyTable<ThreadSlots> table;
  std::mutex add_mutex;  // serialises the table's writers (first uses)
};

namespace {
// The next DeadlineWatch::id_ (from 1: 0 marks an empty cache entry).
std::atomic<std::uint64_t> next_watch_id{1};
}  // namespace

constinit thread_local DeadlineWatch::CachedSlot
    DeadlineWatch::tls_cached_slots_[DeadlineWatch::kCachedLevels];

DeadlineWatch::DeadlineWatch()
    // relaxed: only uniqueness matters; no data is published by the id.
    : id_(next_watch_id.fetch_add(1, std::memory_order_relaxed)),
      threads_(std::make_unique<Threads>()) {}

DeadlineWatch::~DeadlineWatch() = default;

std::int64_t DeadlineWatch::encode(TimePoint deadline) noexcept {
  return std::max(deadline.time_since_epoch().count(), kRequested + 1);
}

// Inline: begin()'s only call, and the cached path is a few loads.
inline DeadlineWatch::Slot& DeadlineWatch::slot_for_this_thread() {
  const detail::ThreadRecord& record = detail::this_thread_record();
  CachedSlot& cached = tls_cached_slots_[record.depth % kCachedLevels];
  if (cached.watch == id_ && cached.record == &record &&
      cached.depth == record.depth) [[likely]] {
    return *cached.slot;
  }
  Slot& slot = find_slot(record.index, record.depth);
  cached = CachedSlot{
      .watch = id_, .record = &record, .depth = record.depth, .slot = &slot};
  return slot;
}

DeadlineWatch::Invocation DeadlineWatch::begin(TimePoint deadline,
                                               Duration budget) {
  Slot& slot = slot_for_this_thread();
  // relaxed: the owner reads its own last store (kIdle after end()).
  FNBUS_ASSERT(slot.armed.load(std::memory_order_relaxed) == kIdle,
               "DeadlineWatch::begin: a call is already watched on this "
               "thread and nesting level");
  if (slot.requested) [[unlikely]] {
    // The last call's token was requested: it keeps that source (shared
    // state); this call gets a new one. No check() touches the old one
    // any more (the last end() waited for it).
    slot.requested = false;
    slot.source = std::stop_source();
    slot.state.token = slot.source.get_token();
  }
  detail::DeadlineState& state = slot.state;
  state.deadline = deadline;
  state.budget = budget;
  state.running = true;
  state.timed_out = false;
  state.late = false;
  // release: publishes the (possibly new) source to check()'s acquire
  // loads of `armed`.
  slot.armed.store(encode(deadline), std::memory_order_release);
  return Invocation(&slot);
}

void DeadlineWatch::Invocation::wait_for_check(Slot& slot) noexcept {
  // acquire: pairs with check()'s release store of false; its
  // request_stop() (and `requested`) happen before this call's next
  // begin() looks at the slot. Short: check() is running the token's
  // callbacks.
  while (slot.checking.load(std::memory_order_acquire)) {
    std::this_thread::yield();
  }
}

// noinline: keeps the table walk (and its register saves) out of
// begin()'s cached path.
[[gnu::noinline]] DeadlineWatch::Slot& DeadlineWatch::find_slot(
    std::uint32_t index, std::uint32_t depth) {
  ThreadSlots* slots = threads_->table.find(index);
  if (slots == nullptr) [[unlikely]] {
    std::lock_guard lock(threads_->add_mutex);
    slots =
        &threads_->table.get_or_create(index, [] { return new ThreadSlots(); });
  }
  FNBUS_ASSERT(depth <= detail::kMaxNesting, "nesting too deep");
  // relaxed: only this thread stores its levels.
  Slot* slot = slots->levels[depth].load(std::memory_order_relaxed);
  if (slot == nullptr) [[unlikely]]
    return add_slot(*slots, depth);
  return *slot;
}

DeadlineWatch::Slot& DeadlineWatch::add_slot(ThreadSlots& slots,
                                             std::uint32_t level) {
  auto* slot = new Slot();
  slot->state.token = slot->source.get_token();
  // release: publishes the constructed slot to scanners' acquire loads.
  slots.levels[level].store(slot, std::memory_order_release);
  // relaxed load: only this thread stores it.
  if (slots.levels_used.load(std::memory_order_relaxed) <= level) {
    // release: scanners that see the count see the slot stored above.
    slots.levels_used.store(level + 1, std::memory_order_release);
  }
  return *slot;
}

template <typename Fn>
void DeadlineWatch::for_each_slot(Fn&& fn) const {
  threads_->table.for_each([&](std::uint32_t, const ThreadSlots& slots) {
    // acquire: pairs with the release in add_slot().
    const std::uint32_t used =
        slots.levels_used.load(std::memory_order_acquire);
    for (std::uint32_t level = 0; level < used; ++level) {
      // acquire: pairs with the release in add_slot().
      if (Slot* slot = slots.levels[level].load(std::memory_order_acquire)) {
        fn(*slot);
      }
    }
  });
}

std::size_t DeadlineWatch::check(TimePoint now) {
  std::lock_guard lock(check_mutex_);
  const std::int64_t limit = now.time_since_epoch().count();
  auto due = [limit](std::int64_t armed) {
    return armed != kIdle && armed != kRequested && armed <= limit;
  };
  candidates_.clear();
  for_each_slot([&](Slot& slot) {
    // acquire: pairs with begin()'s release; a first look, validated
    // below.
    if (due(slot.armed.load(std::memory_order_acquire))) {
      candidates_.push_back(&slot);
    }
  });
  if (candidates_.empty()) return 0;
  // The checker's half of the handshake: retract, heavy barrier, observe.
  for (Slot* slot : candidates_) {
    slot->checking.store(true, detail::kRetractOrder);
  }
  detail::heavy_barrier();
  std::size_t requested = 0;
  for (Slot* slot : candidates_) {
    // kObserveOrder (acquire): pairs with begin()'s release, so a call
    // armed since the first look has its source visible here.
    std::int64_t armed = slot->armed.load(detail::kObserveOrder);
    if (due(armed)) {
      // The owner cannot end this call and begin another before we clear
      // `checking` (its end() waits), so `source` is the armed call's.
      if (slot->source.request_stop()) ++requested;
      slot->requested = true;  // see Slot::requested
      // relaxed: only marks the slot for later scans; fails harmlessly if
      // the owner stored kIdle meanwhile.
      (void)slot->armed.compare_exchange_strong(armed, kRequested,
                                                std::memory_order_relaxed);
    }
    // release: pairs with end()'s acquire load; our request_stop()
    // happens before the owner's next begin().
    slot->checking.store(false, std::memory_order_release);
  }
  return requested;
}

std::size_t DeadlineWatch::watching() const {
  std::size_t count = 0;
  for_each_slot([&](const Slot& slot) {
    // relaxed: a snapshot count, no data read through it.
    if (slot.armed.load(std::memory_order_relaxed) != kIdle) ++count;
  });
  return count;
}

Duration DeadlineWatchdog::period_for(Duration deadline) noexcept {
  return std::clamp<Duration>(deadline / 4, std::chrono::milliseconds(1),
                              std::chrono::seconds(1));
}

DeadlineWatchdog::DeadlineWatchdog(std::shared_ptr<Clock> clock,
                                   std::unique_ptr<timers::Scheduler> scheduler)
    : clock_(std::move(clock)), scheduler_(std::move(scheduler)) {}

DeadlineWatchdog::~DeadlineWatchdog() {
  if (scheduler_ != nullptr) scheduler_->shutdown();
}

absl::StatusOr<std::unique_ptr<DeadlineWatchdog>> DeadlineWatchdog::Create(
    std::shared_ptr<Clock> clock, bool start_thread) {
  std::unique_ptr<timers::Scheduler> scheduler;
  if (start_thread) {
    auto created = timers::Scheduler::Create({}, clock);
    if (!created.ok()) return created.status();
    scheduler = *std::move(created);
    scheduler->start();
  }
  return std::unique_ptr<DeadlineWatchdog>(
      new DeadlineWatchdog(std::move(clock), std::move(scheduler)));
}

absl::Status DeadlineWatchdog::cover(Duration deadline) {
  const Duration period = period_for(deadline);
  std::lock_guard lock(mutex_);
  if (period_ != Duration::zero() && period_ <= period) return absl::OkStatus();
  if (scheduler_ != nullptr) {
    if (timer_ != 0) (void)scheduler_->cancel(timers::TimerId{timer_});
    auto id = scheduler_->schedule_every(
        detail::saturating_add(clock_->now(), period), period,
        [watch = watch_, clock = clock_](timers::TimerFate fate) {
          if (fate == timers::TimerFate::kDue) (void)watch->check(clock->now());
        });
    if (!id.ok()) return id.status();
    timer_ = id->value;
  }
  period_ = period;
  return absl::OkStatus();
}

Duration DeadlineWatchdog::period() const {
  std::lock_guard lock(mutex_);
  return period_;
}

}  // namespace fnbus::resilience
