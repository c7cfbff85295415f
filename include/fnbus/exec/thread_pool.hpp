#pragma once

// Worker threads that run what a WorkSource offers, spinning briefly when
// idle and then parking; the number of workers can change while they run.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/detail/config.hpp"

namespace fnbus {

// Where a pool's workers find work.
class WorkSource {
 public:
  virtual ~WorkSource() = default;
  // Whether work may be available. May answer true spuriously, and false
  // while a producer is halfway through adding work; never false after
  // the producer's notify_work() returned unless someone took the work.
  [[nodiscard]] virtual bool has_work() const noexcept = 0;
  // A cheaper check that spinning workers poll; may miss work that
  // has_work() sees (spinners call has_work() now and then as well).
  [[nodiscard]] virtual bool poll_work() const noexcept { return has_work(); }
  // Takes and runs one unit of work on worker `worker` (0 .. max_workers-1;
  // no two live threads share an index, so per-worker state needs no lock),
  // calling `taken()` after taking it and before running it (so the pool
  // can wake a helper for the rest while this unit runs). Returns false,
  // without calling `taken`, if there was none.
  virtual bool run_one(std::size_t worker,
                       absl::FunctionRef<void()> taken) noexcept = 0;
};

struct ThreadPoolOptions {
  // Workers started by Start(): 1 .. max_workers.
  std::size_t workers = 2;
  // The most workers resize() may ask for; 0 means `workers` (a pool that
  // can only shrink and grow back).
  std::size_t max_workers = 0;
  // How long an idle worker polls before it parks.
  std::chrono::nanoseconds idle_spin = std::chrono::microseconds(50);
  // Threads are named "<name_prefix><index>" where the OS allows.
  std::string name_prefix = "fnbus-w";
};

// A snapshot of what the workers are doing. After stop_and_join() every
// gauge is 0; max_workers, a bound, and wakeups, a running total, stay.
struct ThreadPoolStats {
  std::size_t workers = 0;   // the size: running, or starting
  std::size_t starting = 0;  // of those, threads not yet in their loop
  std::size_t retiring = 0;  // asked to leave, finishing their event
  std::size_t spinning = 0;  // polling for work (retiring ones too)
  std::size_t parked = 0;    // asleep until notified (retiring ones too)
  std::size_t max_workers = 0;
  // Parked workers woken to look for work since Start(): one per wake
  // permit notify_work() handed out (a worker's call for a helper
  // included; the wake-ups of resize() and stop_and_join() are not).
  // Exact, not sampled. Idle, it does not move.
  std::uint64_t wakeups = 0;
};

// A set of worker threads whose size resize() changes between 1 and
// max_workers while they run.
//
// Resizing: growing starts threads at once (or keeps workers that were
// asked to retire and have not left yet). Shrinking asks the workers with
// the highest indices to retire: each leaves when it next looks for work,
// so an event being handled is always finished first. Parked workers are
// woken to notice. A worker index is reused only after its previous
// thread has exited and been joined (by the next resize() or stop).
//
// Wake protocol: a worker that finds no work spins for `idle_spin`, then
// announces itself parked and checks once more before sleeping.
// notify_work() wakes a parked worker only when no worker is spinning and
// none is waking (woken by an earlier notify_work() and not yet past
// taking work or starting to spin): either will find the work. So a burst
// of notify_work() calls into a parked pool wakes one worker, not one per
// call. A worker that takes work while more remains and nobody spins or
// wakes wakes a helper before it runs what it took, so a burst still fans
// out over the parked workers, one wake-up per helper.
// No wake-up is lost: both sides use a seq_cst fence between their
// announcement and their check (a Dekker handshake), and a worker that
// stops counting itself as waking then goes through that check (in park())
// before it can sleep.
//
// A retiring worker that leaves while work is queued passes the wake-up
// on (it may have consumed the one meant for that work).
//
// Thread safety: notify_work(), resize() and stats() from any thread,
// workers included; stop_and_join() from a thread that is not a worker.
class ThreadPool {
 public:
  static constexpr std::size_t kMaxWorkers = 4096;

  // Starts the workers. Fails with ResourceExhausted if the OS refuses a
  // thread (those already started are stopped again).
  static absl::StatusOr<std::unique_ptr<ThreadPool>> Start(
      WorkSource& source, ThreadPoolOptions options);
  ~ThreadPool();  // stop_and_join()

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Call after making work available. Cheap when a worker is spinning.
  // Thread safety: any thread. Memory ordering: work made available
  // before this call is seen by the worker it wakes.
  void notify_work() noexcept;

  // Sets the number of workers: 1 .. max_workers. Returns when the new
  // threads are started (not necessarily running yet) and the retiring
  // ones are told, without waiting for them to finish their events.
  // InvalidArgument out of range; FailedPrecondition once stopping;
  // ResourceExhausted if the OS refuses a thread (the pool keeps those it
  // could start). Thread safety: any thread, also a worker; calls are
  // serialised.
  absl::Status resize(std::size_t workers);

  // Workers run all the work they can still find, then exit; joins them.
  // Afterwards size() and every count in stats() are 0 (max_workers
  // stays). Idempotent. Thread safety: not from a worker of this pool.
  void stop_and_join() noexcept;

