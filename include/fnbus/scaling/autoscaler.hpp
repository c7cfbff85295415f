#pragma once

// Autoscaler: the live controller of R = f(T). Every tick (default
// 100 ms, on the bus's clock) it takes the bus's metrics, turns them into
// a LoadSnapshot with the LoadEstimator, asks the ScalingPolicy for a
// target, passes that through the Governor and resizes the pool:
//
//   auto bus = fnbus::EventBus::Create({.workers = 2, .max_workers = 16});
//   auto autoscaler = fnbus::scaling::Autoscaler::Start(
//       **bus, *fnbus::scaling::SloGuard::Create({}),
//       {.governor = {.min_workers = 2, .max_workers = 16}});
//   ...
//   (*autoscaler)->stop();  // before the bus goes away
//
// The pool grows from what the policy sees -- arrival rate, queue depth,
// oldest wait -- not from the queue filling up (the trap of Java's
// ThreadPoolExecutor, which adds threads only when its queue is full).
//
// Failures never change the size: a policy that throws, or a target that
// is NaN or negative, keeps the pool as it is; the error goes to
// `error_sink` and is counted in stats(). Out-of-range targets are clamped
// to [min, max] and counted.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/metrics/snapshot.hpp"
#include "fnbus/scaling/estimator.hpp"
#include "fnbus/scaling/policy.hpp"
#include "fnbus/scaling/scaling_loop.hpp"

namespace fnbus {
class EventBus;
}

namespace fnbus::scaling {

// What one tick saw and did (for logs, metrics and tests): the loop's step
// (load, decision, governed; `error` is the policy's exception or else a
// failed resize, OK if none) and what it did to the pool.
struct AutoscalerTick : ScalingStep {
  std::uint64_t number = 0;  // 1, 2, ...
  std::size_t workers_before = 0;
  std::size_t workers_after = 0;
};

struct AutoscalerOptions {
  // The controller's period, on the bus's clock: > 0 and <= 1 hour. At
  // the end of the clock's range (a ManualClock advanced to
  // TimePoint::max()) the controller ticks once more, then waits for
  // stop(); tick_now() still works.
  Duration tick = std::chrono::milliseconds(100);
  // Bounds and rate limits; max_workers must not exceed the bus's
  // BusConfig::max_workers.
  GovernorOptions governor;
  // Time constants of the arrival-rate averages (see EstimatorOptions).
  Duration fast_window = std::chrono::seconds(6);
  Duration slow_window = std::chrono::seconds(60);
  // Called on the controller thread with each error (see above). Must not
  // throw (an exception is swallowed).
  std::function<void(const absl::Status&)> error_sink;
  // Called on the controller thread after every tick (on the caller's for
  // tick_now()). Must not throw, nor call tick_now().
  std::function<void(const AutoscalerTick&)> on_tick;
};

struct AutoscalerStats {
  std::uint64_t ticks = 0;
  std::uint64_t resizes = 0;          // ticks that changed the size
  std::uint64_t policy_errors = 0;    // decide() threw: size kept
  std::uint64_t resize_errors = 0;    // the pool refused (e.g. no thread)
  std::uint64_t invalid_targets = 0;  // NaN or negative: size kept
  std::uint64_t clamped_targets = 0;  // outside [min, max]: clamped
  std::size_t workers = 0;            // the pool's size after the last tick
  double last_target = 0;             // the policy's last answer
  std::string_view last_reason;       // and its reason
};

class Autoscaler {
 public:
  // Checks the options, moves the pool into [min_workers, max_workers] and
  // starts the controller thread. InvalidArgument for a null policy, a
  // tick out of range, bad governor bounds or windows, or a max_workers
  // above the bus's; FailedPrecondition for a bus without a thread pool
  // (Execution::kInline or kManual) or one that is shutting down.
  // The bus must outlive the autoscaler (or stop() must be called first).
  static absl::StatusOr<std::unique_ptr<Autoscaler>> Start(
      EventBus& bus, std::unique_ptr<ScalingPolicy> policy,
      AutoscalerOptions options = {});
  ~Autoscaler();  // stop()

  Autoscaler(const Autoscaler&) = delete;
  Autoscaler& operator=(const Autoscaler&) = delete;

  // Stops ticking and joins the controller thread; the pool keeps its
  // current size. Idempotent. Thread safety: any thread but the
  // controller's own (not from error_sink or on_tick); concurrent calls
  // are fine.
  void stop();
  // Whether stop() was called or the controller stopped itself because
  // the bus shut down. Thread safety: any thread.
  [[nodiscard]] bool stopping() const noexcept;

  // Runs one tick now, in the calling thread, and returns what it did
  // (the controller thread keeps its own schedule). For callers with a
  // scheduler of their own (start with a long `tick`) and for benchmarks.
  // Thread safety: any thread but the controller's; ticks run one at a
  // time.
  AutoscalerTick tick_now();

  // Thread safety: any thread.
  [[nodiscard]] AutoscalerStats stats() const;
  [[nodiscard]] std::string_view policy_name() const noexcept {
    return policy_->name();
  }

 private:
  Autoscaler(EventBus& bus, std::unique_ptr<ScalingPolicy> policy,
             AutoscalerOptions options, ScalingLoop loop);
  void run(std::stop_token stop);
  AutoscalerTick tick();
  void record(const AutoscalerTick& tick, bool policy_failed,
              bool resize_failed);

  EventBus& bus_;
  const std::unique_ptr<ScalingPolicy> policy_;
  const AutoscalerOptions options_;
  // Serialises ticks (the controller's and tick_now()'s), and guards the
  // members below it.
  std::mutex tick_mutex_;
  ScalingLoop loop_;
  metrics::MetricsSnapshot previous_;
  std::uint64_t tick_number_ = 0;

  mutable std::mutex stats_mutex_;
  AutoscalerStats stats_;         // guarded by stats_mutex_
  std::stop_source stop_source_;  // thread-safe; asked by stop() or tick()
  std::mutex stop_mutex_;         // serialises stop()
  std::thread thread_;            // the controller; joined by stop()
};

}  // namespace fnbus::scaling
