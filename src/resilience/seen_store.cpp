#include "fnbus/resilience/seen_store.hpp"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "fmt/format.h"

#include "fnbus/detail/saturating_time.hpp"

namespace fnbus::resilience {
namespace {

// This Abseil's string_view is its own type, not std::string_view: its
// hash map looks string keys up by it without making a std::string.
absl::string_view absl_view(std::string_view key) {
  return absl::string_view(key.data(), key.size());
}

}  // namespace

absl::StatusOr<std::unique_ptr<InMemorySeenStore>> InMemorySeenStore::Create(
    SeenStoreOptions options) {
  std::vector<std::string> problems;
  if (options.capacity == 0 || options.capacity > (std::size_t{1} << 32)) {
    problems.push_back(
        fmt::format("capacity is {}; use 1 to 2^32 keys", options.capacity));
  }
  if (options.ttl <= Duration::zero()) {
    problems.push_back(fmt::format(
        "ttl is {} ns; use more than 0 (how long a key is remembered)",
        options.ttl.count()));
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError("SeenStoreOptions: " +
                                      absl::StrJoin(problems, "; "));
  }
  return std::unique_ptr<InMemorySeenStore>(new InMemorySeenStore(options));
}

bool InMemorySeenStore::expired(const Entry& entry, TimePoint now) const {
  // A clock that went back keeps the key.
  if (now < entry.seen) return false;
  const std::uint64_t age = detail::nanos_between(entry.seen, now);
  return age >= static_cast<std::uint64_t>(options_.ttl.count());
}

void InMemorySeenStore::drop_expired(TimePoint now) {
  // The oldest first sights are at the back: stop at the first live one.
  while (!order_.empty() && expired(order_.back(), now)) {
    by_key_.erase(order_.back().key);
    order_.pop_back();
    ++stats_.expired;
  }
}

bool InMemorySeenStore::first_sight(std::string_view key, TimePoint now) {
  std::lock_guard lock(mutex_);
  drop_expired(now);
  if (auto found = by_key_.find(absl_view(key)); found != by_key_.end()) {
    // The TTL runs from the first sight (a key repeated forever is still
    // forgotten ttl after it was handled), so order_ stays in the order
    // of first sights and a duplicate does not move. drop_expired() above
    // stops at the first live key from the back; one behind it (only
    // after the clock went back) is caught here.
    if (!expired(*found->second, now)) {
      ++stats_.duplicates;
      return false;
    }
    order_.erase(found->second);
    by_key_.erase(found);
    ++stats_.expired;
  }
  if (order_.size() == options_.capacity) {
    by_key_.erase(order_.back().key);
    order_.pop_back();
    ++stats_.evicted;
  }
  order_.push_front(Entry{std::string(key), now});
  by_key_.emplace(order_.front().key, order_.begin());
  ++stats_.first_sights;
  return true;
}

void InMemorySeenStore::forget(std::string_view key) {
  std::lock_guard lock(mutex_);
  if (auto found = by_key_.find(absl_view(key)); found != by_key_.end()) {
    order_.erase(found->second);
    by_key_.erase(found);
  }
}

std::size_t InMemorySeenStore::size() const {
  std::lock_guard lock(mutex_);
  return order_.size();
}

InMemorySeenStore::Stats InMemorySeenStore::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace fnbus::resilience
