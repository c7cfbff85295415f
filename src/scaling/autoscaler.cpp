#include "fnbus/scaling/autoscaler.hpp"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <stop_token>
#include <string>
#include <utility>

#include "fmt/chrono.h"
#include "fmt/format.h"

#include "fnbus/detail/saturating_time.hpp"
#include "fnbus/event_bus.hpp"

namespace fnbus::scaling {
namespace {

constexpr Duration kMaxTick = std::chrono::hours(1);

template <typename Sink, typename Arg>
void call_quietly(const Sink& sink, const Arg& arg) noexcept {
  if (!sink) return;
  try {
    sink(arg);
  } catch (...) {
    // A broken sink must not stop the controller.
  }
}

absl::Status check_bus(const EventBus& bus, const AutoscalerOptions& options) {
  if (bus.config().execution != Execution::kThreadPool) {
    return absl::FailedPreconditionError(
        "Autoscaler needs a bus with Execution::kThreadPool; kInline and "
        "kManual run events in the caller's thread");
  }
  const std::size_t bus_max = bus.pool_stats().max_workers;
  if (options.governor.max_workers > bus_max) {
    return absl::InvalidArgumentError(fmt::format(
        "governor.max_workers is {} but the bus allows {} workers; raise "
        "BusConfig::max_workers to {} or lower governor.max_workers",
        options.governor.max_workers, bus_max, options.governor.max_workers));
  }
  return absl::OkStatus();
}

// Blocks until `stop` is requested.
void wait_for_stop(std::stop_token stop) {
  std::mutex mutex;
  std::condition_variable_any stopped;
  std::unique_lock lock(mutex);
  // The predicate is never true: only the stop request ends the wait.
  (void)stopped.wait(lock, stop, [] { return false; });
}

}  // namespace

absl::StatusOr<std::unique_ptr<Autoscaler>> Autoscaler::Start(
    EventBus& bus, std::unique_ptr<ScalingPolicy> policy,
    AutoscalerOptions options) {
  if (policy == nullptr) {
    return absl::InvalidArgumentError(
        "Autoscaler::Start: the policy is null; pass a policy, e.g. "
        "SloGuard::Create({})");
  }
  if (options.tick <= Duration::zero() || options.tick > kMaxTick) {
    return absl::InvalidArgumentError(fmt::format(
        "AutoscalerOptions::tick is {}; use more than 0 and at most 1 hour "
        "(100ms is the default)",
        options.tick));
  }
  if (absl::Status status = check_bus(bus, options); !status.ok()) {
    return status;
  }
  auto loop =
      ScalingLoop::Create(*policy, {.governor = options.governor,
                                    .fast_window = options.fast_window,
                                    .slow_window = options.slow_window});
  if (!loop.ok()) return loop.status();
  // Into [min, max] at once, so that the first tick starts from a size
  // the governor allows. (Also when nothing changes: the call tells us
  // whether the bus still runs.)
  const std::size_t bounded =
      std::clamp(bus.pool_stats().workers, options.governor.min_workers,
                 options.governor.max_workers);
  if (absl::Status status = bus.resize_workers(bounded); !status.ok()) {
    return status;
  }
  std::unique_ptr<Autoscaler> autoscaler(new Autoscaler(
      bus, std::move(policy), std::move(options), *std::move(loop)));
  // The stop source exists before the thread, which may request a stop
  // itself (the bus shut down) before this assignment completes.
  autoscaler->thread_ = std::thread(
      [p = autoscaler.get()] { p->run(p->stop_source_.get_token()); });
  return autoscaler;
}

Autoscaler::Autoscaler(EventBus& bus, std::unique_ptr<ScalingPolicy> policy,
                       AutoscalerOptions options, ScalingLoop loop)
    : bus_(bus),
      policy_(std::move(policy)),
      options_(std::move(options)),
      loop_(std::move(loop)),
      previous_(bus_.metrics()) {
  // The estimator's baseline: counts so far, no rates yet.
  loop_.start(observe(previous_, previous_));
  stats_.workers = bus_.pool_stats().workers;
}

Autoscaler::~Autoscaler() { stop(); }

void Autoscaler::stop() {
  // Serialises concurrent stop() calls: one joins, the others wait for it.
  std::lock_guard lock(stop_mutex_);
  stop_source_.request_stop();
  if (thread_.joinable()) thread_.join();
}

bool Autoscaler::stopping() const noexcept {
  return stop_source_.stop_requested();
}

void Autoscaler::run(std::stop_token stop) {
  Clock& clock = bus_.clock();
  // Deadlines saturate: a manual clock may stand at (or near)
  // TimePoint::max(), where now + tick would overflow.
  TimePoint next = detail::saturating_add(clock.now(), options_.tick);
  while (clock.sleep_until(next, stop)) {
    tick();
    // The tick at the end of the time scale is the last: no later
    // deadline exists, and an unreachable one would be "reached" at once
    // and tick back to back. Time has stopped; wait for stop().
    if (next == TimePoint::max()) {
      wait_for_stop(stop);
      return;
    }
    next = detail::saturating_add(next, options_.tick);
    // A controller that fell behind (a stalled machine, a manual clock
    // moved by several ticks) skips the missed ticks instead of running
    // them back to back on stale data.
    const TimePoint now = clock.now();
    if (next <= now) next = detail::saturating_add(now, options_.tick);
  }
}

AutoscalerTick Autoscaler::tick_now() { return tick(); }

AutoscalerTick Autoscaler::tick() {
  std::lock_guard lock(tick_mutex_);
  metrics::MetricsSnapshot current = bus_.metrics();
  const TickObservation observation = observe(previous_, current);
  previous_ = std::move(current);

  AutoscalerTick result;
  result.number = ++tick_number_;
  static_cast<ScalingStep&>(result) = loop_.step(observation);
  result.workers_before = result.load.workers();
  const bool policy_failed = !result.error.ok();
  result.workers_after = result.workers_before;
  bool resize_failed = false;
  if (result.governed.workers != result.workers_before) {
    absl::Status status = bus_.resize_workers(result.governed.workers);
    if (!status.ok()) {
      resize_failed = true;
      // The bus is shutting down: nothing left to scale.
      if (absl::IsFailedPrecondition(status)) stop_source_.request_stop();
      if (!policy_failed) result.error = std::move(status);
    }
    result.workers_after = bus_.pool_stats().workers;
  }
  record(result, policy_failed, resize_failed);
  if (!result.error.ok()) call_quietly(options_.error_sink, result.error);
  call_quietly(options_.on_tick, result);
  return result;
}

void Autoscaler::record(const AutoscalerTick& tick, bool policy_failed,
                        bool resize_failed) {
  std::lock_guard lock(stats_mutex_);
  ++stats_.ticks;
  if (tick.workers_after != tick.workers_before) ++stats_.resizes;
  if (policy_failed) ++stats_.policy_errors;
  if (resize_failed) ++stats_.resize_errors;
  stats_.invalid_targets = loop_.governor().invalid_count();
  stats_.clamped_targets = loop_.governor().clamped_count();
  stats_.workers = tick.workers_after;
  stats_.last_target = tick.decision.target;
  stats_.last_reason = tick.governed.reason;
}

AutoscalerStats Autoscaler::stats() const {
  std::lock_guard lock(stats_mutex_);
  return stats_;
}

}  // namespace fnbus::scaling
