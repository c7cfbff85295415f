#pragma once

// Where a bus keeps its counters and latency histograms: per event type and
// per function, sharded by worker so that recording never shares a cache
// line with another writer, and merged when read.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"

#include "fnbus/detail/config.hpp"
#include "fnbus/detail/type_slot.hpp"
#include "fnbus/metrics/histogram.hpp"
#include "fnbus/metrics/snapshot.hpp"
#include "fnbus/options.hpp"
#include "fnbus/resilience/breaker_state.hpp"
#include "fnbus/resilience/circuit_breaker.hpp"

namespace fnbus::detail {

// Adds one to a counter that only one thread writes: a plain load and
// store instead of a locked read-modify-write.
inline void bump(std::atomic<std::uint64_t>& counter) noexcept {
  // relaxed: single writer; readers want a recent value, no ordering.
  counter.store(counter.load(std::memory_order_relaxed) + 1,
                std::memory_order_relaxed);
}

// A sparse array indexed by a dense id (type slot or function id), grown
// in chunks and never shrunk, so that readers can walk it without a lock
// while writers add entries. Writers must be serialised by the caller
// (one owner thread, or a lock).
template <typename T>
class LazyTable {
 public:
  static constexpr unsigned kChunkBits = 8;
  static constexpr std::size_t kChunkSize = std::size_t{1} << kChunkBits;
  static constexpr std::size_t kChunks = 256;
  static constexpr std::size_t kCapacity = kChunkSize * kChunks;  // 65536

  LazyTable() = default;
  LazyTable(const LazyTable&) = delete;
  LazyTable& operator=(const LazyTable&) = delete;
  ~LazyTable() {
    for (auto& chunk_ptr : chunks_) {
      // relaxed: destruction; no reader is left.
      Chunk* chunk = chunk_ptr.load(std::memory_order_relaxed);
      if (chunk == nullptr) continue;
      for (auto& item : chunk->items) {
        // relaxed: as above.
        delete item.load(std::memory_order_relaxed);
      }
      delete chunk;
    }
  }

  // The entry for `id`, or nullptr. Thread safety: any thread.
  [[nodiscard]] T* find(std::uint32_t id) const noexcept {
    if (id >= kCapacity) return nullptr;
    // acquire: pairs with the release in get_or_create(); the chunk's
    // pointers are initialised before we read them.
    const Chunk* chunk =
        chunks_[id >> kChunkBits].load(std::memory_order_acquire);
    if (chunk == nullptr) return nullptr;
    // acquire: pairs with the release in get_or_create(); the entry is
    // constructed before we use it.
    return chunk->items[id & (kChunkSize - 1)].load(std::memory_order_acquire);
  }

  // The entry for `id`, made with `make()` if missing. Precondition:
  // id < kCapacity; writers serialised by the caller. May throw bad_alloc.
  template <typename Make>
  T& get_or_create(std::uint32_t id, Make&& make) {
    if (T* found = find(id)) [[likely]]
      return *found;
    FNBUS_ASSERT(id < kCapacity, "more than 65536 event types or functions");
    auto& chunk_ptr = chunks_[id >> kChunkBits];
    // relaxed: writers are serialised, so we see our own earlier stores.
    Chunk* chunk = chunk_ptr.load(std::memory_order_relaxed);
    if (chunk == nullptr) {
      chunk = new Chunk();
      // release: publishes the zeroed chunk to find().
      chunk_ptr.store(chunk, std::memory_order_release);
    }
    T* item = make();
    // release: publishes the constructed entry to find().
    chunk->items[id & (kChunkSize - 1)].store(item, std::memory_order_release);
    return *item;
  }

  // Calls fn(id, entry) for every entry. Thread safety: any thread.
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (std::size_t c = 0; c < kChunks; ++c) {
      // acquire: as in find().
      const Chunk* chunk = chunks_[c].load(std::memory_order_acquire);
      if (chunk == nullptr) continue;
      for (std::size_t i = 0; i < kChunkSize; ++i) {
        // acquire: as in find().
        if (const T* item = chunk->items[i].load(std::memory_order_acquire)) {
          fn(static_cast<std::uint32_t>((c << kChunkBits) | i), *item);
        }
      }
    }
  }

 private:
  struct Chunk {
    // Null until set once by the (serialised) writer with release; never
    // changed after; read with acquire.
    std::atomic<T*> items[kChunkSize] = {};
  };
  // As Chunk::items.
  std::atomic<Chunk*> chunks_[kChunks] = {};
};

