#pragma once

// Strands: per-key ordering on top of a multi-consumer work queue. A fixed
// table of small FIFOs, picked by hash(key); each strand runs its items
// one at a time, in the order they were pushed, while different strands
// run in parallel. The idea is asio's strand (asio/detail/strand_service:
// a fixed pool of strand implementations picked by hash, colliding
// strands serialised together; a strand that has work and is idle posts
// itself to the executor once); the code is our own.
//
// On the bus (PublishOptions::key; src/exec/bus_strands.cpp):
// - A keyed publish appends the event to strand index_of(key) and queues one
//   detail::StrandTurn in the bus's queue, in the publish's priority class (a
//   turn runs the strand's oldest event, whatever its class) -- or, from a
//   handler finding the queue full, in its worker's follow-up headroom. The
//   turn takes the queue slot the event would have taken, so the queue's bound
//   and BusConfig::overflow apply unchanged: a full queue is ResourceExhausted
//   (kReject, kInline, kManual) or a bounded wait (kBlock), and a refused keyed
//   event is not kept anywhere (try_publish hands it back). A strand also holds
//   at most queue_capacity + follow_up_headroom events (a key published faster
//   than its events run): past that its publishes are refused like those to a
//   full queue.
// - Guarantee: for each function, the events published with one key are
//   handled one at a time, in publish order (the order in which publish()
//   calls returned OK, for calls that do not overlap), whatever the
//   number of workers; events of other keys and unkeyed events run in
//   parallel. Its handler calls for one key never overlap, so they need no
//   lock of their own; memory written by the handler of one event is
//   visible to the handler of the key's next.
// - Failures and retries: an event whose handler fails is counted and
//   reported as usual. If a function retries it (FunctionOptions::retry),
//   or it waits for a max_concurrency slot, that later call keeps the
//   event's place: the key's strand is held (Strands::hold()) until every
//   such call of the event has reached its final outcome -- success, a
//   failure that is not retried, dead-lettered after its last retry,
//   refused, expired, lost at shutdown -- and only then does the key's
//   next event run (for every function: one function's retry holds the
//   key for all of them). After the last retry the event is
//   dead-lettered and its key goes on: a poison event holds its key for
//   its retries' backoff, never for ever. The dead letter is reported
//   before the key's next event runs. Held keys hold no worker: the
//   retry waits on a timer, the key's events in the strand.
// - Not guaranteed: keys whose hashes pick one strand
//   (BusConfig::key_strands; with K keys about K / key_strands per
//   strand) are serialised together -- slower, never reordered -- and
//   hold together: a retry of one key's event holds the keys that share
//   its strand too. There is no order across keys, nor between keyed and
//   unkeyed events.
// - Shutdown: every keyed event has its turn in the queue (or with the
//   strand's runner, or with its hold), so kDrain handles the strands'
//   events as it drains the queue, and kCancelPending (or a drain past
//   drain_timeout) dead-letters them with the usual reasons
//   (kCancelledAtShutdown, kDrainTimeout), counted per event type. A
//   retry still waiting on its timer is dead-lettered
//   (kRetryPendingAtShutdown), which releases its key: the key's next
//   events are then drained or dead-lettered like the rest.
// - A release that finds the queue full cannot queue the key's turn: it
//   is owed, and posted by the next worker (or run_one() & co., or
//   shutdown's sweep) to find the queue empty; a publish to the key also
//   resumes it.
// - Execution::kInline and kManual: a turn runs one event (run_one() runs
//   the oldest turn's event); a handler's keyed follow-ups of its own key
//   run after it returns, before that key's later events.
// - Counting: turns are never counted. A keyed event counts as published
//   when accepted and as dispatched (or dead-lettered) when its turn runs
//   it, under its own type, so published == dispatched + dead_lettered
//   after shutdown(); its queue wait includes the time in its strand.
//   BusStats::queue_depth counts its turn while the turn is queued.
// - Cost: the unkeyed path tests PublishOptions::key once per publish and
//   the type slot once per dispatch; a worker finding the queue empty
//   reads one counter (owed turns); the table (128 bytes per strand) is
//   allocated with the bus. Holds cost the retry path only.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/detail/config.hpp"
#include "fnbus/detail/spin_lock.hpp"
#include "fnbus/exec/ordering_key.hpp"

