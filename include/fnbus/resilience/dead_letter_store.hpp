#pragma once

// A dead-letter store: keeps the events a bus gave up on (with why, where
// and their trace ids) so that an operator can inspect them, drain them
// elsewhere, or publish them again once the cause is fixed.
//
//   auto store = *fnbus::resilience::DeadLetterStore::Create(
//       {.capacity = 10'000, .persist = write_to_disk});
//   bus->set_dead_letter_sink(store->sink());
//   ...
//   fnbus::resilience::ReplaySummary summary = store->replay(
//       *bus, [](const fnbus::resilience::StoredDeadLetter& letter) {
//         return letter.function == "charge";
//       });
//
// Bounded: past `capacity` letters, DeadLetterFullPolicy says whether the
// oldest is evicted or the newest rejected. Either is counted (stats())
// and handed to `on_overflow`: a letter never disappears silently.
//
// Thread safety: every method may be called from any thread, also from
// the bus's handlers and sinks (one mutex). The callbacks (persist,
// on_overflow, a replay filter) are called without the store's lock held,
// so they may use the store; they may run on several threads at once.
// Not guaranteed: that persist sees letters in the order they are stored
// when several threads store at once.
//
// Lifetime: created as a shared_ptr; sink() shares it, so that a bus
// holding the sink keeps the store alive.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/event.hpp"
#include "fnbus/fwd.hpp"
#include "fnbus/options.hpp"
#include "fnbus/owned_event.hpp"

namespace fnbus::resilience {

// What a full store does with one more letter.
enum class DeadLetterFullPolicy {
  kDropOldest,    // evicts the oldest letter to make room (counted evicted)
  kRejectNewest,  // keeps the old letters, refuses the new one (rejected)
};

[[nodiscard]] std::string_view to_string(DeadLetterFullPolicy policy) noexcept;

// A dead letter as the store keeps it: DeadLetter with owned copies.
struct StoredDeadLetter {
  // A copy of the event; empty when its type has no copy constructor (or
  // copying it failed): the rest is kept all the same (counted in
  // DeadLetterStoreStats::not_copyable), but it cannot be replayed.
  OwnedEvent event = {};
  std::string event_type = {};  // event_type_name<E>(), also when empty
  DeadLetterReason reason = DeadLetterReason::kCancelledAtShutdown;
  std::string function = {};     // DeadLetter::function
  EventTrace trace = {};         // the event's trace ids
  std::uint32_t attempts = 0;    // DeadLetter::attempts
  absl::Status last_error = {};  // DeadLetter::last_error
  TimePoint when = {};           // when the store received it, on its clock
};

struct DeadLetterStoreOptions {
  // Letters kept: 1 .. 2^32.
  std::size_t capacity = 10'000;
  DeadLetterFullPolicy when_full = DeadLetterFullPolicy::kDropOldest;
  // Called with each letter the store receives, before it is stored (so
  // also with one that the bound then rejects or later evicts): write it
  // to disk or a table here. If it throws, the letter is stored all the
  // same and DeadLetterStoreStats::callback_errors counts it.
  std::function<void(const StoredDeadLetter&)> persist = {};
  // Called with each letter the bound evicts or rejects, after it left
  // the store. Exceptions: as persist's.
  std::function<void(const StoredDeadLetter&)> on_overflow = {};
  // Stamps StoredDeadLetter::when; null means SteadyClock::instance().
  std::shared_ptr<Clock> clock = {};
};

// Counters since Create(); each exact.
struct DeadLetterStoreStats {
  std::uint64_t stored = 0;         // letters taken in (rejected ones are not)
  std::uint64_t evicted = 0;        // stored letters removed to make room
  std::uint64_t rejected = 0;       // letters refused, the store being full
  std::uint64_t replayed = 0;       // letters the bus accepted in replay()
  std::uint64_t replay_failed = 0;  // letters the bus refused in replay()
  // Letters received whose event could not be copied (kept without it).
  std::uint64_t not_copyable = 0;
  std::uint64_t callback_errors = 0;  // persist or on_overflow threw
};

// What one replay() did.
struct ReplaySummary {
  std::size_t replayed = 0;       // accepted by the bus: removed from the store
  std::size_t failed = 0;         // refused by the bus: kept
  std::size_t skipped = 0;        // accepted by the filter but empty: kept
  absl::Status first_error = {};  // the first refusal, OK if none
};

class DeadLetterStore : public std::enable_shared_from_this<DeadLetterStore> {
 public:
  // Which letters replay() publishes; an empty filter takes all.
  using Filter = std::function<bool(const StoredDeadLetter&)>;

