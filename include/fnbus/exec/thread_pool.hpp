#pragma once

// Worker threads that run what a WorkSource offers, spinning briefly when
// idle and then parking.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
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
  // Takes and runs one unit of work on worker `worker` (0 .. size-1),
  // calling `taken()` after taking it and before running it (so the pool
  // can wake a helper for the rest while this unit runs). Returns false,
  // without calling `taken`, if there was none.
  virtual bool run_one(std::size_t worker,
                       absl::FunctionRef<void()> taken) noexcept = 0;
};

struct ThreadPoolOptions {
  std::size_t workers = 2;
  // How long an idle worker polls before it parks.
  std::chrono::nanoseconds idle_spin = std::chrono::microseconds(50);
  // Threads are named "<name_prefix><index>" where the OS allows.
  std::string name_prefix = "fnbus-w";
};

// A snapshot of what the workers are doing.
struct ThreadPoolStats {
  std::size_t workers = 0;
  std::size_t spinning = 0;  // polling for work
  std::size_t parked = 0;    // asleep until notified
};

// A fixed set of worker threads (the count will become adjustable; the
// wake protocol below does not assume it is constant).
//
// Wake protocol: a worker that finds no work spins for `idle_spin`, then
// announces itself parked and checks once more before sleeping.
// notify_work() wakes a parked worker only when no worker is spinning:
// a spinner will find the work. A worker that takes work while more
// remains and nobody spins wakes a helper before it runs what it took, so
// a burst fans out over the parked workers.
// No wake-up is lost: both sides use a seq_cst fence between their
// announcement and their check (a Dekker handshake).
//
// Thread safety: notify_work() and stats() from any thread;
// stop_and_join() from one thread that is not a worker.
class ThreadPool {
 public:
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

  // Workers run all the work they can still find, then exit; joins them.
  // Idempotent. Thread safety: not from a worker of this pool.
  void stop_and_join() noexcept;

  [[nodiscard]] std::size_t size() const noexcept { return threads_.size(); }
  [[nodiscard]] ThreadPoolStats stats() const noexcept;

  // True on one of this pool's worker threads.
  [[nodiscard]] bool is_own_worker() const noexcept;

 private:
  ThreadPool(WorkSource& source, ThreadPoolOptions options);
  void worker_loop(std::size_t index) noexcept;
  bool spin_for_work() noexcept;
  void park() noexcept;
  void wake_one() noexcept;
  void on_work_taken() noexcept;
  void acquire_wake_permit() noexcept;

  WorkSource& source_;
  const ThreadPoolOptions options_;
  std::vector<std::thread> threads_;

  // Workers in spin_for_work(). RMW by workers (seq_cst: the announcement
  // half of the wake handshake), read by notify_work().
  alignas(detail::kCacheLineSize) std::atomic<std::int32_t> spinning_{0};
  // Workers committed to sleeping minus wake permits handed out; >= 0.
  // Incremented by a parking worker, decremented by whoever claims it
  // (a waker, or the worker itself cancelling its park).
  alignas(detail::kCacheLineSize) std::atomic<std::int32_t> parked_{0};
  // Wake permits not yet consumed; parked workers wait on it.
  std::atomic<std::int32_t> permits_{0};
  // Set once by stop_and_join(); read by workers.
  std::atomic<bool> stopping_{false};
};

}  // namespace fnbus
