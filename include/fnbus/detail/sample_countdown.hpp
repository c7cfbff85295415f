#pragma once

// Which publishes a bus times when BusConfig::latency_sample_every is N > 1:
// each thread times one of every N events it publishes *to this bus*. The
// countdowns belong to the bus, one per thread, so that a thread publishing
// to several buses does not let one bus's sampling steal another's samples.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "fnbus/detail/config.hpp"
#include "fnbus/detail/thread_activity.hpp"

namespace fnbus::detail {

// Per-thread countdowns of one bus, indexed by ThreadRecord::index, in
// chunks allocated the first time a thread of that chunk publishes (so a
// thread's first publish to a sampling bus may allocate 4 KB; later ones
// never do).
//
// Thread safety: take() from any thread; each cell is written by the one
// thread owning that record (a recycled record's new owner continues its
// countdown, which the release/acquire hand-over of the record orders).
class SampleCountdowns {
 public:
  // `every`: 1 .. 65536; 1 times every publish and allocates nothing.
  explicit SampleCountdowns(std::uint32_t every)
      : every_(every),
        chunks_(every > 1 ? new std::atomic<Chunk*>[kChunks]() : nullptr) {}
  ~SampleCountdowns() {
    if (!chunks_) return;
    for (std::size_t i = 0; i < kChunks; ++i) {
      // relaxed: single-threaded destruction.
      delete chunks_[i].load(std::memory_order_relaxed);
    }
  }
  SampleCountdowns(const SampleCountdowns&) = delete;
  SampleCountdowns& operator=(const SampleCountdowns&) = delete;

  // Whether this publish of `record`'s thread is timed: the first, then
  // one in every_.
  [[nodiscard]] bool take(const ThreadRecord& record) noexcept {
    if (every_ == 1) [[likely]]
      return true;
    if (record.index >= kChunks * kChunkSize) [[unlikely]]
      return take_shared();
    std::atomic<std::uint32_t>* left = cell(record.index);
    if (left == nullptr) [[unlikely]]
      return false;  // out of memory: this event goes untimed
    // relaxed: only this thread writes its cell (see the class comment).
    const std::uint32_t now = left->load(std::memory_order_relaxed);
    if (now == 0) {
      left->store(every_ - 1, std::memory_order_relaxed);
      return true;
    }
    left->store(now - 1, std::memory_order_relaxed);
    return false;
  }

 private:
  static constexpr std::size_t kChunkSize = 64;
  static constexpr std::size_t kChunks = 1024;  // 65536 threads
  struct alignas(kCacheLineSize) Cell {
    std::atomic<std::uint32_t> left{0};  // untimed publishes before the next
  };
  struct Chunk {
    Cell cells[kChunkSize];
  };

  std::atomic<std::uint32_t>* cell(std::uint32_t index) noexcept {
    std::atomic<Chunk*>& slot = chunks_[index / kChunkSize];
    // acquire: pairs with the release CAS below; the chunk is initialised.
    Chunk* chunk = slot.load(std::memory_order_acquire);
    if (chunk == nullptr) [[unlikely]] {
      auto* fresh = new (std::nothrow) Chunk;
      if (fresh == nullptr) return nullptr;
      // acq_rel: publishes `fresh`, or acquires the winner's chunk.
      if (slot.compare_exchange_strong(chunk, fresh, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        chunk = fresh;
      } else {
        delete fresh;
      }
    }
    return &chunk->cells[index % kChunkSize].left;
  }
  // Threads past the table share one countdown (an atomic RMW, exact).
  bool take_shared() noexcept {
    // relaxed: a counter; nothing else is published through it.
    return shared_.fetch_add(1, std::memory_order_relaxed) % every_ == 0;
  }

  const std::uint32_t every_;
  const std::unique_ptr<std::atomic<Chunk*>[]> chunks_;
  std::atomic<std::uint64_t> shared_{0};
};

}  // namespace fnbus::detail
