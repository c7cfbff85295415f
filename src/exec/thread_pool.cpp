#include "fnbus/exec/thread_pool.hpp"

#include <algorithm>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "fmt/format.h"
#include <pthread.h>

#include "fnbus/detail/exception_message.hpp"
#include "fnbus/detail/saturating_time.hpp"

namespace fnbus {
namespace {

// The pool whose worker this thread is, if any.
constinit thread_local const ThreadPool* tls_current_pool = nullptr;

void name_this_thread(const std::string& prefix, std::size_t index) {
  // Linux limits names to 15 characters.
  const std::string name = fmt::format("{}{}", prefix, index).substr(0, 15);
  pthread_setname_np(pthread_self(), name.c_str());
}

}  // namespace

ThreadPool::ThreadPool(WorkSource& source, ThreadPoolOptions options)
    : source_(source),
      options_(std::move(options)),
      max_(options_.max_workers == 0 ? options_.workers : options_.max_workers),
      slots_(std::make_unique<Slot[]>(max_)) {}

absl::StatusOr<std::unique_ptr<ThreadPool>> ThreadPool::Start(
    WorkSource& source, ThreadPoolOptions options) {
  if (options.max_workers != 0 && options.workers > options.max_workers) {
    return absl::InvalidArgumentError(fmt::format(
        "ThreadPoolOptions::workers is {} but max_workers is {}; start at "
        "most max_workers workers (or set max_workers to 0 for a fixed size)",
        options.workers, options.max_workers));
  }
  if (std::max(options.workers, options.max_workers) > kMaxWorkers) {
    return absl::InvalidArgumentError(fmt::format(
        "ThreadPoolOptions asks for {} workers; use at most {}",
        std::max(options.workers, options.max_workers), kMaxWorkers));
  }
  if (options.workers < 1) {
    return absl::InvalidArgumentError(
        "ThreadPoolOptions::workers is 0; start at least one worker");
  }
  std::unique_ptr<ThreadPool> pool(new ThreadPool(source, std::move(options)));
  absl::Status started;
  {
    std::lock_guard lock(pool->resize_mutex_);
    started = pool->grow_to(pool->options_.workers);
  }
  if (!started.ok()) {
    pool->stop_and_join();
    return started;
  }
  return pool;
}

ThreadPool::~ThreadPool() { stop_and_join(); }

bool ThreadPool::is_own_worker() const noexcept {
  return tls_current_pool == this;
}

absl::Status ThreadPool::resize(std::size_t workers) {
  if (workers < 1 || workers > max_) {
    return absl::InvalidArgumentError(fmt::format(
        "resize to {} workers; use 1 to max_workers ({}), or create the pool "
        "with a higher max_workers",
        workers, max_));
  }
  std::lock_guard lock(resize_mutex_);
  // relaxed: stop_and_join() sets it before taking resize_mutex_, which we
  // hold, so the mutex orders it.
  if (stopping_.load(std::memory_order_relaxed)) {
    return absl::FailedPreconditionError(
        "resize after the pool began stopping; resize before shutdown()");
  }
  // relaxed: only written under resize_mutex_.
  const std::size_t size = size_.load(std::memory_order_relaxed);
  if (workers > size) return grow_to(workers);
  if (workers < size) shrink_to(workers);
  return absl::OkStatus();
}

absl::Status ThreadPool::grow_to(std::size_t workers) {
  // Lowest indices first, so that a pool of n uses workers 0 .. n-1 when
  // it can (dense per-worker state, stable thread names).
  for (std::size_t i = 0; i < max_; ++i) {
    // relaxed: only written under resize_mutex_ (held).
    if (size_.load(std::memory_order_relaxed) >= workers) break;
    Slot& slot = slots_[i];
    SlotState state = SlotState::kRetiring;
    // acq_rel: races with the worker's own kRetiring -> kExited; whoever
    // wins decides whether the thread stays.
    if (slot.state.compare_exchange_strong(state, SlotState::kRunning,
                                           std::memory_order_acq_rel)) {
      // relaxed: a gauge.
      retiring_.fetch_sub(1, std::memory_order_relaxed);
    } else if (state == SlotState::kRunning) {
      continue;
    } else {
      reap(slot);  // exited: join before reusing the index
      if (absl::Status status = start_worker(i); !status.ok()) return status;
    }
    // relaxed: written under resize_mutex_; read as a snapshot.
    size_.fetch_add(1, std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

absl::Status ThreadPool::start_worker(std::size_t index) {
  Slot& slot = slots_[index];
  // relaxed: the thread's start synchronises with this store.
  slot.state.store(SlotState::kRunning, std::memory_order_relaxed);
  // relaxed: a gauge.
  starting_.fetch_add(1, std::memory_order_relaxed);
  try {
    slot.thread = std::thread([this, index] { worker_loop(index); });
  } catch (...) {
    // std::system_error (no thread) or std::bad_alloc (no memory for it):
    // undo the slot, keep what runs.
    // relaxed: as above.
    slot.state.store(SlotState::kEmpty, std::memory_order_relaxed);
    starting_.fetch_sub(1, std::memory_order_relaxed);
    // relaxed (size_ below): only written under resize_mutex_ (held).
    return absl::ResourceExhaustedError(fmt::format(
        "could not start worker thread {} ({}); the pool has {} workers; "
        "lower the worker count or raise the process's thread limit",
        index, detail::current_exception_message(),
        size_.load(std::memory_order_relaxed)));
  }
  return absl::OkStatus();
}

void ThreadPool::reap(Slot& slot) noexcept {
  if (slot.thread.joinable()) slot.thread.join();
  // relaxed: the join synchronised with the thread's last write.
  slot.state.store(SlotState::kEmpty, std::memory_order_relaxed);
}

void ThreadPool::shrink_to(std::size_t workers) noexcept {
  // Highest indices first (the mirror of grow_to()).
  for (std::size_t i = max_; i-- > 0;) {
    // relaxed: only written under resize_mutex_ (held).
    if (size_.load(std::memory_order_relaxed) <= workers) break;
    Slot& slot = slots_[i];
    // relaxed: kRunning only changes under resize_mutex_.
    if (slot.state.load(std::memory_order_relaxed) != SlotState::kRunning) {
      continue;
    }
    // relaxed: a gauge, raised before the worker can lower it.
    retiring_.fetch_add(1, std::memory_order_relaxed);
    // seq_cst: the announcement half of the handshake with park(): the
    // worker either sees this before sleeping, or it sleeps on a permit
    // word that wake_all_parked() below then changes (and it re-checks).
    slot.state.store(SlotState::kRetiring, std::memory_order_seq_cst);
    size_.fetch_sub(1, std::memory_order_relaxed);
  }
  wake_all_parked();
}

void ThreadPool::wake_all_parked() noexcept {
  // Pairs with the fence in park(), as in notify_work(): a worker we do
  // not count here sees its kRetiring before it sleeps.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // relaxed: ordered by the fence; claims every unclaimed sleeper at once
  // (parked workers that find nothing to do simply park again).
  std::int32_t parked = parked_.exchange(0, std::memory_order_relaxed);
  if (parked < 0) parked = 0;
  // release: as in wake_one(). Always, even with no sleeper left to claim:
  // the sleepers may all have been claimed by notify_work() already, and
  // their permits taken by other workers that parked again, leaving the
  // word at the value a retiring sleeper last saw (ABA: its futex wait
  // would go on). The generation step makes the word differ from any
  // value seen before this shrink, so every sleeper wakes and re-checks.
  permits_.fetch_add(static_cast<std::uint32_t>(parked) + kPermitGeneration,
                     std::memory_order_release);
  permits_.notify_all();
}

bool ThreadPool::is_running(std::size_t index) const noexcept {
  // relaxed: a snapshot for gauges.
  return index < max_ && slots_[index].state.load(std::memory_order_relaxed) ==
                             SlotState::kRunning;
}

bool ThreadPool::retire_requested(std::size_t index) const noexcept {
  // relaxed: a hint; try_retire() decides with a CAS.
  return slots_[index].state.load(std::memory_order_relaxed) ==
         SlotState::kRetiring;
}

bool ThreadPool::try_retire(std::size_t index, bool woken) noexcept {
  SlotState expected = SlotState::kRetiring;
  // seq_cst: against grow_to()'s CAS (one of us wins) and, as the
  // announcement half of a handshake, before the has_work() check below.
  if (!slots_[index].state.compare_exchange_strong(expected, SlotState::kExited,
                                                   std::memory_order_seq_cst)) {
    return false;  // kept by a resize() that grew again
  }
  // relaxed: a gauge.
  retiring_.fetch_sub(1, std::memory_order_relaxed);
  // Woken for work we will not take: stop counting as on our way before
  // the check below (which notify_work() would otherwise skip for us).
  if (woken) done_waking();
  // We may have consumed the wake-up (or been the spinner a producer
  // counted on) meant for work still queued: pass it on. The fence pairs
  // with the one in notify_work(), as in park().
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (source_.has_work()) notify_work();
  return true;
}

void ThreadPool::worker_loop(std::size_t index) noexcept {
  tls_current_pool = this;
  name_this_thread(options_.name_prefix, index);
  // relaxed: a gauge.
  starting_.fetch_sub(1, std::memory_order_relaxed);
  // Took a wake permit and has not yet taken work, started to spin or
  // retired: notify_work() may count us in waking_ (see there).
  bool woken = false;
  for (;;) {
    if (retire_requested(index) && try_retire(index, woken)) return;
    if (source_.run_one(index, [this, &woken] {
          on_work_taken(std::exchange(woken, false));
        })) {
      continue;
    }
    // acquire: pairs with the seq_cst store in stop_and_join(); work
    // offered before the stop is then visible to run_one() above on the
    // next round, and we only exit after it found none.
    if (stopping_.load(std::memory_order_acquire)) {
      if (!source_.has_work()) return;
      continue;
    }
    if (!spin_for_work(index, std::exchange(woken, false))) {
      woken = park(index);
    }
  }
}

void ThreadPool::on_work_taken(bool woken) noexcept {
  if (woken) {
    done_waking();
    // Pairs with the fence in notify_work(): a producer that saw us still
    // waking (and so woke nobody) made its work visible to the has_work()
    // below, so we wake the helper it did not. Only after a wake-up, so
    // the fence stays off the path of a worker running a backlog.
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  // More work than awake workers: wake a helper before we run ours, so the
  // rest does not wait for our handler. relaxed: hints only; notify_work()
  // re-checks behind a fence.
  if (spinning_.load(std::memory_order_relaxed) == 0 &&
      waking_.load(std::memory_order_relaxed) == 0 &&
      parked_.load(std::memory_order_relaxed) > 0 && source_.has_work()) {
    notify_work();
  }
}

void ThreadPool::done_waking() noexcept {
  // If positive: the count may already have been lowered for us by a
  // worker that took a permit from resize() or stop_and_join() (see
  // waking_). relaxed: see waking_.
  decrement_if_positive(waking_);
}

bool ThreadPool::decrement_if_positive(
    std::atomic<std::int32_t>& counter) noexcept {
  // relaxed: a counter; the callers' fences (or, for parked_, permits_)
  // carry the ordering.
  std::int32_t value = counter.load(std::memory_order_relaxed);
  while (value > 0) {
    if (counter.compare_exchange_weak(value, value - 1,
                                      std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

bool ThreadPool::spin_for_work(std::size_t index, bool woken) noexcept {
  // seq_cst: announces a spinner before we look for work; pairs with the
  // fence in notify_work(), which skips waking anyone while we spin.
  spinning_.fetch_add(1, std::memory_order_seq_cst);
  // Woken and found nothing (another worker took it, or has_work() was
  // spurious): now counted as spinning, no longer as waking. Before the
  // spin, so the count never outlives us; park() re-checks behind its
  // fence before we sleep.
  if (woken) done_waking();
  // Saturating: ThreadPoolOptions does not bound idle_spin (the bus does),
  // and now() + nanoseconds::max() would overflow.
  const TimePoint deadline = detail::saturating_add(
      std::chrono::time_point_cast<Duration>(std::chrono::steady_clock::now()),
      options_.idle_spin);
  bool found = false;
  for (std::uint32_t i = 1;; ++i) {
    if (source_.poll_work()) {
      found = true;
      break;
    }
    // Every 64 polls: the thorough check, stop and retire requests, and
    // the clock (reading it costs ~20 ns here).
    if (i % 64 == 0) {
      // relaxed: stopping_ is re-read with acquire in worker_loop().
      if (source_.has_work() || stopping_.load(std::memory_order_relaxed) ||
          retire_requested(index)) {
        found = true;
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
    }
    detail::cpu_relax();
  }
  // seq_cst: leaving the spinners before park() announces parking, so a
  // producer that saw us spinning is covered by park()'s re-check.
  spinning_.fetch_sub(1, std::memory_order_seq_cst);
  return found;
}

bool ThreadPool::park(std::size_t index) noexcept {
  // seq_cst: the announcement half of the handshake with notify_work().
  parked_.fetch_add(1, std::memory_order_seq_cst);
  // Pairs with the fence in notify_work(): either it sees us parked, or
  // we see its work below.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // relaxed: ordered by the fence above (retire_requested() too; it pairs
  // with the fence in wake_all_parked()).
  if ((source_.has_work() || stopping_.load(std::memory_order_relaxed) ||
       retire_requested(index)) &&
      withdraw_parked()) {
    return false;
  }
  return acquire_wake_permit(index);
}

bool ThreadPool::withdraw_parked() noexcept {
  // Only while some parked worker is unclaimed: once a waker has claimed
  // one, its permit is ours to consume (keeping parked_ = sleepers -
  // permits). relaxed: parked_ is a counter; permits_ carries the hand-off.
  return decrement_if_positive(parked_);
}

bool ThreadPool::acquire_wake_permit(std::size_t index) noexcept {
  for (;;) {
    // acquire: pairs with the release in wake_one() / wake_all_parked() /
    // stop_and_join() (and, through the release sequence, makes a
    // kRetiring stored before wake_all_parked() visible below).
    std::uint32_t word = permits_.load(std::memory_order_acquire);
    while ((word & kPermitMask) > 0) {
      // acquire: as above.
      if (permits_.compare_exchange_weak(word, word - 1,
                                         std::memory_order_acquire,
                                         std::memory_order_relaxed)) {
        return true;
      }
    }
    // Permits are not addressed: a worker that re-parked may have taken
    // the one wake_all_parked() meant for us. A retiring worker does not
    // go back to sleep: it uncounts itself, or -- if every sleeper is
    // already claimed -- waits for the permit that is on its way.
    if (retire_requested(index)) {
      if (withdraw_parked()) return false;
      std::this_thread::yield();
      continue;
    }
    // Sleeps until permits_ changes from `word` (atomic wait re-checks
    // the value under the futex, so a release in between is not lost).
    permits_.wait(word, std::memory_order_acquire);
  }
}

void ThreadPool::wake_one() noexcept {
  // relaxed: a running total for stats(); orders nothing.
  wakeups_.fetch_add(1, std::memory_order_relaxed);
  // release: the caller's work is visible to the worker that takes the
  // permit (acquire in acquire_wake_permit()).
  permits_.fetch_add(1, std::memory_order_release);
  permits_.notify_one();
}

void ThreadPool::notify_work() noexcept {
  // Pairs with the fence in park() and the seq_cst RMWs on spinning_: the
  // work made available before this call is seen by a worker that we do
  // not see parked, or by the spinner we see.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // relaxed: ordered by the fence above. A spinner, or a worker woken by
  // an earlier call that has not yet taken work or started to spin, will
  // look for this work too: waking another would only have it find
  // nothing and park again (one wake-up per call in a burst, before).
  if (spinning_.load(std::memory_order_relaxed) > 0 ||
      waking_.load(std::memory_order_relaxed) > 0) {
    return;
  }
  // relaxed: ordered by the fence above; the CAS claims one sleeper.
  if (decrement_if_positive(parked_)) {
    // Counted before the permit is released (wake_one()), so the worker
    // that takes the permit, which acquires it, sees the count and lowers
    // it; counted after, it could find 0 to lower and leave the count
    // stuck above 0. Two concurrent callers may both get here: at most
    // one spare wake-up each, never a lost one. relaxed: see waking_.
    waking_.fetch_add(1, std::memory_order_relaxed);
    wake_one();
  }
}

void ThreadPool::stop_and_join() noexcept {
  // seq_cst: ordered before the permits below and against park()'s fence.
  // Set before taking resize_mutex_, so that a worker inside resize()
  // sees it and returns instead of waiting for us to join it.
  stopping_.store(true, std::memory_order_seq_cst);
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(resize_mutex_);
    ++joining_;
    for (std::size_t i = 0; i < max_; ++i) {
      if (slots_[i].thread.joinable()) {
        threads.push_back(std::move(slots_[i].thread));
      }
    }
  }
  // release: as in wake_one(); enough permits for every worker to leave.
  permits_.fetch_add(static_cast<std::uint32_t>(max_),
                     std::memory_order_release);
  permits_.notify_all();
  for (auto& thread : threads) {
    // Called from a worker (a documented misuse): do not join ourselves,
    // nor destroy a joinable thread (std::terminate).
    if (thread.get_id() == std::this_thread::get_id()) {
      thread.detach();
    } else {
      thread.join();
    }
  }
  std::lock_guard lock(resize_mutex_);
  // The last call still joining clears the gauges (an earlier one that
  // found no thread left to join must not, while threads still run).
  if (--joining_ == 0) forget_joined_threads();
}

void ThreadPool::forget_joined_threads() noexcept {
  // Every thread is joined, so none runs, parks or retires any more; but
  // the counters still say what they were at the stop: the size is never
  // lowered, and workers leave on the stop's permits without taking
  // themselves off parked_. A stopped pool reports no threads.
  // relaxed (all below): the joins synchronised with each worker's last
  // write, and writers of slot states and size_ hold resize_mutex_
  // (held); readers take snapshots. starting_ and spinning_ are already 0
  // (every worker entered its loop and left its spin before exiting).
  for (std::size_t i = 0; i < max_; ++i) {
    slots_[i].state.store(SlotState::kEmpty, std::memory_order_relaxed);
  }
  size_.store(0, std::memory_order_relaxed);
  retiring_.store(0, std::memory_order_relaxed);
  parked_.store(0, std::memory_order_relaxed);
  // Workers woken just before the stop may have left without taking work.
  waking_.store(0, std::memory_order_relaxed);
}

ThreadPoolStats ThreadPool::stats() const noexcept {
  // relaxed: a snapshot for display.
  const auto spinning = spinning_.load(std::memory_order_relaxed);
  const auto parked = parked_.load(std::memory_order_relaxed);
  const auto starting = starting_.load(std::memory_order_relaxed);
  const auto retiring = retiring_.load(std::memory_order_relaxed);
  const auto count = [](std::int32_t n) {
    return static_cast<std::size_t>(n < 0 ? 0 : n);
  };
  return {.workers = size(),
          .starting = count(starting),
          .retiring = count(retiring),
          .spinning = count(spinning),
          .parked = count(parked),
          .max_workers = max_,
          .wakeups = wakeups_.load(std::memory_order_relaxed)};
}

}  // namespace fnbus
