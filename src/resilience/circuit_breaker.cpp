#include "fnbus/resilience/circuit_breaker.hpp"

#include <algorithm>
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

HealthWindow::HealthWindow(Duration window, std::uint32_t buckets)
    : width_(std::max(Duration(1), window / buckets)), buckets_(buckets) {}

std::int64_t HealthWindow::slice_of(TimePoint now) const {
  return now.time_since_epoch() / width_;
}

HealthWindow::Bucket& HealthWindow::bucket_at(TimePoint now) {
  const std::int64_t slice = slice_of(now);
  const auto size = static_cast<std::int64_t>(buckets_.size());
  // Euclidean remainder: a clock may start before its epoch.
  Bucket& bucket =
      buckets_[static_cast<std::size_t>(((slice % size) + size) % size)];
  if (!bucket.used || bucket.index != slice) bucket = Bucket{true, slice, {}};
  return bucket;
}

void HealthWindow::record(TimePoint now, bool success) {
  Counts& counts = bucket_at(now).counts;
  ++counts.calls;
  if (!success) ++counts.failures;
}

HealthWindow::Counts HealthWindow::counts(TimePoint now) {
  const std::int64_t newest = slice_of(now);
  Counts total;
  for (const Bucket& bucket : buckets_) {
    if (!bucket.used || !covers(newest, bucket.index)) continue;
    total.calls += bucket.counts.calls;
    total.failures += bucket.counts.failures;
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
  return age < buckets_.size();
}

void HealthWindow::clear() {
  for (Bucket& bucket : buckets_) bucket = Bucket{};
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
      spell_(std::exchange(other.spell_, 0)) {}

CircuitBreaker::Permit& CircuitBreaker::Permit::operator=(
    Permit&& other) noexcept {
  if (this != &other) {
    if (breaker_ != nullptr) breaker_->abandon(spell_);
    breaker_ = std::exchange(other.breaker_, nullptr);
    spell_ = std::exchange(other.spell_, 0);
  }
  return *this;
}

CircuitBreaker::Permit::~Permit() {
  if (breaker_ != nullptr) breaker_->abandon(spell_);
}

void CircuitBreaker::Permit::on_success(TimePoint now) { report(now, true); }
void CircuitBreaker::Permit::on_failure(TimePoint now) { report(now, false); }

void CircuitBreaker::Permit::report(TimePoint now, bool success) {
  // A refused permit, or a second report: nothing to count.
  if (breaker_ == nullptr) return;
  std::exchange(breaker_, nullptr)->report(now, success, spell_);
}

// ---------------------------------------------------------------------------
// CircuitBreaker

absl::StatusOr<std::unique_ptr<CircuitBreaker>> CircuitBreaker::Create(
    BreakerOptions options) {
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
  return std::unique_ptr<CircuitBreaker>(new CircuitBreaker(options));
}

CircuitBreaker::CircuitBreaker(BreakerOptions options)
    : options_(options), window_(options.window, options.window_buckets) {}

CircuitBreaker::Permit CircuitBreaker::try_acquire(TimePoint now) {
  std::lock_guard lock(mutex_);
  leave_open_if_cooled(now);
  switch (stats_.state) {
    case BreakerState::kClosed:
      ++stats_.permitted;
      return Permit(this, 0);
    case BreakerState::kHalfOpen:
      if (probes_out_ + probe_successes_ < options_.half_open_probes) {
        ++probes_out_;
        ++stats_.permitted;
        return Permit(this, spell_);
      }
      break;
    case BreakerState::kOpen:
      break;
  }
  ++stats_.refused;
  return Permit();
}

BreakerState CircuitBreaker::state(TimePoint now) {
  std::lock_guard lock(mutex_);
  leave_open_if_cooled(now);
  return stats_.state;
}

CircuitBreaker::Stats CircuitBreaker::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void CircuitBreaker::report(TimePoint now, bool success, std::uint64_t spell) {
  std::lock_guard lock(mutex_);
  ++(success ? stats_.successes : stats_.failures);
  if (current_probe(spell)) {
    report_probe(now, success);
    return;
  }
  // A call let through while closed. Finishing while open or half-open,
  // it changes nothing: the window restarts when the breaker closes.
  if (stats_.state != BreakerState::kClosed) return;
  window_.record(now, success);
  if (!success && should_trip(window_.counts(now), options_)) {
    move_to(BreakerState::kOpen, now);
  }
}

void CircuitBreaker::report_probe(TimePoint now, bool success) {
  --probes_out_;
  if (!success) {
    move_to(BreakerState::kOpen, now);  // the cool-down starts again
    return;
  }
  if (++probe_successes_ == options_.half_open_probes) {
    move_to(BreakerState::kClosed, now);
  }
}

void CircuitBreaker::abandon(std::uint64_t spell) {
  std::lock_guard lock(mutex_);
  ++stats_.abandoned;
  // Frees the probe slot for another call.
  if (current_probe(spell)) --probes_out_;
}

bool CircuitBreaker::current_probe(std::uint64_t spell) const noexcept {
  return spell != 0 && spell == spell_ &&
         stats_.state == BreakerState::kHalfOpen;
}

void CircuitBreaker::leave_open_if_cooled(TimePoint now) {
  if (stats_.state == BreakerState::kOpen && cooled(now)) {
    move_to(BreakerState::kHalfOpen, now);
  }
}

bool CircuitBreaker::cooled(TimePoint now) const noexcept {
  // A clock that went back has not cooled.
  if (now < opened_at_) return false;
  const std::uint64_t elapsed = detail::nanos_between(opened_at_, now);
  return elapsed >= static_cast<std::uint64_t>(options_.open_for.count());
}

void CircuitBreaker::move_to(BreakerState state, TimePoint now) {
  stats_.state = state;
  ++stats_.transitions;
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
}

}  // namespace fnbus::resilience
