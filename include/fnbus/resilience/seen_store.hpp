#pragma once

// Idempotency: remembers which event keys a function has handled, so that
// a replayed or duplicated event (a re-delivery from a broker, a replay
// from the dead-letter store) is handled once.
//
//   auto seen = fnbus::resilience::InMemorySeenStore::Create(
//       {.capacity = 100'000, .ttl = 24h});
//   if ((*seen)->first_sight(order.idempotency_key, clock.now())) {
//     charge(order);  // first time this key is seen within its TTL
//   }
//
// SeenStore is the interface a persistent store (a database table, Redis)
// implements; InMemorySeenStore keeps up to `capacity` keys, each for `ttl`
// from its first sight, forgetting the oldest first when full.
//
// Thread safety: InMemorySeenStore's methods may be called from any
// thread (one mutex). Implementations of SeenStore must be thread-safe:
// functions run on several workers at once.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"

namespace fnbus::resilience {

class SeenStore {
 public:
  virtual ~SeenStore() = default;

  // Records `key` as seen at `now`. True if it was not seen within its
  // TTL (go ahead and handle it), false if it was (a duplicate: skip).
  virtual bool first_sight(std::string_view key, TimePoint now) = 0;
  // Forgets `key`, so that its next sight is a first one again: for a
  // call that failed and will be retried or replayed.
  virtual void forget(std::string_view key) = 0;
};

struct SeenStoreOptions {
  std::size_t capacity = 100'000;         // keys kept (1 to 2^32)
  Duration ttl = std::chrono::hours(24);  // > 0: how long a key is kept
};

class InMemorySeenStore final : public SeenStore {
 public:
  struct Stats {
    std::uint64_t first_sights = 0;  // keys new (or past their TTL)
    std::uint64_t duplicates = 0;    // keys seen within their TTL
    std::uint64_t expired = 0;       // keys dropped after their TTL
    std::uint64_t evicted = 0;       // keys dropped for room (capacity)
  };

  // InvalidArgument naming every bad option and what to use instead.
  static absl::StatusOr<std::unique_ptr<InMemorySeenStore>> Create(
      SeenStoreOptions options);

  bool first_sight(std::string_view key, TimePoint now) override;
  void forget(std::string_view key) override;

  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] Stats stats() const;

 private:
  struct Entry {
    std::string key;
    TimePoint seen;
  };
  using Order = std::list<Entry>;  // newest first sight first

  explicit InMemorySeenStore(SeenStoreOptions options) noexcept
      : options_(options) {}
  // Under mutex_.
  void drop_expired(TimePoint now);
  [[nodiscard]] bool expired(const Entry& entry, TimePoint now) const;

  const SeenStoreOptions options_;
  mutable std::mutex mutex_;
  Order order_;  // guarded by mutex_
  absl::flat_hash_map<std::string, Order::iterator> by_key_;  // guarded
  Stats stats_;  // guarded by mutex_
};

}  // namespace fnbus::resilience
