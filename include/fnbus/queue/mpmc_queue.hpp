#pragma once

// Bounded lock-free multi-producer multi-consumer queue.

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "fnbus/detail/config.hpp"

namespace fnbus {

// A fixed-capacity FIFO ring shared by any number of producers and consumers.
//
// Algorithm: Dmitry Vyukov's bounded MPMC queue ("sequence-numbered ring"),
// in the turn-counting form of rigtorp/MPMCQueue. Producers take a ticket
// from `head_`, consumers from `tail_`; ticket t owns slot t % capacity in
// round t / capacity. Each slot's `turn` says whose turn it is:
// 2 * round means "empty, waiting for the producer of `round`",
// 2 * round + 1 means "full, waiting for the consumer of `round`".
//
// Guarantees:
// - try_push / try_pop are lock-free: a thread only retries when another
//   thread's ticket CAS succeeded. Never allocates after construction.
// - Linearizable FIFO per ticket order: an element pushed with a lower
//   ticket is popped with a lower ticket.
// - Memory ordering: actions before try_push(x) returned true are visible to
//   the thread whose try_pop returns x.
//
// Not guaranteed:
// - A try_push may fail while a consumer is halfway through freeing a slot,
//   and a try_pop may fail while a producer is halfway through filling one:
//   the answers "full" and "empty" are momentary.
// - size() and empty() are estimates when other threads are active.
// - Fairness between producers (or between consumers).
//
// Lifetime: the destructor destroys the elements still queued; no thread may
// use the queue while it runs. Not copyable, not movable.
template <typename T>
class MpmcQueue {
  static_assert(std::is_nothrow_destructible_v<T>,
                "MpmcQueue elements must have a noexcept destructor");

 public:
  // Capacity must be a power of two, at least 2. Use IsValidCapacity() to
  // check a user-supplied number first.
  explicit MpmcQueue(std::size_t capacity);
  ~MpmcQueue();

  MpmcQueue(const MpmcQueue&) = delete;
  MpmcQueue& operator=(const MpmcQueue&) = delete;

  static constexpr bool IsValidCapacity(std::size_t capacity) noexcept {
    return capacity >= 2 && std::has_single_bit(capacity) &&
           capacity <= (std::size_t{1} << 40);
  }

  // Constructs an element in place from `args` if a slot is free.
  // Returns false, constructing nothing, when the queue is full.
  // Thread safety: any thread. Never allocates. Lock-free.
  template <typename... Args>
  [[nodiscard]] bool try_emplace(Args&&... args) noexcept;

  [[nodiscard]] bool try_push(T&& value) noexcept {
    return try_emplace(std::move(value));
  }

  // Moves the oldest element into `out` if there is one.
  // Returns false, touching nothing, when the queue is empty.
  // Thread safety: any thread. Never allocates. Lock-free.
  [[nodiscard]] bool try_pop(T& out) noexcept;

  // Number of elements, an estimate while other threads are active
  // (it may count elements being pushed or popped right now).
  // Thread safety: any thread.
  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }

  // Whether the oldest element is ready to pop. Cheaper to poll than
  // size() while producers are active: it reads the consumer ticket and
  // one slot, so a poller shares only that slot's cache line with the
  // producer that fills it. May answer false while another consumer is
  // popping (its view of the ticket is then stale).
  // Thread safety: any thread. Memory ordering: when it returns true, the
  // element's construction is visible to the caller.
  [[nodiscard]] bool front_ready() const noexcept;
  [[nodiscard]] std::size_t capacity() const noexcept { return mask_ + 1; }

  // Total number of successful pushes since construction.
  // Thread safety: any thread; an estimate while producers are active.
  [[nodiscard]] std::uint64_t pushed_count() const noexcept {
    // relaxed: a statistic, orders nothing.
    return head_.load(std::memory_order_relaxed);
  }

 private:
  struct alignas(detail::kCacheLineSize) Slot {
    // Even 2r: empty, for the producer of round r. Odd 2r+1: holds the
    // element of round r, for its consumer. Written by the ticket holder
    // of the current round, read by every thread probing this slot.
    std::atomic<std::uint64_t> turn{0};
    alignas(T) std::byte storage[sizeof(T)];

    T* element() noexcept {
      return std::launder(reinterpret_cast<T*>(storage));
    }
  };

  static std::unique_ptr<Slot[]> allocate(std::size_t capacity);

  std::uint64_t round_of(std::uint64_t ticket) const noexcept {
    return ticket >> shift_;
  }
  Slot& slot_of(std::uint64_t ticket) noexcept {
    return slots_[ticket & mask_];
  }
  const Slot& slot_of(std::uint64_t ticket) const noexcept {
    return slots_[ticket & mask_];
  }

  const std::uint64_t mask_;
  const unsigned shift_;
  std::unique_ptr<Slot[]> slots_;
  // Next producer ticket. Only grows; CAS by producers.
  alignas(detail::kCacheLineSize) std::atomic<std::uint64_t> head_{0};
  // Next consumer ticket. Only grows; CAS by consumers.
  alignas(detail::kCacheLineSize) std::atomic<std::uint64_t> tail_{0};
};

