#pragma once

// A circuit breaker for one function: closed (calls pass, outcomes are
// counted over a rolling window), open (calls are refused until a
// cool-down has passed), half-open (a few probe calls pass; all succeed:
// closed again, one fails: open again).
//
//   auto breaker = fnbus::resilience::CircuitBreaker::Create(
//       {.failure_rate = 0.5, .minimum_calls = 20, .window = 10s,
//        .open_for = 30s});
//   if (auto permit = (*breaker)->try_acquire(clock.now())) {
//     absl::Status status = call_gateway();
//     status.ok() ? permit.on_success(clock.now())
//                 : permit.on_failure(clock.now());
//   } else {
//     // open: use the fallback, or dead-letter the event
//   }
//
// Made of three parts, each usable alone: HealthWindow (the rolling
// counts, time passed in), should_trip() (the pure rule, so a simulator
// can replay it) and the state machine here. Time is always passed in
// (the bus clock's now()), so a ManualClock drives it in tests.
//
// Thread safety: every method from any thread (one mutex per breaker;
// held for a few counter updates).

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"

namespace fnbus::resilience {

struct BreakerOptions {
  // Trips when failures / calls in the window reach this: in (0, 1].
  double failure_rate = 0.5;
  // ... and the window holds at least this many calls (>= 1), so that
  // one failure out of one call does not open it.
  std::uint32_t minimum_calls = 20;
  // The rolling window (> 0), kept in `window_buckets` slices (1 to
  // 1000): an outcome leaves the window between window - window/buckets
  // and window after it was recorded.
  Duration window = std::chrono::seconds(10);
  std::uint32_t window_buckets = 10;
  // How long it stays open before letting probes through (> 0).
  Duration open_for = std::chrono::seconds(30);
  // Probe calls let through while half-open (>= 1); this many successes
  // close it.
  std::uint32_t half_open_probes = 3;
};

enum class BreakerState { kClosed, kOpen, kHalfOpen };
std::string_view to_string(BreakerState state) noexcept;

// Outcomes counted over a rolling window of fixed slices. Not
// thread-safe (the breaker's mutex guards it).
class HealthWindow {
 public:
  struct Counts {
    std::uint64_t calls = 0;
    std::uint64_t failures = 0;
  };

  // window > 0, buckets >= 1 (BreakerOptions checks them).
  HealthWindow(Duration window, std::uint32_t buckets);

  void record(TimePoint now, bool success);
  // The counts of the slices that `now` still covers.
  [[nodiscard]] Counts counts(TimePoint now);
  void clear();

 private:
  struct Bucket {
    bool used = false;
    std::int64_t index = 0;  // slice number: time since epoch / width
    Counts counts;
  };
  Bucket& bucket_at(TimePoint now);
  // Whether the window ending in slice `newest` covers slice `slice`.
  [[nodiscard]] bool covers(std::int64_t newest, std::int64_t slice) const;
  [[nodiscard]] std::int64_t slice_of(TimePoint now) const;

  Duration width_;
  std::vector<Bucket> buckets_;
};

// The trip rule, pure: enough calls, and the failure rate reached.
[[nodiscard]] bool should_trip(const HealthWindow::Counts& counts,
                               const BreakerOptions& options) noexcept;

class CircuitBreaker {
 public:
  // What one breaker has done; for metrics.
  struct Stats {
    BreakerState state = BreakerState::kClosed;
    std::uint64_t permitted = 0;    // calls let through
    std::uint64_t refused = 0;      // calls refused (open, probes used)
    std::uint64_t successes = 0;    // reported by permits
    std::uint64_t failures = 0;     // reported by permits
    std::uint64_t abandoned = 0;    // permits dropped without a report
    std::uint64_t transitions = 0;  // state changes
  };

  // Leave to call: report the outcome with on_success() or on_failure()
  // (once). A permit dropped without a report counts as abandoned: it
  // frees its probe slot and changes no state. Movable, not copyable.
  class Permit {
   public:
    Permit() = default;
    Permit(Permit&& other) noexcept;
    Permit& operator=(Permit&& other) noexcept;
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;
    ~Permit();

    // Whether the call may go ahead.
    explicit operator bool() const noexcept { return breaker_ != nullptr; }
    void on_success(TimePoint now);
    void on_failure(TimePoint now);

   private:
    friend class CircuitBreaker;
    Permit(CircuitBreaker* breaker, std::uint64_t spell) noexcept
        : breaker_(breaker), spell_(spell) {}
    void report(TimePoint now, bool success);

    CircuitBreaker* breaker_ = nullptr;  // null: refused or reported
    // The half-open spell this probe belongs to; 0: not a probe.
    std::uint64_t spell_ = 0;
  };

  // InvalidArgument naming every bad option and what to use instead.
  static absl::StatusOr<std::unique_ptr<CircuitBreaker>> Create(
      BreakerOptions options);

  // A permit if a call may go ahead at `now`, else an empty one. Moves
  // open -> half-open once open_for has passed. The breaker must outlive
  // its permits.
  [[nodiscard]] Permit try_acquire(TimePoint now);

  [[nodiscard]] BreakerState state(TimePoint now);
  [[nodiscard]] Stats stats() const;
  [[nodiscard]] const BreakerOptions& options() const noexcept {
    return options_;
  }

 private:
  explicit CircuitBreaker(BreakerOptions options);
  void report(TimePoint now, bool success, std::uint64_t spell);
  void abandon(std::uint64_t spell);
  // The rest run under mutex_.
  void move_to(BreakerState state, TimePoint now);
  void leave_open_if_cooled(TimePoint now);
  [[nodiscard]] bool cooled(TimePoint now) const noexcept;
  [[nodiscard]] bool current_probe(std::uint64_t spell) const noexcept;
  void report_probe(TimePoint now, bool success);

  const BreakerOptions options_;
  mutable std::mutex mutex_;
  // All guarded by mutex_.
  HealthWindow window_;
  Stats stats_;
  TimePoint opened_at_{};
  // Numbers the half-open spells, so that a probe reported after its
  // spell ended (another probe failed) changes nothing.
  std::uint64_t spell_ = 0;
  std::uint32_t probes_out_ = 0;       // this spell's unreported probes
  std::uint32_t probe_successes_ = 0;  // this spell's successes
};

}  // namespace fnbus::resilience