namespace fnbus {

// The size of a Strands table.
struct StrandsOptions {
  // Strands in the table: a power of two, 1 .. kMaxStrands. Keys share a
  // strand when their hashes pick the same one: more strands, fewer
  // keys serialised together (expected keys per strand: keys / strands).
  std::size_t strands = 1024;
  // Items one strand may hold (>= 1): push() says kFull past this.
  std::size_t capacity_per_strand = 4096;
};

// How Strands::push() ended.
enum class StrandPush {
  kPushed,     // appended; the strand's turn was posted
  kNotPosted,  // post() refused the turn: nothing appended
  kFull,       // the strand holds capacity_per_strand items
  kNoMemory,   // its FIFO could not grow
};

// How Strands::release() ended.
enum class StrandRelease {
  kStillHeld,  // other holds remain: the strand still waits
  kGoesOn,     // nothing to resume: a runner or a queued turn goes on
  kPosted,     // the strand was waiting: post() queued its turn
  kOwed,       // post() refused: the turn is owed (see repay_owed())
};

namespace detail {

// A growable ring of T (a strand's FIFO): no allocation while it holds
// fewer items than it has held before (up to kKeptCapacity, kept when it
// empties). Thread safety: none (guarded by its strand's lock).
template <typename T>
class StrandFifo {
 public:
  static_assert(std::is_nothrow_move_constructible_v<T>,
                "strand items are moved in and out under a lock");
  static constexpr std::uint32_t kFirstCapacity = 4;
  static constexpr std::uint32_t kKeptCapacity = 64;

  StrandFifo() = default;
  StrandFifo(const StrandFifo&) = delete;
  StrandFifo& operator=(const StrandFifo&) = delete;
  ~StrandFifo() {
    while (size_ > 0) (void)pop_front();
    release();
  }

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }

  // Room for one more item; false if out of memory.
  [[nodiscard]] bool reserve_one() noexcept {
    if (size_ < capacity_) [[likely]]
      return true;
    const std::uint32_t grown = capacity_ == 0 ? kFirstCapacity : capacity_ * 2;
    T* items = nullptr;
    try {
      items = std::allocator<T>().allocate(grown);
    } catch (const std::bad_alloc&) {
      return false;
    }
    for (std::uint32_t i = 0; i < size_; ++i) {
      T& from = items_[(head_ + i) & (capacity_ - 1)];
      ::new (static_cast<void*>(items + i)) T(std::move(from));
      from.~T();
    }
    release();
    items_ = items;
    capacity_ = grown;
    head_ = 0;
    return true;
  }
  // Precondition: reserve_one() returned true since the last push.
  void push_back(T&& item) noexcept {
    ::new (static_cast<void*>(&items_[(head_ + size_) & (capacity_ - 1)]))
        T(std::move(item));
    ++size_;
  }
  // Precondition: !empty().
  [[nodiscard]] T pop_front() noexcept {
    T& front = items_[head_];
    T item(std::move(front));
    front.~T();
    head_ = (head_ + 1) & (capacity_ - 1);
    if (--size_ == 0 && capacity_ > kKeptCapacity) release();
    return item;
  }

 private:
  void release() noexcept {
    if (items_ != nullptr) std::allocator<T>().deallocate(items_, capacity_);
    items_ = nullptr;
    capacity_ = 0;
    head_ = 0;
  }

  T* items_ = nullptr;
  std::uint32_t capacity_ = 0;  // 0 or a power of two
  std::uint32_t head_ = 0;
  std::uint32_t size_ = 0;
};

// The table size's problem, or empty (src/exec/strands.cpp).
[[nodiscard]] absl::Status check_strands_options(const StrandsOptions& options);
// hash -> strand index for a table of `strands` (a power of two).
[[nodiscard]] std::size_t strand_index(std::uint64_t hash,
                                       std::size_t strands) noexcept;

}  // namespace detail