// Bus-wide facts about one event type, written by publishers.
struct TypeInfo {
  explicit TypeInfo(std::string_view type_name) : name(type_name) {}
  const std::string_view name;  // static storage (event_type_name<E>())
  // RMW by any publisher (relaxed: statistics, no data published).
  alignas(kCacheLineSize) std::atomic<std::uint64_t> published{0};
  // As published.
  std::atomic<std::uint64_t> rejected{0};
};

// The circuit breakers of one function, bus-wide. Transitions are rare
// and made by whichever thread ran the call, so they are counted here with
// atomic read-modify-writes, not in a worker's series; a function without
// a breaker has none of this.
struct BreakerSeries {
  static constexpr std::size_t kStates = 3;  // BreakerState's enumerators
  // Live breakers in each state, indexed by BreakerState: each breaker
  // adds 1 here (through its BreakerTally) while it is in that state.
  // Changed by any thread with relaxed RMWs, read relaxed by fill():
  // counts, nothing is published through them. Signed: two transitions of
  // one breaker reported by two threads may arrive in either order (see
  // resilience::BreakerObserver), so a count may be -1 for a moment;
  // fill() reads it as 0.
  std::atomic<std::int64_t> in_state[kStates] = {};
  // Transitions by the state entered; relaxed RMWs, as in_state.
  std::atomic<std::uint64_t> opened{0};
  std::atomic<std::uint64_t> half_opened{0};
  std::atomic<std::uint64_t> closed{0};
};

// One breaker's share of its function's BreakerSeries, kept by the
// breaker's observer: the breaker counts as closed from construction,
// each transition moves it, and the destructor (the breaker's, when its
// subscription's handler is destroyed) takes back what it added, so the
// series counts live breakers alone.
// Thread safety: on_transition() from any thread, also concurrently;
// destruction after the last on_transition() returned.
class BreakerTally {
 public:
  explicit BreakerTally(std::shared_ptr<BreakerSeries> series);
  BreakerTally(const BreakerTally&) = delete;
  BreakerTally& operator=(const BreakerTally&) = delete;
  ~BreakerTally();

  void on_transition(const resilience::BreakerTransition& transition) noexcept;

 private:
  void add(resilience::BreakerState state, std::int64_t delta) noexcept;

  const std::shared_ptr<BreakerSeries> series_;
  // What this breaker added to series_->in_state, to take back: relaxed
  // RMWs as there; the destructor's relaxed loads are ordered after every
  // on_transition() by whatever ordered the breaker's destruction after
  // its last call.
  std::atomic<std::int64_t> mine_[BreakerSeries::kStates] = {};
};

// One function: the subscriptions to one type under one name.
struct FunctionInfo {
  TypeSlot slot;
  std::string_view event;
  std::string name;
  // Made by the first subscription with a breaker (breaker_series()).
  std::shared_ptr<BreakerSeries> breakers;
  // Its dead letters by reason (count_dead_letter(); guarded by
  // BusMetrics::mutex_: they are rare).
  metrics::DeadLetterCounts dead_letters;
};

// What one worker recorded about one event type. Its counters are written
// only by the shard's owner (bump(): relaxed load + store) and read relaxed
// by totals() and fill(). Cache-line aligned: series of different workers
// are allocated by different threads and must not share a line.
struct alignas(kCacheLineSize) TypeSeries {
  explicit TypeSeries(bool timed);
  std::atomic<std::uint64_t> dispatched{0};
  std::atomic<std::uint64_t> unhandled{0};
  std::atomic<std::uint64_t> dead_lettered{0};
  // Present when latency is recorded.
  const std::unique_ptr<metrics::LatencyRecorder> queue_wait;
  const std::unique_ptr<metrics::LatencyRecorder> end_to_end;
};

// What one worker recorded about one function; as TypeSeries.
struct alignas(kCacheLineSize) FunctionSeries {
  explicit FunctionSeries(bool timed);
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> failed{0};
  // The outcomes of a function's stages (resilience::Pipeline).
  std::atomic<std::uint64_t> filtered{0};
  std::atomic<std::uint64_t> duplicates{0};
  std::atomic<std::uint64_t> rejected{0};  // breaker open, no fallback
  std::atomic<std::uint64_t> fell_back{0};
  std::atomic<std::uint64_t> timed_out{0};  // ended after the deadline
  std::atomic<std::uint64_t> late{0};       // ... having succeeded
  std::atomic<std::uint64_t> retried{0};    // failed calls retried
  std::atomic<std::uint64_t> throttled{0};  // waited for a slot
  const std::unique_ptr<metrics::LatencyRecorder> run_time;
};

