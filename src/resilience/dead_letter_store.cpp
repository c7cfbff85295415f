#include "fnbus/resilience/dead_letter_store.hpp"

#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"

#include "fnbus/event_bus.hpp"

namespace fnbus::resilience {
namespace {

// A copy of `letter` for snapshot(): its event empty if copying it fails.
StoredDeadLetter copy_of(const StoredDeadLetter& letter) {
  absl::StatusOr<OwnedEvent> event = letter.event.clone();
  return StoredDeadLetter{
      .event = event.ok() ? *std::move(event) : OwnedEvent(),
      .event_type = letter.event_type,
      .reason = letter.reason,
      .function = letter.function,
      .trace = letter.trace,
      .attempts = letter.attempts,
      .last_error = letter.last_error,
      .when = letter.when};
}

// The trace a replayed letter is published with: its dead event's
// correlation, with that event as its parent; none (publish()'s rules) if
// the letter has no trace ids.
std::optional<TraceContext> replay_trace(const EventTrace& trace) {
  if (trace.event_id == 0) return std::nullopt;
  const std::uint64_t correlation = trace.context.correlation_id != 0
                                        ? trace.context.correlation_id
                                        : trace.event_id;
  return TraceContext{.correlation_id = correlation,
                      .parent_id = trace.event_id};
}

// Publishes `letter` again; true if the bus accepted it.
bool replay_one(EventBus& bus, StoredDeadLetter& letter,
                ReplaySummary& summary) {
  if (letter.event.empty()) {
    ++summary.skipped;
    return false;
  }
  absl::Status status =
      bus.try_publish(letter.event, {.trace = replay_trace(letter.trace)});
  if (status.ok()) {
    ++summary.replayed;
    return true;
  }
  ++summary.failed;
  if (summary.first_error.ok()) summary.first_error = std::move(status);
  return false;
}

}  // namespace

std::string_view to_string(DeadLetterFullPolicy policy) noexcept {
  switch (policy) {
    case DeadLetterFullPolicy::kDropOldest:
      return "kDropOldest";
    case DeadLetterFullPolicy::kRejectNewest:
      return "kRejectNewest";
  }
  return "unknown DeadLetterFullPolicy";
}

absl::StatusOr<std::shared_ptr<DeadLetterStore>> DeadLetterStore::Create(
    DeadLetterStoreOptions options) {
  std::vector<std::string> problems;
  if (options.capacity == 0 || options.capacity > (std::size_t{1} << 32)) {
    problems.push_back(
        fmt::format("capacity is {}; use 1 to 2^32 letters", options.capacity));
  }
  if (options.when_full != DeadLetterFullPolicy::kDropOldest &&
      options.when_full != DeadLetterFullPolicy::kRejectNewest) {
    problems.push_back(
        fmt::format("when_full is {}; use DeadLetterFullPolicy::kDropOldest or "
                    "kRejectNewest",
                    static_cast<int>(options.when_full)));
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError("DeadLetterStoreOptions: " +
                                      absl::StrJoin(problems, "; "));
  }
  return std::shared_ptr<DeadLetterStore>(
      new DeadLetterStore(std::move(options)));
}

DeadLetterStore::DeadLetterStore(DeadLetterStoreOptions options)
    : options_(std::move(options)),
      clock_(options_.clock ? options_.clock.get() : &SteadyClock::instance()) {
}

std::function<void(const DeadLetter&)> DeadLetterStore::sink() {
  return [store = shared_from_this()](const DeadLetter& letter) {
    store->add(letter);
  };
}

void DeadLetterStore::add(const DeadLetter& letter) {
  absl::StatusOr<OwnedEvent> event = OwnedEvent::Copy(letter.event);
  const bool copied = event.ok();
  keep(StoredDeadLetter{.event = copied ? *std::move(event) : OwnedEvent(),
                        .event_type = std::string(letter.event.type_name()),
                        .reason = letter.reason,
                        .function = std::string(letter.function),
                        .trace = letter.trace,
                        .attempts = letter.attempts,
                        .last_error = letter.last_error,
                        .when = clock_->now()},
       copied);
}

void DeadLetterStore::keep(StoredDeadLetter letter, bool copied) {
  call(options_.persist, letter);
  std::vector<StoredDeadLetter> dropped;
  {
    std::lock_guard lock(mutex_);
    if (!copied) ++stats_.not_copyable;
    if (letters_.size() >= options_.capacity &&
        options_.when_full == DeadLetterFullPolicy::kRejectNewest) {
      ++stats_.rejected;
      dropped.push_back(std::move(letter));
    } else {
      letters_.push_back(std::move(letter));
      ++stats_.stored;
      trim_locked(dropped);
    }
  }
  for (const StoredDeadLetter& gone : dropped) call(options_.on_overflow, gone);
}

void DeadLetterStore::trim_locked(std::vector<StoredDeadLetter>& dropped) {
  const bool oldest = options_.when_full == DeadLetterFullPolicy::kDropOldest;
  while (letters_.size() > options_.capacity) {
    if (oldest) {
      dropped.push_back(std::move(letters_.front()));
      letters_.pop_front();
    } else {
      dropped.push_back(std::move(letters_.back()));
      letters_.pop_back();
    }
    ++stats_.evicted;
  }
}

std::size_t DeadLetterStore::size() const {
  std::lock_guard lock(mutex_);
  return letters_.size();
}

DeadLetterStoreStats DeadLetterStore::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

std::vector<StoredDeadLetter> DeadLetterStore::snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<StoredDeadLetter> copies;
  copies.reserve(letters_.size());
  for (const StoredDeadLetter& letter : letters_) {
    copies.push_back(copy_of(letter));
  }
  return copies;
}