// A fixed table of strands holding items of type T (the bus: queued
// events), for a pool whose workers take work from one shared queue.
//
// Protocol ("turns"). push() appends an item to its strand's FIFO and,
// under the same lock, posts one *turn* for that strand to the caller's
// work queue (post()); one turn per item. A worker that takes a turn calls
// run_turn(): if no one runs the strand, it becomes the strand's runner
// and runs the FIFO's head; if someone does, it leaves the turn with the
// runner (a count, `pending`) and returns at once. A runner that finishes
// an item runs the next one for each turn left with it, then stops. So
// each strand always has at most one runner, and it takes items in FIFO
// order. Invariant (under the strand's lock): items in the FIFO == turns
// not yet taken + turns left with the strand (`pending`, which a strand
// without a runner keeps as credit for its next one) -- so a turn always
// finds an item, and no item waits without a turn that will run it (or,
// while the strand is held, without the credit its release() resumes).
//
// Holds. hold() keeps a strand from running its next item until the
// matching release() (holds count: the last release resumes it). The bus
// holds a key's strand while a retry of the event it ran is pending, so
// that the retry keeps the event's place. A runner that finishes an item
// and finds its strand held stops; a turn taken while it is held is left
// as credit, as with a runner. The release() that ends the last hold of
// a strand with credit and no runner posts one turn for it (post()); when
// post() refuses (a full queue), the turn is *owed*: owes_turns() says so
// until repay_owed() posts it (the bus calls it whenever its queue is
// empty) or a runner starts on that strand (a push's own turn), which
// runs the credit anyway.
//
// Guarantees:
// - For any two items a, b pushed to one strand where push(a) returned
//   kPushed before push(b) began (e.g. from one thread, or ordered by a
//   lock): a's run() returns before b's run() begins. Items of one strand
//   never run concurrently.
// - Every pushed item is run exactly once, by some run_turn() of its
//   strand, provided every posted turn is taken and passed to run_turn()
//   (draining the queue drains the strands). A refused push (anything but
//   kPushed) leaves nothing behind: make() was not called and no turn is
//   outstanding.
// - A runner with turns left over after kTurnBudget items posts one of
//   them back (repost()) and stops, so that one busy key does not keep a
//   worker to itself (the rest are credit for that turn's runner); if
//   repost() refuses (a full queue), it keeps running.
// - For an item a whose run() called hold() (or that ran while the strand
//   was held), and an item b pushed after a: the matching release()
//   returns before b's run() begins. Everything done before release() is
//   visible to b's run() (the strand's lock again). Items are still run
//   exactly once, provided every hold is released and every owed turn is
//   repaid (repay_owed() when the queue has room).
// - Memory ordering: everything the pushing thread did before push() is
//   visible to run(item) (both sides hold the strand's lock around the
//   hand-over).
//
// Not guaranteed:
// - Any order between strands, or between keys that share a strand
//   beyond their push order (a hash collision serialises two keys; it
//   never reorders one).
// - Order between pushes that race (neither returned before the other
//   began): they run in the order they took the strand's lock.
// - Progress of a strand whose turns are never run: the table stores, the
//   caller's queue schedules.
//
// Memory: sizeof(Strand) (the lock, the oldest item inline, rounded up to
// cache lines: 128 bytes for the bus's envelopes) per strand up front; a
// strand holding two or more items allocates the rest, growing by
// doubling up to capacity_per_strand, keeping up to 64 slots when it
// empties.
//
// Thread safety: push(), run_turn(), hold(), release() and repay_owed()
// from any threads; post(), make(), repost() and run() are called by the
// calling thread. push(), release() and repay_owed() call post() and
// make() under the strand's lock: they must be short, must not throw and
// must not call into the table. run() is called without any lock and may
// call push(), hold() and release() (also for its own strand).
//
// Lifetime: neither copyable nor movable. Items still held when the table
// is destroyed are destroyed with it.
template <typename T>
class Strands {
 public:
  // Items a runner runs before it hands its remaining turns back to the
  // queue (see repost in run_turn()).
  static constexpr std::size_t kTurnBudget = 32;

  // Validates `options` (InvalidArgument naming the field and its range).
  static absl::StatusOr<std::unique_ptr<Strands>> Create(
      StrandsOptions options) {
    if (absl::Status status = detail::check_strands_options(options);
        !status.ok()) {
      return status;
    }
    return std::make_unique<Strands>(options);
  }
  // Precondition: `options` are valid (Create() checks them).
  explicit Strands(StrandsOptions options)
      : count_(options.strands),
        capacity_(options.capacity_per_strand),
        strands_(new Strand[options.strands]) {
    FNBUS_ASSERT(detail::check_strands_options(options).ok(),
                 "invalid StrandsOptions (Strands::Create reports why)");
  }
  Strands(const Strands&) = delete;
  Strands& operator=(const Strands&) = delete;

  // Strands in the table. Thread safety: any thread.
  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  // The strand `key` is serialised on. Thread safety: any thread.
  [[nodiscard]] std::size_t index_of(OrderingKey key) const noexcept {
    return detail::strand_index(key.hash(), count_);
  }