// Everything one worker (one writer at a time) records.
struct alignas(kCacheLineSize) WorkerShard {
  LazyTable<TypeSeries> types;
  LazyTable<FunctionSeries> functions;
  // Whether the owner is handling an event now (the in-flight gauge).
  // Stored (relaxed) by the owner around each event, read by metrics().
  std::atomic<bool> in_event{false};
};

// The metrics of one bus.
class BusMetrics {
 public:
  // Distinct functions (type, name) with a series of their own; later ones
  // share one series named kOverflowFunction.
  static constexpr std::size_t kMaxFunctions =
      LazyTable<FunctionSeries>::kCapacity;
  static constexpr std::string_view kOverflowFunction = "<other functions>";

  BusMetrics(std::size_t shards, bool timed,
             std::size_t max_functions = kMaxFunctions);

  [[nodiscard]] bool timed() const noexcept { return timed_; }
  [[nodiscard]] WorkerShard& shard(std::size_t index) noexcept {
    return shards_[index];
  }
  [[nodiscard]] const WorkerShard& shard(std::size_t index) const noexcept {
    return shards_[index];
  }
  [[nodiscard]] std::size_t shard_count() const noexcept {
    return shard_count_;
  }

  // The bus-wide record of a type, created on first use. Thread safety:
  // any thread. May throw bad_alloc the first time.
  [[nodiscard]] TypeInfo& type_info(TypeSlot slot, std::string_view name) {
    if (TypeInfo* info = types_.find(slot)) [[likely]]
      return *info;
    return create_type_info(slot, name);
  }
  // A shard's series, created by its writer on first use.
  [[nodiscard]] TypeSeries& type_series(WorkerShard& shard, TypeSlot slot) {
    return shard.types.get_or_create(slot,
                                     [&] { return new TypeSeries(timed_); });
  }
  [[nodiscard]] FunctionSeries& function_series(WorkerShard& shard,
                                                std::uint32_t function_id) {
    return shard.functions.get_or_create(
        function_id, [&] { return new FunctionSeries(timed_); });
  }

  // The id of function `name` on type `slot`, assigned on first use; once
  // max_functions - 1 ids are taken, the id of the shared overflow series.
  // Ids are never reclaimed: a function keeps its series for the bus's
  // lifetime. Thread safety: any thread (takes a lock).
  std::uint32_t function_id(TypeSlot slot, std::string_view event,
                            const std::string& name);
  // The breaker series of function `function_id` (from function_id()),
  // made on first use. Shared: a breaker's tally keeps it, also past the
  // bus (a Subscription may keep its handler alive).
  // Thread safety: any thread (takes a lock). May throw bad_alloc.
  std::shared_ptr<BreakerSeries> breaker_series(std::uint32_t function_id);
  // Counts a dead letter of the function `function_id` (an id from
  // function_id()). Any thread; takes a lock.
  void count_dead_letter(std::uint32_t function_id,
                         DeadLetterReason reason) noexcept;

  // Sums of every counter (for BusStats).
  struct Totals {
    std::uint64_t published = 0, rejected = 0, dispatched = 0, delivered = 0,
                  failed = 0, unhandled = 0, dead_lettered = 0;
  };
  [[nodiscard]] Totals totals() const;
  // Counters and histograms per type and function (gauges left empty).
  void fill(metrics::MetricsSnapshot& snapshot) const;

 private:
  TypeInfo& create_type_info(TypeSlot slot, std::string_view name);

  const bool timed_;
  const std::size_t max_functions_;
  const std::size_t shard_count_;
  const std::unique_ptr<WorkerShard[]> shards_;
  mutable std::mutex mutex_;  // serialises creation in types_ and functions
  LazyTable<TypeInfo> types_;
  std::vector<FunctionInfo> functions_;  // by id; guarded by mutex_
  absl::flat_hash_map<std::pair<TypeSlot, std::string>, std::uint32_t>
      function_ids_;  // guarded by mutex_
};

}  // namespace fnbus::detail
