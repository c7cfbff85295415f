#include "fnbus/exec/thread_pool.hpp"

#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "fmt/format.h"
#include <pthread.h>

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
    : source_(source), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<ThreadPool>> ThreadPool::Start(
    WorkSource& source, ThreadPoolOptions options) {
  std::unique_ptr<ThreadPool> pool(new ThreadPool(source, std::move(options)));
  const std::size_t count = pool->options_.workers;
  pool->threads_.reserve(count);
  try {
    for (std::size_t i = 0; i < count; ++i) {
      pool->threads_.emplace_back([p = pool.get(), i] { p->worker_loop(i); });
    }
  } catch (const std::system_error& error) {
    const std::size_t started = pool->threads_.size();
    pool->stop_and_join();
    return absl::ResourceExhaustedError(fmt::format(
        "could not start worker thread {} of {} ({}); lower the worker count "
        "or raise the process's thread limit",
        started + 1, count, error.what()));
  }
  return pool;
}

ThreadPool::~ThreadPool() { stop_and_join(); }

bool ThreadPool::is_own_worker() const noexcept {
  return tls_current_pool == this;
}

void ThreadPool::worker_loop(std::size_t index) noexcept {
  tls_current_pool = this;
  name_this_thread(options_.name_prefix, index);
  for (;;) {
    if (source_.run_one(index, [this] { on_work_taken(); })) continue;
    // acquire: pairs with the seq_cst store in stop_and_join(); work
    // offered before the stop is then visible to run_one() above on the
    // next round, and we only exit after it found none.
    if (stopping_.load(std::memory_order_acquire)) {
      if (!source_.has_work()) return;
      continue;
    }
    if (!spin_for_work()) park();
  }
}

void ThreadPool::on_work_taken() noexcept {
  // More work than awake workers: wake a helper before we run ours, so the
  // rest does not wait for our handler. relaxed: hints only; notify_work()
  // re-checks behind a fence.
  if (spinning_.load(std::memory_order_relaxed) == 0 &&
      parked_.load(std::memory_order_relaxed) > 0 && source_.has_work()) {
    notify_work();
  }
}

bool ThreadPool::spin_for_work() noexcept {
  // seq_cst: announces a spinner before we look for work; pairs with the
  // fence in notify_work(), which skips waking anyone while we spin.
  spinning_.fetch_add(1, std::memory_order_seq_cst);
  const auto deadline = std::chrono::steady_clock::now() + options_.idle_spin;
  bool found = false;
  for (std::uint32_t i = 1;; ++i) {
    if (source_.poll_work()) {
      found = true;
      break;
    }
    // Every 64 polls: the thorough check, stop requests, and the clock
    // (reading it costs ~20 ns here).
    if (i % 64 == 0) {
      // relaxed: stopping_ is re-read with acquire in worker_loop().
      if (source_.has_work() || stopping_.load(std::memory_order_relaxed)) {
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

void ThreadPool::park() noexcept {
  // seq_cst: the announcement half of the handshake with notify_work().
  parked_.fetch_add(1, std::memory_order_seq_cst);
  // Pairs with the fence in notify_work(): either it sees us parked, or
  // we see its work below.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // relaxed: ordered by the fence above.
  if (source_.has_work() || stopping_.load(std::memory_order_relaxed)) {
    // Withdraw, unless a waker has already claimed a parked worker (then
    // its permit is ours to consume, keeping parked_ = sleepers - permits).
    // relaxed: parked_ is a counter; permits_ carries the hand-off.
    std::int32_t parked = parked_.load(std::memory_order_relaxed);
    while (parked > 0) {
      if (parked_.compare_exchange_weak(parked, parked - 1,
                                        std::memory_order_relaxed)) {
        return;
      }
    }
  }
  acquire_wake_permit();
}

void ThreadPool::acquire_wake_permit() noexcept {
  for (;;) {
    // acquire: pairs with the release in wake_one() / stop_and_join().
    std::int32_t permits = permits_.load(std::memory_order_acquire);
    while (permits > 0) {
      // acquire: as above.
      if (permits_.compare_exchange_weak(permits, permits - 1,
                                         std::memory_order_acquire,
                                         std::memory_order_relaxed)) {
        return;
      }
    }
    // Sleeps until permits_ changes from `permits` (atomic wait re-checks
    // the value under the futex, so a release in between is not lost).
    permits_.wait(permits, std::memory_order_acquire);
  }
}

void ThreadPool::wake_one() noexcept {
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
  // relaxed: ordered by the fence above.
  if (spinning_.load(std::memory_order_relaxed) > 0) return;
  // relaxed: ordered by the fence above; the CAS claims one sleeper.
  std::int32_t parked = parked_.load(std::memory_order_relaxed);
  while (parked > 0) {
    if (parked_.compare_exchange_weak(parked, parked - 1,
                                      std::memory_order_relaxed)) {
      wake_one();
      return;
    }
  }
}

void ThreadPool::stop_and_join() noexcept {
  // seq_cst: ordered before the permits below and against park()'s fence.
  stopping_.store(true, std::memory_order_seq_cst);
  // release: as in wake_one(); enough permits for every worker to leave.
  permits_.fetch_add(static_cast<std::int32_t>(threads_.size()),
                     std::memory_order_release);
  permits_.notify_all();
  for (auto& thread : threads_) {
    if (thread.joinable() && thread.get_id() != std::this_thread::get_id()) {
      thread.join();
    }
  }
}

ThreadPoolStats ThreadPool::stats() const noexcept {
  // relaxed: a snapshot for display.
  const auto spinning = spinning_.load(std::memory_order_relaxed);
  const auto parked = parked_.load(std::memory_order_relaxed);
  return {threads_.size(),
          static_cast<std::size_t>(spinning < 0 ? 0 : spinning),
          static_cast<std::size_t>(parked < 0 ? 0 : parked)};
}

}  // namespace fnbus