  // Appends `make()` (a T) to strand `strand` (< size()) after `post()`
  // queued a turn for it. post() returns false to refuse (e.g. a full
  // queue): then nothing is appended and make() is not called.
  // Returns how it ended (see StrandPush).
  // Thread safety: any thread; post() and make() run under the strand's
  // lock (see the class comment). Never allocates while the strand has
  // held as many items before (see Memory above).
  template <typename Post, typename Make>
  [[nodiscard]] StrandPush push(std::size_t strand, Post&& post,
                                Make&& make) noexcept {
    Strand& s = at(strand);
    std::lock_guard lock(s.lock);
    if (s.size() >= capacity_) return StrandPush::kFull;
    const bool to_first = s.empty();
    if (!to_first && !s.rest.reserve_one()) return StrandPush::kNoMemory;
    if (!post()) return StrandPush::kNotPosted;
    if (to_first) {
      ::new (static_cast<void*>(s.first)) T(make());
      s.has_first = true;
    } else {
      s.rest.push_back(make());
    }
    return StrandPush::kPushed;
  }

  // A turn of strand `strand` was taken: runs its items with `run(T&)`
  // (noexcept) as the protocol allows -- none when another thread is
  // running the strand (the turn is left with that runner). After
  // kTurnBudget items, with turns still left, calls `repost()` (noexcept,
  // returns bool) to queue one of them again and stops if it did.
  // Returns the items run.
  // Thread safety: any thread; run() runs with no lock held.
  template <typename Run, typename Repost>
  std::size_t run_turn(std::size_t strand, Run&& run,
                       Repost&& repost) noexcept {
    Strand& s = at(strand);
    std::unique_lock lock(s.lock);
    if (s.running || s.holds > 0) {
      // The runner, or the release that ends the hold, will run one more
      // item for it.
      ++s.pending;
      return 0;
    }
    s.running = true;
    if (s.owed) [[unlikely]]
      forgive(s);  // this runner runs the owed turn's item as well
    std::size_t ran = 0;
    for (;;) {
      FNBUS_ASSERT(!s.empty(), "a strand turn found no item");
      {
        T item = s.pop_front();
        lock.unlock();
        run(item);
      }  // the item is destroyed before the lock is taken again
      ++ran;
      lock.lock();
      // Held (a retry of that item is pending): the turns left stay as
      // credit for the release that ends the hold.
      if (s.holds > 0) [[unlikely]]
        break;
      if (s.pending == 0) break;
      --s.pending;  // the item run next is that turn's
      // Past the budget: that turn goes back to the queue; the others
      // stay as credit for whoever takes it.
      if (ran % kTurnBudget == 0 && repost()) break;
    }
    s.running = false;
    return ran;
  }
  template <typename Run>
  std::size_t run_turn(std::size_t strand, Run&& run) noexcept {
    return run_turn(strand, std::forward<Run>(run),
                    []() noexcept { return false; });
  }

  // Keeps strand `strand` from running its next item until release()
  // (one release per hold). Meant for run() of its own item, or for
  // whoever holds it already; the item running now finishes.
  // Thread safety: any thread. Never allocates.
  void hold(std::size_t strand) noexcept {
    Strand& s = at(strand);
    std::lock_guard lock(s.lock);
    ++s.holds;
  }

  // Ends one hold() of strand `strand`. The last one resumes the strand:
  // if it has credit and no runner, `post()` (noexcept, returns bool)
  // queues one turn for it, under the strand's lock; if post() refuses,
  // the turn is owed (see repay_owed()). Returns how it ended.
  // Thread safety: any thread (also run() of the strand's item). Memory
  // ordering: actions before release() are visible to the run() of the
  // strand's next item.
  template <typename Post>
  [[nodiscard]] StrandRelease release(std::size_t strand,
                                      Post&& post) noexcept {
    Strand& s = at(strand);
    std::lock_guard lock(s.lock);
    FNBUS_ASSERT(s.holds > 0, "Strands::release() without a hold()");
    if (--s.holds > 0) return StrandRelease::kStillHeld;
    // Running: its runner sees the hold gone. No credit: every item has
    // its turn still queued.
    if (s.running || s.pending == 0) return StrandRelease::kGoesOn;
    FNBUS_ASSERT(!s.owed, "a held strand cannot owe a turn");
    --s.pending;  // the turn posted now is that credit's
    if (post()) return StrandRelease::kPosted;
    ++s.pending;
    s.owed = true;
    // relaxed: a hint (see owed_).
    owed_.fetch_add(1, std::memory_order_relaxed);
    return StrandRelease::kOwed;
  }

