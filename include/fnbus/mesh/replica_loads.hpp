#pragma once

// How many calls each replica of a function has in flight: the gauge that
// the least-outstanding balancer compares (mesh/load_balancer.hpp).
//
//   ReplicaLoads loads(4);
//   {
//     ReplicaLoads::InFlight call = loads.begin(picked);  // +1
//     run(replica[picked]);
//   }                                                     // -1
//
// A call counts from begin() (when it is picked, so that a pick made just
// after sees it) until its InFlight token is ended or destroyed.
//
// Thread safety: every method from any thread, lock-free (one relaxed
// atomic add per begin and end, each replica's gauge on a cache line of
// its own, so replicas busy on different threads do not share a line).
// Not guaranteed: a reader sees the gauges of different replicas at
// slightly different instants; a load is a hint for picking, never a
// limit (use resilience::ConcurrencyLimit to cap calls).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

#include "fnbus/detail/config.hpp"

namespace fnbus::mesh {

class ReplicaLoads {
 public:
  // A call in flight on one replica: ends it (once) on end() or when
  // destroyed. Movable, not copyable. The ReplicaLoads must outlive it.
  // Thread safety: one token from one thread at a time.
  class InFlight {
   public:
    InFlight() = default;
    InFlight(InFlight&& other) noexcept
        : loads_(std::exchange(other.loads_, nullptr)), index_(other.index_) {}
    InFlight& operator=(InFlight&& other) noexcept {
      if (this != &other) {
        end();
        loads_ = std::exchange(other.loads_, nullptr);
        index_ = other.index_;
      }
      return *this;
    }
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;
    ~InFlight() { end(); }

    // Whether it still counts a call.
    explicit operator bool() const noexcept { return loads_ != nullptr; }
    [[nodiscard]] std::size_t replica() const noexcept { return index_; }
    // Stops counting the call; a second end() does nothing.
    void end() noexcept {
      if (loads_ != nullptr) std::exchange(loads_, nullptr)->finish(index_);
    }

   private:
    friend class ReplicaLoads;
    InFlight(ReplicaLoads* loads, std::size_t index) noexcept
        : loads_(loads), index_(index) {}
    ReplicaLoads* loads_ = nullptr;  // null: ended (or empty)
    std::size_t index_ = 0;
  };

  // Precondition: replicas >= 1 (ReplicaSet::Create checks it).
  explicit ReplicaLoads(std::size_t replicas)
      : size_(replicas), gauges_(std::make_unique<Gauge[]>(replicas)) {
    FNBUS_ASSERT(replicas >= 1, "ReplicaLoads needs at least one replica");
  }
  ReplicaLoads(const ReplicaLoads&) = delete;
  ReplicaLoads& operator=(const ReplicaLoads&) = delete;

  // Counts a call on `replica` (< size()) until the token ends.
  // Thread safety: any thread, lock-free.
  [[nodiscard]] InFlight begin(std::size_t replica) noexcept {
    // relaxed: the gauge publishes nothing; it is read as a number alone.
    gauges_[replica].value.fetch_add(1, std::memory_order_relaxed);
    return InFlight(this, replica);
  }
  // Calls in flight on `replica` now.
  // Thread safety: any thread, lock-free.
  [[nodiscard]] std::int64_t in_flight(std::size_t replica) const noexcept {
    return gauges_[replica].value.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  struct alignas(detail::kCacheLineSize) Gauge {
    // Calls begun minus calls ended on this replica: >= 0 once every token
    // begun before has ended. Added to by begin() and InFlight::end(),
    // from any thread; read by in_flight(). Relaxed throughout: the count
    // orders nothing else (a caller reads it to compare two replicas).
    std::atomic<std::int64_t> value{0};
  };
  static_assert(sizeof(Gauge) == detail::kCacheLineSize);

  void finish(std::size_t replica) noexcept {
    gauges_[replica].value.fetch_sub(1, std::memory_order_relaxed);
  }

  const std::size_t size_;
  const std::unique_ptr<Gauge[]> gauges_;
};

}  // namespace fnbus::mesh
