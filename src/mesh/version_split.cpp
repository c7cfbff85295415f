#include "fnbus/mesh/version_split.hpp"

#include <cmath>
#include <string>
#include <utility>

#include "fmt/format.h"

namespace fnbus::mesh {
namespace {

constexpr std::uint64_t kOne = std::uint64_t{1} << 53;  // weight 1

// splitmix64's finaliser: spreads every input bit over the output.
std::uint64_t mix(std::uint64_t x) noexcept {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// FNV-1a: the same on every platform and run (unlike absl::Hash, which is
// seeded per process), so a key sticks across restarts too.
std::uint64_t fnv1a(std::string_view bytes) noexcept {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (const char c : bytes) {
    hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  }
  return hash;
}

absl::Status check_weight(double weight) {
  if (weight >= 0.0 && weight <= 1.0) return absl::OkStatus();  // not NaN
  return absl::InvalidArgumentError(fmt::format(
      "canary weight is {}; give the canary's share of calls in [0, 1] "
      "(0.05 = 5%; the stable version takes the rest)",
      weight));
}

std::uint64_t threshold_of(double weight) noexcept {
  // weight in [0, 1] (checked): the product is in [0, 2^53], exact to
  // rounding.
  return static_cast<std::uint64_t>(
      std::llround(weight * static_cast<double>(kOne)));
}

}  // namespace

double SplitTable::weight() const noexcept {
  return static_cast<double>(threshold) / static_cast<double>(kOne);
}

Route SplitTable::route(std::uint64_t draw) const noexcept {
  const bool to_canary = (draw >> 11) < threshold;
  return Route{.version = to_canary ? canary : stable,
               .canary = to_canary,
               .generation = generation};
}

Route SplitTable::route_key(std::string_view key) const noexcept {
  return route(mix(fnv1a(key) ^ salt));
}

absl::StatusOr<std::unique_ptr<VersionSplit>> VersionSplit::Create(
    std::string_view stable_label) {
  if (stable_label.empty()) {
    return absl::InvalidArgumentError(
        "the stable version's label is empty; name it (\"v1\"): metrics "
        "are labelled with it");
  }
  return std::unique_ptr<VersionSplit>(
      new VersionSplit(std::string(stable_label)));
}

VersionSplit::VersionSplit(std::string stable_label) {
  labels_.push_back(std::move(stable_label));
  std::lock_guard lock(mutex_);
  publish(1, kNoVersion, 0, 0);
}

absl::StatusOr<VersionId> VersionSplit::deploy_canary(std::string_view label,
                                                      double weight) {
  if (label.empty()) {
    return absl::InvalidArgumentError(
        "the canary's label is empty; name the version (\"v2\"): metrics "
        "are labelled with it");
  }
  if (absl::Status status = check_weight(weight); !status.ok()) return status;
  std::lock_guard lock(mutex_);
  const SplitTable now = table();
  if (now.canary != kNoVersion) {
    return absl::FailedPreconditionError(fmt::format(
        "canary '{}' is live; promote() or rollback() it before deploying "
        "'{}'",
        labels_[now.canary - 1], label));
  }
  if (labels_[now.stable - 1] == label) {
    return absl::AlreadyExistsError(fmt::format(
        "'{}' is the stable version; give the new version its own label",
        label));
  }
  labels_.emplace_back(label);
  const auto id = static_cast<VersionId>(labels_.size());
  publish(now.stable, id, threshold_of(weight), mix(fnv1a(label)));
  return id;
}

absl::Status VersionSplit::set_weight(double weight) {
  if (absl::Status status = check_weight(weight); !status.ok()) return status;
  std::lock_guard lock(mutex_);
  const SplitTable now = table();
  if (now.canary == kNoVersion) return no_canary_error("set its weight");
  publish(now.stable, now.canary, threshold_of(weight), now.salt);
  return absl::OkStatus();
}

absl::Status VersionSplit::promote() { return end_canary(kNoVersion, true); }

absl::Status VersionSplit::rollback() { return end_canary(kNoVersion, false); }

absl::Status VersionSplit::rollback_canary(VersionId canary) {
  if (canary == kNoVersion) {
    return absl::FailedPreconditionError(
        "rollback_canary(kNoVersion): name the canary the verdict is about");
  }
  return end_canary(canary, false);
}

absl::Status VersionSplit::end_canary(VersionId expected, bool promote) {
  std::lock_guard lock(mutex_);
  const SplitTable now = table();
  if (expected != kNoVersion && now.canary != expected) {
    return absl::FailedPreconditionError(fmt::format(
        "version {} is not the live canary (it was promoted or rolled back, "
        "or never deployed); nothing to roll back",
        expected));
  }
  if (now.canary == kNoVersion) {
    return no_canary_error(promote ? "promote" : "roll back");
  }
  publish(promote ? now.canary : now.stable, kNoVersion, 0, 0);
  return absl::OkStatus();
}

VersionId VersionSplit::next_version() const {
  std::lock_guard lock(mutex_);
  return static_cast<VersionId>(labels_.size() + 1);
}

std::string VersionSplit::label(VersionId id) const {
  std::lock_guard lock(mutex_);
  if (id == kNoVersion || id > labels_.size()) return {};
  return labels_[id - 1];
}

absl::Status VersionSplit::no_canary_error(std::string_view what) const {
  return absl::FailedPreconditionError(fmt::format(
      "no canary to {}: '{}' is the only version; deploy_canary() first", what,
      labels_[table().stable - 1]));
}

SplitTable VersionSplit::table() const noexcept {
  for (;;) {
    // acquire: pairs with publish()'s final release store, so that the
    // fields read below are at least the ones it published.
    const std::uint64_t before = sequence_.load(std::memory_order_acquire);
    if ((before & 1) != 0) continue;  // publish() is mid-way: a few stores
    // acquire: each pairs with publish()'s release store of that field; a
    // field from a later publish() makes the load of sequence_ below see
    // its odd value (or later), so the mix is discarded. The acquire
    // loads also keep that load after them.
    SplitTable table{.generation = before / 2,
                     .stable = stable_.load(std::memory_order_acquire),
                     .canary = canary_.load(std::memory_order_acquire),
                     .threshold = threshold_.load(std::memory_order_acquire),
                     .salt = salt_.load(std::memory_order_acquire)};
    // relaxed: ordered after the field loads by their acquire.
    if (sequence_.load(std::memory_order_relaxed) == before) return table;
  }
}

void VersionSplit::publish(VersionId stable, VersionId canary,
                           std::uint64_t threshold,
                           std::uint64_t salt) noexcept {
  // Only under mutex_, so sequence_ is even here and ours to change.
  const std::uint64_t sequence = sequence_.load(std::memory_order_relaxed);
  // relaxed: ordered before the field stores by their release.
  sequence_.store(sequence + 1, std::memory_order_relaxed);
  // release: see the fields' comment.
  stable_.store(stable, std::memory_order_release);
  canary_.store(canary, std::memory_order_release);
  threshold_.store(threshold, std::memory_order_release);
  salt_.store(salt, std::memory_order_release);
  // release: pairs with the first acquire load in table(): a reader that
  // sees this even value sees the fields above.
  sequence_.store(sequence + 2, std::memory_order_release);
}

}  // namespace fnbus::mesh