  // The size asked for by Start() or the last resize() (running +
  // starting); 0 once stop_and_join() has joined the workers.
  [[nodiscard]] std::size_t size() const noexcept {
    // relaxed: a snapshot; written under resize_mutex_.
    return size_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::size_t max_workers() const noexcept { return max_; }
  // Whether worker index `index` is one of the pool's size now (not
  // retiring, exited or never started). A snapshot, for gauges.
  [[nodiscard]] bool is_running(std::size_t index) const noexcept;
  [[nodiscard]] ThreadPoolStats stats() const noexcept;

  // True on one of this pool's worker threads.
  [[nodiscard]] bool is_own_worker() const noexcept;

 private:
  // Life of a worker slot. Changes under resize_mutex_, except
  // kRetiring -> kExited, which the worker itself makes.
  enum class SlotState : std::uint8_t { kEmpty, kRunning, kRetiring, kExited };
  struct Slot {
    std::thread thread;  // guarded by resize_mutex_
    std::atomic<SlotState> state{SlotState::kEmpty};
  };

  ThreadPool(WorkSource& source, ThreadPoolOptions options);
  void worker_loop(std::size_t index) noexcept;
  [[nodiscard]] bool retire_requested(std::size_t index) const noexcept;
  bool try_retire(std::size_t index, bool woken) noexcept;
  bool spin_for_work(std::size_t index, bool woken) noexcept;
  // Returns acquire_wake_permit()'s answer (false if the park was
  // cancelled).
  bool park(std::size_t index) noexcept;
  void wake_one() noexcept;
  void wake_all_parked() noexcept;
  void on_work_taken(bool woken) noexcept;
  void done_waking() noexcept;
  bool withdraw_parked() noexcept;
  // Returns true if the worker slept and took a wake permit (false if it
  // cancelled its park, or a retiring worker uncounted itself).
  bool acquire_wake_permit(std::size_t index) noexcept;
  // Lowers `counter` by one if it is above 0; returns whether it did.
  // relaxed: the callers' fences order it.
  static bool decrement_if_positive(
      std::atomic<std::int32_t>& counter) noexcept;
  // resize()'s steps; the caller holds resize_mutex_.
  absl::Status grow_to(std::size_t workers);
  void shrink_to(std::size_t workers) noexcept;
  absl::Status start_worker(std::size_t index);
  void reap(Slot& slot) noexcept;
  // Zeroes the size, slot states and gauges once every thread is joined;
  // the caller holds resize_mutex_.
  void forget_joined_threads() noexcept;

  WorkSource& source_;
  const ThreadPoolOptions options_;
  const std::size_t max_;
  const std::unique_ptr<Slot[]> slots_;  // max_ of them
  std::mutex resize_mutex_;  // serialises resize() and stop_and_join()
  // stop_and_join() calls between taking the threads and having joined
  // them; guarded by resize_mutex_.
  std::size_t joining_ = 0;
  // Slots in kRunning: written under resize_mutex_, read by stats().
  std::atomic<std::size_t> size_{0};
  // Threads started but not yet in their loop (a gauge): incremented by
  // resize(), decremented by the worker.
  std::atomic<std::int32_t> starting_{0};
  // Slots in kRetiring (a gauge): incremented by shrink_to(), decremented
  // by whoever moves the slot on (the worker leaving, or a grow_to()).
  std::atomic<std::int32_t> retiring_{0};

  // Workers in spin_for_work(). RMW by workers (seq_cst: the announcement
  // half of the wake handshake), read by notify_work().
  alignas(detail::kCacheLineSize) std::atomic<std::int32_t> spinning_{0};
  // Wake permits notify_work() handed out whose worker has not yet taken
  // work, started to spin or retired; >= 0. While it is above 0,
  // notify_work() wakes nobody else: the worker on its way will look for
  // work (invariant: whoever lowers it is a worker that then runs its loop
  // and so passes park()'s fenced re-check before it can sleep). Raised by
  // notify_work() before it releases the permit (so the worker that takes
  // the permit can never lower it first and leave it stuck above 0);
  // lowered with decrement_if_positive() by a worker that took a permit
  // (permits are not addressed, and resize() and stop_and_join() hand out
  // permits without raising it: a worker woken by those may lower another's
  // count, which costs at most a spare wake-up, never a lost one).
  // relaxed everywhere: notify_work() reads it after its seq_cst fence,
  // and every lowering is sequenced before the fence in park() (or in
  // try_retire()), so the two fences order it as they order spinning_.
  std::atomic<std::int32_t> waking_{0};
  // Workers committed to sleeping minus wake permits handed out; >= 0.
  // Incremented by a parking worker, decremented by whoever claims it
  // (a waker, or the worker itself cancelling its park).
  alignas(detail::kCacheLineSize) std::atomic<std::int32_t> parked_{0};
  // Wake permits notify_work() handed out since Start() (stats().wakeups).
  // relaxed RMW by wakers: a running total that orders nothing. Next to
  // parked_, which the same wakers have just written.
  std::atomic<std::uint64_t> wakeups_{0};
  // Wake permits not yet consumed (low 16 bits: at most the sleepers,
  // <= kMaxWorkers, plus max_workers per stop_and_join() call, which joins
  // every thread the first time) and a generation that wake_all_parked()
  // steps (high 16 bits; it would take 65536 shrinks while one worker is
  // between reading the word and sleeping to wrap it round); parked
  // workers wait on the whole word.
  static constexpr std::uint32_t kPermitMask = 0xFFFF;
  static constexpr std::uint32_t kPermitGeneration = 0x10000;
  std::atomic<std::uint32_t> permits_{0};
  // Set once by stop_and_join(); read by workers.
  std::atomic<bool> stopping_{false};
};

}  // namespace fnbus
