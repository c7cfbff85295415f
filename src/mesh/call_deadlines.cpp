#include "fnbus/detail/call_deadlines.hpp"

#include <algorithm>
#include <utility>
#include <vector>

#include "fnbus/detail/call_state.hpp"
#include "fnbus/detail/saturating_time.hpp"

namespace fnbus::detail {

namespace {
// A deadline's slice is this fraction of its timeout (at least a tick).
constexpr std::int64_t kSlicesPerTimeout = 64;
}  // namespace

std::shared_ptr<CallDeadlines> CallDeadlines::Create(Duration tick) {
  return std::shared_ptr<CallDeadlines>(new CallDeadlines(tick));
}

TimePoint CallDeadlines::slice_due(TimePoint now, Duration timeout) const {
  const Duration slice = std::max(tick_, timeout / kSlicesPerTimeout);
  const TimePoint due = saturating_add(now, timeout);
  const Duration since_epoch = due.time_since_epoch();
  const Duration rest = since_epoch % slice;
  if (rest == Duration::zero()) return due;
  return saturating_add(due, slice - rest);
}

void CallDeadlines::watch(CallCore& call, TimePoint now, Duration timeout,
                          timers::BusTimers& timers) {
  const TimePoint due = slice_due(now, timeout);
  bool first = false;
  {
    std::lock_guard guard(lock_);
    auto [slice, inserted] = slices_.try_emplace(due);
    first = inserted;
    slice->second.insert(&call);
    call.slice_ = due;
  }
  if (!first) return;
  // Outside lock_: the scheduler takes its own lock, and a slice's timer
  // task takes ours.
  absl::StatusOr<timers::TimerHandle> timer = timers.schedule_at(
      due, [weak = weak_from_this(), &timers, due](timers::TimerFate fate) {
        if (fate == timers::TimerFate::kShutdown) {
          // A draining bus may still answer them; end_all() ends the rest
          // once it has stopped.
          timers.count_stopped();
          return;
        }
        timers.count_fired();
        if (std::shared_ptr<CallDeadlines> self = weak.lock()) {
          self->expire(due);
        }
      });
  // Refused only once shutdown() began: the slice's calls then end by
  // their requests (handled or dead-lettered by the shutdown).
  (void)timer;
}

void CallDeadlines::unwatch(CallCore& call) noexcept {
  std::lock_guard guard(lock_);
  if (!call.slice_) return;
  auto slice = slices_.find(*call.slice_);
  call.slice_.reset();
  if (slice == slices_.end()) return;
  slice->second.erase(&call);
  // The slice stays (empty) until its timer removes it: a call joining it
  // meanwhile must not schedule a second timer.
}

void CallDeadlines::take_locked(absl::flat_hash_set<CallCore*>& slice,
                                std::vector<std::shared_ptr<CallCore>>& taken) {
  for (CallCore* call : slice) {
    call->slice_.reset();
    // Null for a call being destroyed right now: it has nobody to tell.
    if (std::shared_ptr<CallCore> alive = call->weak_from_this().lock()) {
      taken.push_back(std::move(alive));
    }
  }
  slice.clear();
}

void CallDeadlines::expire(TimePoint due) {
  std::vector<std::shared_ptr<CallCore>> ending;
  {
    std::lock_guard guard(lock_);
    auto slice = slices_.find(due);
    if (slice == slices_.end()) return;
    take_locked(slice->second, ending);
    slices_.erase(slice);
  }
  for (const std::shared_ptr<CallCore>& call : ending) {
    call->end_with(call->timeout_status());
  }
}

void CallDeadlines::end_all(const absl::Status& status) {
  std::vector<std::shared_ptr<CallCore>> ending;
  {
    std::lock_guard guard(lock_);
    for (auto& [due, calls] : slices_) take_locked(calls, ending);
    slices_.clear();
  }
  for (const std::shared_ptr<CallCore>& call : ending) call->end_with(status);
}

std::size_t CallDeadlines::pending() const {
  std::lock_guard guard(lock_);
  std::size_t count = 0;
  for (const auto& [due, calls] : slices_) count += calls.size();
  return count;
}

std::size_t CallDeadlines::slices() const {
  std::lock_guard guard(lock_);
  return slices_.size();
}

}  // namespace fnbus::detail
