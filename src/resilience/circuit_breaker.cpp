#include "fnbus/resilience/circuit_breaker.hpp"

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"

#include "fnbus/detail/saturating_time.hpp"

namespace fnbus::resilience {

std::string_view to_string(BreakerState state) noexcept {
  switch (state) {
    case BreakerState::kClosed:
      return "closed";
    case BreakerState::kOpen:
      return "open";
    case BreakerState::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------
// HealthWindow

namespace {

// A slice number, floor(now / width), and now's offset in that slice,
// exact for every now (C++ division truncates towards zero, and a clock
// may stand before its epoch).
struct SliceOf {
  std::int64_t slice;
  Duration offset;  // in [0, width)
};

SliceOf slice_of(TimePoint now, Duration width) noexcept {
  const std::int64_t at = now.time_since_epoch().count();
  std::int64_t slice = at / width.count();
  std::int64_t offset = at % width.count();
  if (offset < 0) {
    --slice;
    offset += width.count();
  }
  return {slice, Duration(offset)};
}

std::int64_t nanos_since_epoch(TimePoint at) noexcept {
  return at.time_since_epoch().count();
}

}  // namespace

HealthWindow::HealthWindow(Duration window, std::uint32_t buckets)
    : width_(std::max(Duration(1), window / buckets)),
      size_(buckets),
      buckets_(std::make_unique<Bucket[]>(buckets)) {}

HealthWindow::Bucket& HealthWindow::bucket_of(std::int64_t slice) noexcept {
  const std::int64_t size = size_;
  // Euclidean remainder: slices before the epoch are negative.
  return buckets_[static_cast<std::size_t>(((slice % size) + size) % size)];
}

void HealthWindow::record(TimePoint now, bool success) {
  const SliceOf at = slice_of(now, width_);
  if (started_ && !covers(newest_, at.slice)) {
    // Older than the window: it has left already.
    ++retired_.calls;
    if (!success) ++retired_.failures;
    return;
  }
  Bucket& bucket = bucket_of(at.slice);
  if (!bucket.used || bucket.slice != at.slice) {
    reuse(bucket, now, at.slice, at.offset);
  }
  if (!started_ || at.slice > newest_) {
    started_ = true;
    newest_ = at.slice;
    // release: publishes the first and last that reuse() stored; pairs
    // with the acquire load in try_record_success().
    newest_bucket_.store(static_cast<std::uint32_t>(&bucket - buckets_.get()),
                         std::memory_order_release);
  }
  // relaxed: the owner serialises record() with counts(), totals() and
  // retire(), which orders it for them.
  bucket.calls.fetch_add(1, std::memory_order_relaxed);
  if (!success) ++bucket.failures;
}

void HealthWindow::reuse(Bucket& bucket, TimePoint now, std::int64_t slice,
                         Duration offset) {
  retire(bucket);
  bucket.used = true;
  bucket.slice = slice;
  // The slice's first and last instants, clamped to the clock's range
  // (the slices that hold TimePoint::min() and max() reach beyond it).
  // relaxed: published by the release store of newest_bucket_ in record().
  bucket.first.store(nanos_since_epoch(detail::saturating_add(now, -offset)),
                     std::memory_order_relaxed);
  bucket.last.store(nanos_since_epoch(detail::saturating_add(
                        now, width_ - offset - Duration(1))),
                    std::memory_order_relaxed);
}

void HealthWindow::retire(Bucket& bucket) {
  // acquire: pairs with the release fetch_add in try_record_success(), as
  // in totals(). An exchange, so that a success counted concurrently is
  // either moved here or left in the bucket, never lost.
  retired_.calls += bucket.calls.exchange(0, std::memory_order_acquire);
  retired_.failures += std::exchange(bucket.failures, 0);
}

HealthWindow::Counts HealthWindow::counts(TimePoint now) const {
  const std::int64_t newest = slice_of(now, width_).slice;
  Counts total;
  for (std::uint32_t i = 0; i < size_; ++i) {
    const Bucket& bucket = buckets_[i];
    if (!bucket.used || !covers(newest, bucket.slice)) continue;
    // acquire: pairs with the release fetch_add in try_record_success().
    total.calls += bucket.calls.load(std::memory_order_acquire);
    total.failures += bucket.failures;
  }
  return total;
}

HealthWindow::Counts HealthWindow::totals() const {
  Counts total = retired_;
  // Unused buckets too: a success may land in one that clear() emptied.
  for (std::uint32_t i = 0; i < size_; ++i) {
    // acquire: pairs with the release fetch_add in try_record_success().
    total.calls += buckets_[i].calls.load(std::memory_order_acquire);
    total.failures += buckets_[i].failures;
  }
  return total;
}

bool HealthWindow::covers(std::int64_t newest, std::int64_t slice) const {
  // Slices newest - size + 1 .. newest; later ones (a clock that went
  // back) are counted too rather than lost.
  if (slice >= newest) return true;
  // Unsigned: newest - slice > 0 may not fit in int64 (slices anywhere in
  // the clock's range), but the unsigned difference is exact.
  const std::uint64_t age =
      static_cast<std::uint64_t>(newest) - static_cast<std::uint64_t>(slice);
  return age < size_;
}

void HealthWindow::clear() {
  for (std::uint32_t i = 0; i < size_; ++i) {
    Bucket& bucket = buckets_[i];
    // An empty range first, so that try_record_success() stops counting
    // here; a success that passed the check already lands in calls and
    // stays in totals(). relaxed: a late success is allowed (see the
    // class comment), so nothing needs ordering.
    bucket.first.store(std::numeric_limits<std::int64_t>::max(),
                       std::memory_order_relaxed);
    bucket.last.store(std::numeric_limits<std::int64_t>::min(),
                      std::memory_order_relaxed);
    retire(bucket);
    bucket.used = false;
  }
  started_ = false;
}

bool should_trip(const HealthWindow::Counts& counts,
                 const BreakerOptions& options) noexcept {
  if (counts.calls == 0 || counts.calls < options.minimum_calls) return false;
  return static_cast<double>(counts.failures) >=
         options.failure_rate * static_cast<double>(counts.calls);
}

// ---------------------------------------------------------------------------
// Permit

CircuitBreaker::Permit::Permit(Permit&& other) noexcept
    : breaker_(std::exchange(other.breaker_, nullptr)),
      spell_(std::exchange(other.spell_, 0)),
      acquired_at_(other.acquired_at_) {}

CircuitBreaker::Permit& CircuitBreaker::Permit::operator=(
    Permit&& other) noexcept {
  if (this != &other) {
    if (breaker_ != nullptr) breaker_->abandon(spell_);
    breaker_ = std::exchange(other.breaker_, nullptr);
    spell_ = std::exchange(other.spell_, 0);
    acquired_at_ = other.acquired_at_;
  }
  return *this;
}

CircuitBreaker::Permit::~Permit() {
  if (breaker_ != nullptr) breaker_->abandon(spell_);
}

void CircuitBreaker::Permit::on_failure(TimePoint now) {
  // A refused permit, or a second report: nothing to count.
  if (breaker_ == nullptr) return;
  std::exchange(breaker_, nullptr)->report(now, false, spell_);
}

// ---------------------------------------------------------------------------
// CircuitBreaker

// The transition a call made under mutex_, reported to the observer once
// the mutex is released: each such call declares its Notice before its
// lock_guard, so that the Notice's destructor runs after the guard's. A
// call makes at most one transition.
class CircuitBreaker::Notice {
 public:
  explicit Notice(const CircuitBreaker& breaker) noexcept : breaker_(breaker) {}
  Notice(const Notice&) = delete;
  Notice& operator=(const Notice&) = delete;
  // noexcept (implicitly): an observer that throws terminates, as
  // BreakerObserver says.
  ~Notice() {
    if (pending_ && breaker_.observer_) breaker_.observer_(transition_);
  }

  void set(const BreakerTransition& transition) noexcept {
    FNBUS_ASSERT(!pending_, "one transition per call");
    transition_ = transition;
    pending_ = true;
  }

 private:
  const CircuitBreaker& breaker_;
  BreakerTransition transition_;
  bool pending_ = false;
};

absl::StatusOr<std::unique_ptr<CircuitBreaker>> CircuitBreaker::Create(
    BreakerOptions options, BreakerObserver observer) {
  std::vector<std::string> problems;
  if (!(options.failure_rate > 0.0 && options.failure_rate <= 1.0)) {
    problems.push_back(fmt::format(
        "failure_rate is {}; use a fraction in (0, 1], e.g. 0.5 to trip "
        "when half the calls fail",
        options.failure_rate));
  }
  if (options.minimum_calls == 0) {
    problems.push_back(
        "minimum_calls is 0; use at least 1 (the calls the window must "
        "hold before it may trip)");
  }
  if (options.window <= Duration::zero()) {
    problems.push_back(fmt::format("window is {} ns; use more than 0",
                                   options.window.count()));
  }
  if (options.window_buckets == 0 || options.window_buckets > 1000) {
    problems.push_back(fmt::format("window_buckets is {}; use 1 to 1000",
                                   options.window_buckets));
  }
  if (options.open_for <= Duration::zero()) {
    problems.push_back(fmt::format(
        "open_for is {} ns; use more than 0 (the cool-down before probes)",
        options.open_for.count()));
  }
  if (options.half_open_probes == 0) {
    problems.push_back(
        "half_open_probes is 0; use at least 1 (the probe calls that "
        "decide whether to close)");
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError("BreakerOptions: " +
                                      absl::StrJoin(problems, "; "));
  }
  return std::unique_ptr<CircuitBreaker>(
      new CircuitBreaker(options, std::move(observer)));
}

CircuitBreaker::CircuitBreaker(BreakerOptions options, BreakerObserver observer)
    : options_(options),
      observer_(std::move(observer)),
      window_(options.window, options.window_buckets) {}

CircuitBreaker::Permit CircuitBreaker::acquire_locked(TimePoint now) {
  Notice notice(*this);  // before the lock: reports after the unlock
  std::lock_guard lock(mutex_);
  leave_open_if_cooled(now, notice);
  // relaxed: under mutex_, which orders every store of state_.
  switch (state_.load(std::memory_order_relaxed)) {
    case BreakerState::kClosed:
      return Permit(this, 0, now);  // counted in permitted once it reports
    case BreakerState::kHalfOpen:
      if (probes_out_ + probe_successes_ < options_.half_open_probes) {
        ++probes_out_;
        ++probes_let_through_;
        return Permit(this, spell_, now);
      }
      break;
    case BreakerState::kOpen:
      break;
  }
  ++refused_;
  return Permit();
}

BreakerState CircuitBreaker::state(TimePoint now) {
  Notice notice(*this);  // before the lock: reports after the unlock
  std::lock_guard lock(mutex_);
  leave_open_if_cooled(now, notice);
  return state_.load(std::memory_order_relaxed);  // relaxed: under mutex_
}

CircuitBreaker::Stats CircuitBreaker::stats() const {
  std::lock_guard lock(mutex_);
  const HealthWindow::Counts windowed = window_.totals();
  Stats stats;
  stats.state = state_.load(std::memory_order_relaxed);  // under mutex_
  stats.successes = unwindowed_successes_ + windowed.calls - windowed.failures;
  stats.failures = failures_;
  stats.abandoned = abandoned_;
  stats.refused = refused_;
  stats.transitions = transitions_;
  // Probes by their permits, the other calls by their outcomes; every
  // probe outcome is of a probe let through, so the outcomes never exceed
  // permitted.
  stats.permitted = probes_let_through_ - probe_outcomes_ + stats.successes +
                    stats.failures + stats.abandoned;
  return stats;
}

void CircuitBreaker::report(TimePoint now, bool success, std::uint64_t spell) {
  Notice notice(*this);  // before the lock: reports after the unlock
  std::lock_guard lock(mutex_);
  if (!success) ++failures_;
  if (spell != 0) ++probe_outcomes_;
  if (current_probe(spell)) {
    if (success) ++unwindowed_successes_;
    report_probe(now, success, notice);
    return;
  }
  // A call let through while closed. Finishing while open or half-open,
  // it changes nothing: the window restarts when the breaker closes.
  // relaxed: under mutex_.
  if (state_.load(std::memory_order_relaxed) != BreakerState::kClosed) {
    if (success) ++unwindowed_successes_;
    return;
  }
  window_.record(now, success);
  if (!success && should_trip(window_.counts(now), options_)) {
    move_to(BreakerState::kOpen, now, notice);
  }
}

void CircuitBreaker::report_probe(TimePoint now, bool success, Notice& notice) {
  --probes_out_;
  if (!success) {
    move_to(BreakerState::kOpen, now, notice);  // the cool-down starts again
    return;
  }
  if (++probe_successes_ == options_.half_open_probes) {
    move_to(BreakerState::kClosed, now, notice);
  }
}

void CircuitBreaker::abandon(std::uint64_t spell) {
  std::lock_guard lock(mutex_);
  ++abandoned_;
  if (spell != 0) ++probe_outcomes_;
  // Frees the probe slot for another call.
  if (current_probe(spell)) --probes_out_;
}

bool CircuitBreaker::current_probe(std::uint64_t spell) const noexcept {
  // relaxed: under mutex_.
  return spell != 0 && spell == spell_ &&
         state_.load(std::memory_order_relaxed) == BreakerState::kHalfOpen;
}

void CircuitBreaker::leave_open_if_cooled(TimePoint now, Notice& notice) {
  // relaxed: under mutex_.
  if (state_.load(std::memory_order_relaxed) == BreakerState::kOpen &&
      cooled(now)) {
    move_to(BreakerState::kHalfOpen, now, notice);
  }
}

bool CircuitBreaker::cooled(TimePoint now) const noexcept {
  // A clock that went back has not cooled.
  if (now < opened_at_) return false;
  const std::uint64_t elapsed = detail::nanos_between(opened_at_, now);
  return elapsed >= static_cast<std::uint64_t>(options_.open_for.count());
}

void CircuitBreaker::move_to(BreakerState state, TimePoint now,
                             Notice& notice) {
  ++transitions_;
  // relaxed: under mutex_, which orders every store of state_.
  notice.set({.from = state_.load(std::memory_order_relaxed),
              .to = state,
              .at = now,
              .number = transitions_});
  probes_out_ = 0;
  probe_successes_ = 0;
  switch (state) {
    case BreakerState::kOpen:
      opened_at_ = now;
      break;
    case BreakerState::kHalfOpen:
      ++spell_;  // never 0 again: 0 marks "not a probe"
      break;
    case BreakerState::kClosed:
      window_.clear();
      break;
  }
  // relaxed: see state_; readers under mutex_ are ordered by it.
  state_.store(state, std::memory_order_relaxed);
}

}  // namespace fnbus::resilience