  // Whether some strand owes a turn (a release() whose post() refused).
  // Thread safety: any thread; a hint, exact once the table is quiet.
  [[nodiscard]] bool owes_turns() const noexcept {
    // relaxed: a hint (see owed_).
    return owed_.load(std::memory_order_relaxed) > 0;
  }

  // Posts the turns owed, with `post(strand)` (noexcept, returns bool)
  // under each strand's lock, until one is refused. Returns whether any
  // was posted. Cheap when none is owed (one relaxed load).
  // Thread safety: any thread.
  template <typename Post>
  bool repay_owed(Post&& post) noexcept {
    bool posted = false;
    for (std::size_t i = 0; i < count_ && owes_turns(); ++i) {
      Strand& s = strands_[i];
      std::lock_guard lock(s.lock);
      if (!s.owed) continue;
      if (!post(i)) break;  // still full: the next call tries again
      --s.pending;          // the turn posted is the owed credit's
      forgive(s);
      posted = true;
    }
    return posted;
  }

  // Holds on strand `strand` now (see hold()).
  // Thread safety: any thread (takes the strand's lock).
  [[nodiscard]] std::size_t holds(std::size_t strand) const noexcept {
    Strand& s = at(strand);
    std::lock_guard lock(s.lock);
    return s.holds;
  }

  // Items strand `strand` holds now (waiting, not running).
  // Thread safety: any thread (takes the strand's lock).
  [[nodiscard]] std::size_t held(std::size_t strand) const noexcept {
    Strand& s = at(strand);
    std::lock_guard lock(s.lock);
    return s.size();
  }

 private:
  struct alignas(detail::kCacheLineSize) Strand {
    detail::SpinLock lock;
    // A thread is inside run_turn() running this strand. Guarded by lock.
    bool running = false;
    // `first` holds an item (see below). Guarded by lock.
    bool has_first = false;
    // A release() could not post this strand's turn: one unit of
    // `pending` waits for repay_owed() (or a runner). Guarded by lock.
    bool owed = false;
    // Turns taken while running or held: the runner runs one item for
    // each. Guarded by lock.
    std::uint32_t pending = 0;
    // The items, oldest first: `first` if has_first, then `rest`. An item
    // goes to `first` only when the strand is empty, so `first` is always
    // the oldest; a strand that rarely holds two items never touches
    // `rest`, and its item shares the cache line of the lock. Guarded by
    // lock. (Layout: a small event's envelope fits in the first cache
    // line with the lock; `rest` is read there but written only while
    // the strand holds two or more items.)
    alignas(T) std::byte first[sizeof(T)];
    detail::StrandFifo<T> rest;
    // hold()s not yet released: no item starts while > 0. Guarded by
    // lock. (After `rest`, in its padding: `first` keeps its offset.)
    std::uint32_t holds = 0;

    Strand() = default;
    Strand(const Strand&) = delete;
    Strand& operator=(const Strand&) = delete;
    ~Strand() {
      if (has_first) std::launder(reinterpret_cast<T*>(first))->~T();
    }
    [[nodiscard]] std::size_t size() const noexcept {
      return (has_first ? 1 : 0) + rest.size();
    }
    [[nodiscard]] bool empty() const noexcept {
      return !has_first && rest.empty();
    }
    [[nodiscard]] T pop_front() noexcept {
      if (!has_first) return rest.pop_front();
      T* item = std::launder(reinterpret_cast<T*>(first));
      T popped(std::move(*item));
      item->~T();
      has_first = false;
      return popped;
    }
  };

  // Clears `s.owed` (its lock held): a runner or a posted turn has its
  // credit now.
  void forgive(Strand& s) noexcept {
    s.owed = false;
    // relaxed: a hint (see owed_).
    owed_.fetch_sub(1, std::memory_order_relaxed);
  }
  [[nodiscard]] Strand& at(std::size_t strand) const noexcept {
    FNBUS_ASSERT(strand < count_, "strand index out of range");
    return strands_[strand];
  }

  const std::size_t count_;
  const std::size_t capacity_;
  const std::unique_ptr<Strand[]> strands_;
  // Strands whose `owed` is set. RMW under that strand's lock; read
  // without it by owes_turns() as a hint: the strand's state is re-read
  // under its lock before it is acted on, and a caller that must not miss
  // a new debt orders it with fences of its own (the bus: the pool's
  // notify_work() / park() handshake, which covers has_work()).
  std::atomic<std::size_t> owed_{0};
};

}  // namespace fnbus