  // InvalidArgument naming every bad option and what to use instead.
  static absl::StatusOr<std::shared_ptr<DeadLetterStore>> Create(
      DeadLetterStoreOptions options = {});

  DeadLetterStore(const DeadLetterStore&) = delete;
  DeadLetterStore& operator=(const DeadLetterStore&) = delete;

  // A dead-letter sink for BusConfig::dead_letter_sink or
  // EventBus::set_dead_letter_sink() that add()s each letter; it shares
  // this store. Thread safety: any thread.
  [[nodiscard]] std::function<void(const DeadLetter&)> sink();

  // Keeps `letter` with a copy of its event (OwnedEvent::Copy), applying
  // the bound. Calls persist, then (if the bound dropped a letter)
  // on_overflow, on the calling thread. Throws std::bad_alloc.
  // Thread safety: any thread.
  void add(const DeadLetter& letter);

  // Letters held now.
  // Thread safety: any thread.
  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] std::size_t capacity() const noexcept {
    return options_.capacity;
  }
  [[nodiscard]] DeadLetterStoreStats stats() const;

  // Copies of the letters held now, oldest first, for inspection. The
  // events are copied under the store's lock (their copy constructors
  // must not use the store); one that fails to copy (bad_alloc, or a
  // throwing copy constructor) comes back empty.
  // Thread safety: any thread.
  [[nodiscard]] std::vector<StoredDeadLetter> snapshot() const;

  // Removes and returns every letter held, oldest first.
  // Thread safety: any thread.
  [[nodiscard]] std::vector<StoredDeadLetter> drain();

  // Publishes again (EventBus::try_publish(OwnedEvent&)) each letter that
  // `filter` accepts, oldest first, and removes those `bus` accepts; those
  // it refuses stay, as do empty ones (skipped) and those the filter
  // declines. Each replayed event continues its letter's trace: same
  // correlation id, the dead event's id as its parent.
  // While it runs, the letters it replays are out of the store (size(),
  // snapshot() and drain() do not see them) and it calls `filter` and the
  // bus without the lock; letters added meanwhile are kept and not
  // replayed. Afterwards the letters kept go back in front of those, and
  // if they are more than `capacity` the bound drops the oldest
  // (kDropOldest) or the newest (kRejectNewest), counted as evicted and
  // handed to on_overflow. If `filter` throws, every letter not replayed
  // is put back and the exception propagates.
  // Thread safety: any thread, also from a handler of `bus` (a publish
  // from a handler follows the bus's rules for that).
  ReplaySummary replay(EventBus& bus, const Filter& filter = {});

 private:
  explicit DeadLetterStore(DeadLetterStoreOptions options);

  // Stores `letter` (persist first) and reports what the bound dropped.
  void keep(StoredDeadLetter letter, bool copied);
  // Under mutex_: pops what is over capacity into `dropped`, from the
  // front (kDropOldest) or the back (kRejectNewest).
  void trim_locked(std::vector<StoredDeadLetter>& dropped);
  // Puts replay()'s kept letters back in front and counts the replay.
  void put_back(std::vector<StoredDeadLetter>& kept,
                const ReplaySummary& summary);
  // Calls persist or on_overflow, counting an exception.
  void call(const std::function<void(const StoredDeadLetter&)>& callback,
            const StoredDeadLetter& letter) noexcept;

  const DeadLetterStoreOptions options_;
  Clock* const clock_;  // options_.clock or SteadyClock::instance()
  mutable std::mutex mutex_;
  std::deque<StoredDeadLetter> letters_;  // oldest first; guarded by mutex_
  DeadLetterStoreStats stats_;            // guarded by mutex_
};

}  // namespace fnbus::resilience
