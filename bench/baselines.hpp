#pragma once

// Baselines that fnbus is measured against, in the same binary and run:
// - MutexCondvarQueue: the classic std::mutex + std::condition_variable
//   work queue with a fixed set of worker threads.
// - HandoffProbe: two threads handing a timestamp over through one atomic,
//   the floor for any cross-thread latency on this machine (its value moves
//   with the host's near/far vCPU state, see TOOLCHAIN.md).

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "support.hpp"

namespace fnbus_bench {

// An unbounded FIFO served by `workers` threads, each running `handler` on
// the events it pops. The destructor handles everything still queued,
// then joins the workers.
// Thread safety: publish() from any thread.
template <typename E>
class MutexCondvarQueue {
 public:
  MutexCondvarQueue(std::size_t workers, std::function<void(const E&)> handler)
      : handler_(std::move(handler)) {
    threads_.reserve(workers);
    for (std::size_t i = 0; i < workers; ++i) {
      threads_.emplace_back([this] { worker_loop(); });
    }
  }
  ~MutexCondvarQueue() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& thread : threads_) thread.join();
  }
  MutexCondvarQueue(const MutexCondvarQueue&) = delete;
  MutexCondvarQueue& operator=(const MutexCondvarQueue&) = delete;

  void publish(E event) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(event));
    }
    cv_.notify_one();
  }

 private:
  void worker_loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      E event = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      handler_(event);
      lock.lock();
    }
  }

  std::function<void(const E&)> handler_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<E> queue_;    // guarded by mutex_
  bool stopping_ = false;  // guarded by mutex_
  std::vector<std::thread> threads_;
};

// A second thread that spins on one cache line; measure() hands it a
// timestamp and returns the one-way latency the thread saw.
// Thread safety: measure() from one thread at a time.
class HandoffProbe {
 public:
  HandoffProbe() : thread_([this] { echo_loop(); }) {}
  ~HandoffProbe() {
    // relaxed: the echo thread polls it; nothing else to publish.
    stop_.store(true, std::memory_order_relaxed);
    thread_.join();
  }
  HandoffProbe(const HandoffProbe&) = delete;
  HandoffProbe& operator=(const HandoffProbe&) = delete;

  // Stores a timestamp and a new sequence number, waits for the echo
  // thread to see them, and returns its arrival time minus the timestamp.
  std::int64_t measure() noexcept {
    const std::uint64_t seq = ++last_seq_;
    line_.sent_ns.store(now_ns(), std::memory_order_relaxed);
    // release: publishes sent_ns; pairs with the acquire load in echo_loop.
    line_.seq.store(seq, std::memory_order_release);
    // acquire: pairs with the release store of ack in echo_loop.
    while (ack_.seq.load(std::memory_order_acquire) != seq) cpu_relax();
    return ack_.latency_ns.load(std::memory_order_relaxed);
  }

 private:
  void echo_loop() noexcept {
    std::uint64_t seen = 0;
    // relaxed: a stop request orders nothing.
    while (!stop_.load(std::memory_order_relaxed)) {
      // acquire: pairs with the release store in measure().
      const std::uint64_t seq = line_.seq.load(std::memory_order_acquire);
      if (seq == seen) {
        cpu_relax();
        continue;
      }
      const std::int64_t arrived = now_ns();
      seen = seq;
      ack_.latency_ns.store(
          arrived - line_.sent_ns.load(std::memory_order_relaxed),
          std::memory_order_relaxed);
      // release: publishes latency_ns; pairs with the acquire in measure().
      ack_.seq.store(seq, std::memory_order_release);
    }
  }

  // Producer -> echo: the timestamp shares the line with its sequence
  // number, as an event shares a queue slot with its turn counter.
  struct alignas(kCacheLineSize) Line {
    std::atomic<std::uint64_t> seq{0};
    std::atomic<std::int64_t> sent_ns{0};
  };
  struct alignas(kCacheLineSize) Ack {
    std::atomic<std::uint64_t> seq{0};
    std::atomic<std::int64_t> latency_ns{0};
  };

  Line line_;
  Ack ack_;
  std::atomic<bool> stop_{false};
  std::uint64_t last_seq_ = 0;  // measure() only
  std::thread thread_;          // last: starts after the members above
};

// Median one-way handoff latency over `samples` probes, taken with a fresh
// probe thread. Attached to the cross-thread benchmarks as "handoff_ns" so
// that each figure carries the near/far state it was measured in.
inline double handoff_p50_ns(std::size_t samples = 2000) {
  HandoffProbe probe;
  for (int i = 0; i < 100; ++i) (void)probe.measure();  // warm up
  std::vector<std::int64_t> latencies;
  latencies.reserve(samples);
  for (std::size_t i = 0; i < samples; ++i) {
    latencies.push_back(probe.measure());
  }
  return Percentiles::of(std::move(latencies)).p50;
}

}  // namespace fnbus_bench