std::vector<StoredDeadLetter> DeadLetterStore::drain() {
  std::deque<StoredDeadLetter> taken;
  {
    std::lock_guard lock(mutex_);
    taken.swap(letters_);
  }
  return std::vector<StoredDeadLetter>(std::make_move_iterator(taken.begin()),
                                       std::make_move_iterator(taken.end()));
}

ReplaySummary DeadLetterStore::replay(EventBus& bus, const Filter& filter) {
  std::deque<StoredDeadLetter> taken;
  {
    std::lock_guard lock(mutex_);
    taken.swap(letters_);
  }
  ReplaySummary summary;
  std::vector<StoredDeadLetter> kept;
  kept.reserve(taken.size());  // so that the catch below cannot throw
  std::size_t next = 0;
  try {
    for (; next < taken.size(); ++next) {
      StoredDeadLetter& letter = taken[next];
      const bool wanted = !filter || filter(letter);
      if (!wanted || !replay_one(bus, letter, summary)) {
        kept.push_back(std::move(letter));
      }
    }
  } catch (...) {
    for (; next < taken.size(); ++next) kept.push_back(std::move(taken[next]));
    put_back(kept, summary);
    throw;
  }
  put_back(kept, summary);
  return summary;
}

void DeadLetterStore::put_back(std::vector<StoredDeadLetter>& kept,
                               const ReplaySummary& summary) {
  std::vector<StoredDeadLetter> dropped;
  {
    std::lock_guard lock(mutex_);
    letters_.insert(letters_.begin(), std::make_move_iterator(kept.begin()),
                    std::make_move_iterator(kept.end()));
    stats_.replayed += summary.replayed;
    stats_.replay_failed += summary.failed;
    trim_locked(dropped);
  }
  for (const StoredDeadLetter& gone : dropped) call(options_.on_overflow, gone);
}

void DeadLetterStore::call(
    const std::function<void(const StoredDeadLetter&)>& callback,
    const StoredDeadLetter& letter) noexcept {
  if (!callback) return;
  try {
    callback(letter);
  } catch (...) {
    std::lock_guard lock(mutex_);
    ++stats_.callback_errors;
  }
}

}  // namespace fnbus::resilience