// ---------------------------------------------------------------------------

template <typename T>
MpmcQueue<T>::MpmcQueue(std::size_t capacity)
    : mask_(capacity - 1),
      shift_(static_cast<unsigned>(std::countr_zero(capacity))),
      slots_(allocate(capacity)) {}

template <typename T>
auto MpmcQueue<T>::allocate(std::size_t capacity) -> std::unique_ptr<Slot[]> {
  // Checked before allocating: a bad capacity must fail with this message,
  // not with bad_alloc.
  FNBUS_ASSERT(IsValidCapacity(capacity),
               "MpmcQueue capacity must be a power of two from 2 to 2^40");
  return std::unique_ptr<Slot[]>(new Slot[capacity]);
}

template <typename T>
MpmcQueue<T>::~MpmcQueue() {
  // relaxed: no other thread may use the queue during destruction.
  const std::uint64_t head = head_.load(std::memory_order_relaxed);
  for (std::uint64_t t = tail_.load(std::memory_order_relaxed); t != head;
       ++t) {
    Slot& slot = slot_of(t);
    // relaxed: single-threaded here (see above).
    if (slot.turn.load(std::memory_order_relaxed) == 2 * round_of(t) + 1) {
      slot.element()->~T();
    }
  }
}

template <typename T>
template <typename... Args>
bool MpmcQueue<T>::try_emplace(Args&&... args) noexcept {
  static_assert(std::is_nothrow_constructible_v<T, Args&&...>,
                "MpmcQueue::try_emplace needs a noexcept constructor");
  // relaxed: the ticket only names a slot; the slot's turn (acquire below)
  // is what orders access to its storage.
  std::uint64_t head = head_.load(std::memory_order_relaxed);
  for (;;) {
    Slot& slot = slot_of(head);
    // acquire: pairs with the consumer's release store of the empty turn in
    // try_pop, so its move-out and destruction happen before we construct.
    const std::uint64_t turn = slot.turn.load(std::memory_order_acquire);
    if (turn == 2 * round_of(head)) {
      // relaxed on success: the slot's turn, not the ticket, publishes data;
      // the CAS only has to hand out each ticket once.
      if (head_.compare_exchange_weak(head, head + 1, std::memory_order_relaxed,
                                      std::memory_order_relaxed)) {
        ::new (static_cast<void*>(slot.storage)) T(std::forward<Args>(args)...);
        // release: publishes the element built above; pairs with the
        // acquire load of turn in try_pop.
        slot.turn.store(2 * round_of(head) + 1, std::memory_order_release);
        return true;
      }
      // CAS failure reloaded `head`; try the new ticket.
    } else {
      const std::uint64_t previous = head;
      // relaxed: see the first load of head_.
      head = head_.load(std::memory_order_relaxed);
      if (head == previous) return false;  // slot still owned: full
    }
  }
}

template <typename T>
bool MpmcQueue<T>::try_pop(T& out) noexcept {
  static_assert(std::is_nothrow_move_assignable_v<T>,
                "MpmcQueue::try_pop needs a noexcept move assignment");
  // relaxed: the ticket only names a slot; the turn orders the data.
  std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  for (;;) {
    Slot& slot = slot_of(tail);
    // acquire: pairs with the producer's release store of the full turn in
    // try_emplace, so the element's construction is visible here.
    const std::uint64_t turn = slot.turn.load(std::memory_order_acquire);
    if (turn == 2 * round_of(tail) + 1) {
      // relaxed on success: as in try_emplace, the turn publishes data.
      if (tail_.compare_exchange_weak(tail, tail + 1, std::memory_order_relaxed,
                                      std::memory_order_relaxed)) {
        T* element = slot.element();
        out = std::move(*element);
        element->~T();
        // release: our move-out and destruction happen before the producer
        // of the next round (acquire load of turn in try_emplace) reuses it.
        slot.turn.store(2 * (round_of(tail) + 1), std::memory_order_release);
        return true;
      }
    } else {
      const std::uint64_t previous = tail;
      // relaxed: see the first load of tail_.
      tail = tail_.load(std::memory_order_relaxed);
      if (tail == previous) return false;  // slot not filled yet: empty
    }
  }
}

template <typename T>
bool MpmcQueue<T>::front_ready() const noexcept {
  // relaxed: the ticket only names the slot to look at.
  const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  // acquire: pairs with the release store of the full turn in try_emplace.
  return slot_of(tail).turn.load(std::memory_order_acquire) ==
         2 * round_of(tail) + 1;
}

template <typename T>
std::size_t MpmcQueue<T>::size() const noexcept {
  // relaxed: an estimate by contract. Read tail first so that a concurrent
  // pop cannot make the difference negative more often than necessary.
  const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  const std::uint64_t head = head_.load(std::memory_order_relaxed);
  return head > tail ? static_cast<std::size_t>(head - tail) : 0;
}

}  // namespace fnbus
