#pragma once

// The routing table of one versioned function: a stable version and at
// most one canary that takes a share of the calls (a weighted split),
// optionally sticky by key.
//
//   auto split = fnbus::mesh::VersionSplit::Create("v1");
//   auto v2 = (*split)->deploy_canary("v2", 0.05);   // 5% of calls
//   fnbus::mesh::Route route = (*split)->route(random.next());
//   fnbus::mesh::Route same = (*split)->route_key("customer-42");
//   (*split)->promote();  // or rollback()
//
// Weight: the canary's share of calls, a double in [0, 1] (0.05 = 5%);
// the stable version takes the rest, so there is nothing else to sum. It
// is kept as a 53-bit threshold: a draw routes to the canary when its top
// 53 bits are below weight * 2^53 (so weights are exact to 2^-53).
// Sticky routing hashes the key instead of drawing: the same key goes to
// the same version while the table is unchanged, and raising the weight
// only moves keys from the stable version to the canary, never back. The
// hash is salted with the canary's label, so each canary gets its own
// sample of keys.
//
// Versions get ids 1, 2, 3, ... in deploy order (the first, stable, one is
// 1); an id is never reused, so it names one deploy for the metrics
// (label(id)) even after the version has left the table.
//
// Thread safety: route(), route_key() and table() from any thread at any
// time: they take no lock and write nothing shared (a sequence lock:
// they retry while a change is being published, which is a few stores;
// a writer descheduled in the middle of those makes them spin until it
// runs again, so they are not lock-free in the strict sense).
// The changes (deploy_canary, set_weight, promote, rollback) from any
// thread; they are serialised by a mutex.
// Guarantees: for any call of route(d) or route_key(k), the result is what
// SplitTable::route(d) (route_key(k)) gives for one table that was
// published (table() returned it or could have), never a mix of two; a
// route that starts after a change has returned sees that change or a
// later one.
// Not guaranteed: a route running while a change is published may see the
// table before it. A version that has left the table may still receive
// the calls routed to it just before: the caller runs each routed call on
// the version it was routed to, exactly once.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fnbus::mesh {

// Names one deployed version of a function; 0 = none.
using VersionId = std::uint32_t;
inline constexpr VersionId kNoVersion = 0;

// Where one call goes.
struct Route {
  VersionId version = kNoVersion;
  bool canary = false;  // version is the table's canary
  // The table the route was taken from (SplitTable::generation).
  std::uint64_t generation = 0;
};

// One published state of the split. A value: routing on it is pure.
struct SplitTable {
  // 1 for the table Create() publishes, +1 for each change.
  std::uint64_t generation = 0;
  VersionId stable = kNoVersion;
  VersionId canary = kNoVersion;  // kNoVersion: no canary
  // Draws whose top 53 bits are below this go to the canary: in
  // [0, 2^53]; 0 without a canary.
  std::uint64_t threshold = 0;
  // Salts route_key()'s hash (from the canary's label).
  std::uint64_t salt = 0;

  // The canary's share of calls, threshold / 2^53.
  [[nodiscard]] double weight() const noexcept;
  // The route of a call whose random draw is `draw` (64 uniform bits).
  [[nodiscard]] Route route(std::uint64_t draw) const noexcept;
  // The route of a call with key `key`: the same for the same key.
  [[nodiscard]] Route route_key(std::string_view key) const noexcept;
};

class VersionSplit {
 public:
  // A split whose only version, `stable_label`, takes every call.
  // InvalidArgument if the label is empty.
  static absl::StatusOr<std::unique_ptr<VersionSplit>> Create(
      std::string_view stable_label);

  // Publishes `label` as the canary with `weight` of the calls.
  // Returns its id, or InvalidArgument (empty label, weight outside [0, 1]
  // or NaN), AlreadyExists (the label is live) or FailedPrecondition (a
  // canary is live: promote or roll it back first).
  // Thread safety: any thread (takes the mutex).
  absl::StatusOr<VersionId> deploy_canary(std::string_view label,
                                          double weight);
  // Changes the live canary's weight (InvalidArgument as above;
  // FailedPrecondition without a canary).
  absl::Status set_weight(double weight);
  // The canary becomes the stable version and takes every call; the old
  // stable version leaves the table. FailedPrecondition without a canary.
  absl::Status promote();
  // The canary leaves the table; the stable version takes every call.
  // FailedPrecondition without a canary.
  absl::Status rollback();
  // rollback() if `canary` is still the live canary, else
  // FailedPrecondition (it was promoted or rolled back meanwhile): for a
  // verdict reached about a canary that may no longer be live.
  absl::Status rollback_canary(VersionId canary);

  // The id the next deploy_canary() will return (if it succeeds).
  // Thread safety: any thread (takes the mutex).
  [[nodiscard]] VersionId next_version() const;
  // The label of version `id` (live or not); empty for an unknown id.
  // Thread safety: any thread (takes the mutex).
  [[nodiscard]] std::string label(VersionId id) const;

  // The current table.
  // Thread safety: any thread; lock-free, writes nothing shared.
  // Memory ordering: changes made before the one that published the table
  // are visible to the caller.
  [[nodiscard]] SplitTable table() const noexcept;
  // table().route(draw) / table().route_key(key).
  [[nodiscard]] Route route(std::uint64_t draw) const noexcept {
    return table().route(draw);
  }
  [[nodiscard]] Route route_key(std::string_view key) const noexcept {
    return table().route_key(key);
  }

 private:
  explicit VersionSplit(std::string stable_label);
  // Publishes the table with these fields under mutex_; generation + 1.
  void publish(VersionId stable, VersionId canary, std::uint64_t threshold,
               std::uint64_t salt) noexcept;
  // Takes mutex_; the canary leaves (`promote`: as the stable version);
  // FailedPrecondition without one, or if it is not `expected` (unless
  // that is kNoVersion).
  absl::Status end_canary(VersionId expected, bool promote);
  [[nodiscard]] absl::Status no_canary_error(std::string_view what) const;

  // Serialises the changes; guards labels_ and the writes below.
  mutable std::mutex mutex_;
  std::vector<std::string> labels_;  // labels_[id - 1]
  // The sequence lock: odd while publish() writes the fields, even
  // (2 * generation) once they hold a whole table. Written by publish()
  // only; read by table(), which retries on odd or changed values.
  std::atomic<std::uint64_t> sequence_{0};
  // The table's fields, written by publish() (release: each pairs with
  // the acquire load of that field in table(), so a reader that sees a
  // new field also sees sequence_ odd) and read by table().
  std::atomic<VersionId> stable_{kNoVersion};
  std::atomic<VersionId> canary_{kNoVersion};
  std::atomic<std::uint64_t> threshold_{0};
  std::atomic<std::uint64_t> salt_{0};
};

}  // namespace fnbus::mesh
