#include "fnbus/event_bus.hpp"

#include <algorithm>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/chrono.h"
#include "fmt/format.h"

#include "fnbus/detail/exception_message.hpp"
#include "fnbus/detail/saturating_time.hpp"

namespace fnbus {
namespace {

constexpr std::size_t kMaxWorkers = 1024;
// 2^24 slots of 128 bytes: 2 GiB, more than a bounded queue should hold.
constexpr std::size_t kMaxQueueCapacity = std::size_t{1} << 24;
constexpr auto kMaxBlockTimeout = std::chrono::hours(1);
constexpr auto kMaxDrainTimeout = std::chrono::hours(1);
constexpr auto kMaxTimerTick = std::chrono::hours(1);
constexpr auto kMaxIdleSpin = std::chrono::seconds(1);
constexpr std::uint32_t kMaxLatencySampleEvery = 65536;
constexpr std::size_t kMaxFollowUpHeadroom = std::size_t{1} << 20;
// A blocked publisher re-checks at least this often: the consumers' wake-up
// hint is a relaxed read and may miss it (see wake_blocked_publishers()).
constexpr auto kBlockedRecheck = std::chrono::milliseconds(1);

std::vector<std::string> config_problems(const BusConfig& config) {
  std::vector<std::string> problems;
  if (config.queue_capacity < 2 || config.queue_capacity > kMaxQueueCapacity ||
      !MpmcQueue<int>::IsValidCapacity(config.queue_capacity)) {
    // Round up to suggest a capacity; bit_ceil of a huge number overflows.
    const std::size_t suggestion =
        config.queue_capacity > kMaxQueueCapacity
            ? kMaxQueueCapacity
            : std::bit_ceil(std::max<std::size_t>(config.queue_capacity, 2));
    problems.push_back(fmt::format(
        "queue_capacity is {}; use a power of two from 2 to {} (e.g. {})",
        config.queue_capacity, kMaxQueueCapacity, suggestion));
  }
  if (config.workers < 1 || config.workers > kMaxWorkers) {
    problems.push_back(
        fmt::format("workers is {}; use 1 to {}", config.workers, kMaxWorkers));
  }
  if (config.max_workers != 0 && (config.max_workers < config.workers ||
                                  config.max_workers > kMaxWorkers)) {
    problems.push_back(fmt::format(
        "max_workers is {}; use workers ({}) to {}, or 0 for a pool that "
        "never grows past workers",
        config.max_workers, config.workers, kMaxWorkers));
  }
  if (config.follow_up_headroom > kMaxFollowUpHeadroom) {
    problems.push_back(fmt::format(
        "follow_up_headroom is {}; use 0 (none) to {} (1024 is the default)",
        config.follow_up_headroom, kMaxFollowUpHeadroom));
  }
  if (config.block_timeout <= std::chrono::nanoseconds::zero() ||
      config.block_timeout > kMaxBlockTimeout) {
    problems.push_back(
        fmt::format("block_timeout is {}; use more than 0 and at most 1 hour",
                    config.block_timeout));
  }
  if (config.drain_timeout <= std::chrono::nanoseconds::zero() ||
      config.drain_timeout > kMaxDrainTimeout) {
    problems.push_back(fmt::format(
        "drain_timeout is {}; use more than 0 and at most 1 hour (30s is "
        "the default)",
        config.drain_timeout));
  }
  if (config.timer_tick <= std::chrono::nanoseconds::zero() ||
      config.timer_tick > kMaxTimerTick) {
    problems.push_back(fmt::format(
        "timer_tick is {}; use more than 0 and at most 1 hour (1ms is the "
        "default)",
        config.timer_tick));
  }
  if (config.idle_spin < std::chrono::nanoseconds::zero() ||
      config.idle_spin > kMaxIdleSpin) {
    problems.push_back(fmt::format(
        "idle_spin is {}; use 0 to 1 second (50us is a good default)",
        config.idle_spin));
  }
  if (config.latency_sample_every < 1 ||
      config.latency_sample_every > kMaxLatencySampleEvery) {
    problems.push_back(fmt::format(
        "latency_sample_every is {}; use 1 (time every event) to {}",
        config.latency_sample_every, kMaxLatencySampleEvery));
  }
  if (config.key_strands < 1 || config.key_strands > (1u << 16) ||
      !std::has_single_bit(config.key_strands)) {
    problems.push_back(fmt::format(
        "key_strands is {}; use a power of two from 1 to 65536 (1024 is "
        "the default)",
        config.key_strands));
  }
  if (config.execution != Execution::kThreadPool &&
      config.execution != Execution::kInline &&
      config.execution != Execution::kManual) {
    problems.push_back(fmt::format(
        "execution is {}; use Execution::kThreadPool, kInline or kManual",
        static_cast<int>(config.execution)));
  }
  if (config.overflow != OverflowPolicy::kReject &&
      config.overflow != OverflowPolicy::kBlock) {
    problems.push_back(
        fmt::format("overflow is {}; use OverflowPolicy::kReject or kBlock",
                    static_cast<int>(config.overflow)));
  }
  return problems;
}

// The clock as a shared_ptr, for the timers' scheduler: BusConfig::clock,
// or the process-wide SteadyClock (not owned).
std::shared_ptr<Clock> bus_clock(const std::shared_ptr<Clock>& configured) {
  if (configured) return configured;
  return std::shared_ptr<Clock>(std::shared_ptr<Clock>(),
                                &SteadyClock::instance());
}

}  // namespace

std::string_view to_string(OverflowPolicy policy) noexcept {
  switch (policy) {
    case OverflowPolicy::kReject:
      return "reject";
    case OverflowPolicy::kBlock:
      return "block";
  }
  return "unknown";
}

std::string_view to_string(ShutdownMode mode) noexcept {
  switch (mode) {
    case ShutdownMode::kDrain:
      return "drain";
    case ShutdownMode::kCancelPending:
      return "cancel_pending";
  }
  return "unknown";
}

std::string_view to_string(DeadLetterReason reason) noexcept {
  switch (reason) {
    case DeadLetterReason::kCancelledAtShutdown:
      return "cancelled_at_shutdown";
    case DeadLetterReason::kDrainTimeout:
      return "drain_timeout";
    case DeadLetterReason::kCircuitOpen:
      return "circuit_open";
    case DeadLetterReason::kTimerPendingAtShutdown:
      return "timer_pending_at_shutdown";
    case DeadLetterReason::kTimerRefused:
      return "timer_refused";
    case DeadLetterReason::kRetriesExhausted:
      return "retries_exhausted";
    case DeadLetterReason::kNotRetryable:
      return "not_retryable";
    case DeadLetterReason::kEventExpired:
      return "event_expired";
    case DeadLetterReason::kRetryPendingAtShutdown:
      return "retry_pending_at_shutdown";
    case DeadLetterReason::kRetryRefused:
      return "retry_refused";
    case DeadLetterReason::kFunctionGone:
      return "function_gone";
    case DeadLetterReason::kWaitRefused:
      return "wait_refused";
    case DeadLetterReason::kExportFailed:
      return "export_failed";
    case DeadLetterReason::kUndecodable:
      return "undecodable";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<EventBus>> EventBus::Create(BusConfig config) {
  if (auto problems = config_problems(config); !problems.empty()) {
    return absl::InvalidArgumentError("invalid BusConfig: " +
                                      absl::StrJoin(problems, "; "));
  }
  std::unique_ptr<EventBus> bus;
  try {
    bus.reset(new EventBus(std::move(config)));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        "out of memory creating the bus; lower BusConfig::queue_capacity or "
        "workers");
  }
  if (bus->config_.execution != Execution::kThreadPool) return bus;
  auto pool = ThreadPool::Start(*bus, {.workers = bus->config_.workers,
                                       .max_workers = bus->max_workers_,
                                       .idle_spin = bus->config_.idle_spin,
                                       .name_prefix = "fnbus-w"});
  if (!pool.ok()) {
    bus->lifecycle_.stop_unshared();
    return pool.status();
  }
  bus->pool_ = *std::move(pool);
  return bus;
}

EventBus::EventBus(BusConfig config)
    : config_(std::move(config)),
      clock_(config_.clock ? config_.clock.get() : &SteadyClock::instance()),
      ticks_(*clock_, config_.record_latency),
      latency_sample_every_(config_.latency_sample_every),
      sample_countdowns_(config_.latency_sample_every),
      inline_(config_.execution == Execution::kInline),
      ambient_hook_(static_cast<bool>(config_.trace.ambient)),
      handler_hooks_(config_.trace.on_handler_start ||
                     config_.trace.on_handler_end),
      registry_(std::make_shared<detail::HandlerRegistry>()),
      max_workers_(config_.max_workers == 0 ? config_.workers
                                            : config_.max_workers),
      metrics_(max_workers_ + 2, config_.record_latency),
      trigger_failures_(metrics_, metrics_.shard(max_workers_ + 1)),
      queue_(config_.queue_capacity),
      lane_cursors_(std::make_unique<LaneCursor[]>(max_workers_ + 1)),
      strands_({.strands = config_.key_strands,
                // A follow-up (in a worker's headroom) is its strand's too.
                .capacity_per_strand =
                    config_.queue_capacity + config_.follow_up_headroom}),
      strand_turn_slot_(detail::type_slot<detail::StrandTurn>()),
      follow_ups_(
          config_.execution == Execution::kThreadPool
              ? make_follow_up_buffers(max_workers_, config_.follow_up_headroom)
              : nullptr),
      timers_(bus_clock(config_.clock), config_.timer_tick,
              config_.execution == Execution::kThreadPool),
      lifecycle_(*clock_),
      error_sink_(config_.error_sink),
      dead_letter_sink_(config_.dead_letter_sink),
      unhandled_sink_(config_.unhandled_sink) {}

std::unique_ptr<detail::FollowUpBuffer[]> EventBus::make_follow_up_buffers(
    std::size_t workers, std::size_t headroom) {
  auto buffers = std::make_unique<detail::FollowUpBuffer[]>(workers);
  for (std::size_t i = 0; i < workers; ++i) {
    buffers[i] = detail::FollowUpBuffer(headroom);
  }
  return buffers;
}

EventBus::~EventBus() {
  FNBUS_ASSERT(!detail::this_thread_record().dispatching_for(this) &&
                   !(pool_ && pool_->is_own_worker()) && !in_caller_loop(),
               "an EventBus was destroyed from inside one of its handlers "
               "or sinks");
  (void)shutdown(ShutdownMode::kDrain);
  registry_->remove_all();
}

bool EventBus::accepting(const detail::ThreadRecord& record) noexcept {
  // Observed after the PublishScope announcement (see Lifecycle).
  const detail::Lifecycle::State state = lifecycle_.observed();
  if (state == detail::Lifecycle::kRunning) [[likely]]
    return true;
  return state == detail::Lifecycle::kDraining &&
         record.dispatching_for(this) && !lifecycle_.drain_expired();
}

TraceContext EventBus::ambient_trace() const noexcept {
  try {
    return config_.trace.ambient().value_or(TraceContext{});
  } catch (...) {
    return {};  // a broken hook must not lose the event
  }
}

void EventBus::call_handler_hook(
    const std::function<void(const Context&)>& hook,
    const Context& context) noexcept {
  detail::call_guarded(hook, context);
}

void EventBus::on_accepted(detail::TypeInfo& type,
                           std::unique_lock<std::mutex>* inline_lock) noexcept {
  // relaxed: a statistic; the queue's turn store published the event.
  type.published.fetch_add(1, std::memory_order_relaxed);
  if (pool_) [[likely]] {
    pool_->notify_work();
  } else if (inline_lock != nullptr && inline_lock->owns_lock()) {
    run_inline(*inline_lock);
  }
}

absl::Status EventBus::reject(detail::TypeInfo& type,
                              absl::Status status) noexcept {
  // relaxed: a statistic.
  type.rejected.fetch_add(1, std::memory_order_relaxed);
  return status;
}

absl::Status EventBus::reject_closed(detail::TypeInfo& type) noexcept {
  return reject(
      type, absl::FailedPreconditionError(fmt::format(
                "publish<{}> after shutdown() began: the bus no longer "
                "accepts events (while it drains, only its own handlers may "
                "publish, until BusConfig::drain_timeout passes); publish "
                "before shutting down, or handle this status",
                type.name)));
}

absl::Status EventBus::move_threw(detail::TypeInfo& type) noexcept {
  std::string what;
  try {
    what = detail::current_exception_message();
  } catch (...) {
    // Out of memory for the message: say less.
  }
  return reject(type, absl::InvalidArgumentError(fmt::format(
                          "publish<{}>: the event's move constructor threw "
                          "({}); it was not published. Give {} a noexcept "
                          "move constructor, or catch this status",
                          type.name, what, type.name)));
}

absl::Status EventBus::heap_alloc_failed(detail::TypeInfo& type) noexcept {
  return reject(
      type,
      absl::ResourceExhaustedError(fmt::format(
          "out of memory storing a {} for the queue (events "
          "over 48 bytes or aligned over 8 are allocated); make the event "
          "smaller or free memory",
          type.name)));
}

absl::Status EventBus::settle_alloc_failed(
    detail::TypeInfo& type) const noexcept {
  return reject(type, absl::ResourceExhaustedError(fmt::format(
                          "out of memory recording PublishOptions::on_settled "
                          "for a {}; free memory or publish without it",
                          type.name)));
}

absl::Status EventBus::lane_alloc_failed(
    detail::TypeInfo& type) const noexcept {
  return reject(type, absl::ResourceExhaustedError(fmt::format(
                          "out of memory for the first high- or low-priority "
                          "queue ({} slots) publishing {}; lower "
                          "BusConfig::queue_capacity or free memory",
                          queue_.capacity(), type.name)));
}

absl::Status EventBus::validate(const PublishOptions& options) {
  if (!is_valid(options.priority)) {
    return absl::InvalidArgumentError(fmt::format(
        "PublishOptions::priority is {}; use Priority::kHigh, kNormal or kLow",
        static_cast<int>(options.priority)));
  }
  if (options.block_timeout &&
      (*options.block_timeout < std::chrono::nanoseconds::zero() ||
       *options.block_timeout > kMaxBlockTimeout)) {
    return absl::InvalidArgumentError(
        fmt::format("PublishOptions::block_timeout is {}; use 0 to 1 hour",
                    *options.block_timeout));
  }
  if (options.overflow && *options.overflow != OverflowPolicy::kReject &&
      *options.overflow != OverflowPolicy::kBlock) {
    return absl::InvalidArgumentError(fmt::format(
        "PublishOptions::overflow is {}; use OverflowPolicy::kReject or "
        "kBlock",
        static_cast<int>(*options.overflow)));
  }
  return absl::OkStatus();
}

absl::Status EventBus::publish_slow(
    detail::ThreadRecord& record, const PublishOptions& options,
    detail::TypeInfo& type, absl::FunctionRef<bool()> try_push,
    absl::FunctionRef<bool(detail::FollowUpBuffer&)> try_keep) {
  if (!pool_) {
    // Nothing but the caller empties the queue: waiting cannot help.
    return reject(
        type,
        absl::ResourceExhaustedError(fmt::format(
            "queue full ({} slots) publishing {} with "
            "Execution::{}; run the queued events "
            "(run_until_idle()) or raise "
            "BusConfig::queue_capacity",
            queue_.capacity(), type.name,
            config_.execution == Execution::kInline ? "kInline" : "kManual")));
  }
  if (record.follow_ups_bus == this) {
    // One of our workers: waiting could be waiting for itself, and
    // refusing would break the handler's chain.
    return keep_follow_up(record, type, try_keep);
  }
  const OverflowPolicy policy = options.overflow.value_or(config_.overflow);
  if (policy == OverflowPolicy::kBlock) {
    return publish_blocking(
        record, options.block_timeout.value_or(config_.block_timeout), type,
        try_push);
  }
  return reject(type, absl::ResourceExhaustedError(fmt::format(
                          "queue full ({} slots) publishing {}; raise "
                          "BusConfig::queue_capacity, add workers, speed up "
                          "handlers, or publish with OverflowPolicy::kBlock",
                          queue_.capacity(), type.name)));
}

absl::Status EventBus::publish_blocking(detail::ThreadRecord& record,
                                        std::chrono::nanoseconds timeout,
                                        detail::TypeInfo& type,
                                        absl::FunctionRef<bool()> try_push) {
  // The deadline is on the bus clock (a manual clock in tests); the waits
  // below are on real time, re-reading the bus clock at least every
  // kBlockedRecheck.
  const TimePoint deadline = detail::saturating_add(clock_->now(), timeout);
  // A queue is often full only for a moment: poll briefly before sleeping.
  for (int i = 0; i < 256; ++i) {
    if (try_push()) {
      on_accepted(type);
      return absl::OkStatus();
    }
    detail::cpu_relax();
  }
  if (record.dispatching_for(this)) {
    // A handler waiting for its own bus's queue may be waiting for itself
    // (with one worker, or with every worker doing the same).
    return reject(
        type,
        absl::ResourceExhaustedError(fmt::format(
            "queue full ({} slots) publishing {} from a handler of the same "
            "bus, which must not block on its own queue; raise "
            "BusConfig::queue_capacity, or handle this status (e.g. retry "
            "later)",
            queue_.capacity(), type.name)));
  }
  // relaxed: a hint for consumers; a missed hint costs one recheck period.
  blocked_.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock lock(blocked_mutex_);
  absl::Status status;
  for (;;) {
    if (try_push()) {
      on_accepted(type);
      break;
    }
    if (!accepting(record)) {
      status = reject_closed(type);
      break;
    }
    const TimePoint now = clock_->now();
    if (now >= deadline) {
      status = reject(
          type, absl::DeadlineExceededError(fmt::format(
                    "queue stayed full ({} slots) for {} publishing {}; "
                    "raise BusConfig::queue_capacity or block_timeout, add "
                    "workers, or speed up handlers",
                    queue_.capacity(), timeout, type.name)));
      break;
    }
    blocked_cv_.wait_for(lock,
                         std::min<Duration>(deadline - now, kBlockedRecheck));
  }
  // relaxed: as above.
  blocked_.fetch_sub(1, std::memory_order_relaxed);
  return status;
}

absl::Status EventBus::keep_follow_up(
    detail::ThreadRecord& record, detail::TypeInfo& type,
    absl::FunctionRef<bool(detail::FollowUpBuffer&)> try_keep) {
  auto& buffer = *static_cast<detail::FollowUpBuffer*>(record.follow_ups);
  if (try_keep(buffer)) {
    // relaxed: a gauge (stats().queue_depth).
    follow_ups_held_.fetch_add(1, std::memory_order_relaxed);
    // relaxed: a statistic.
    type.published.fetch_add(1, std::memory_order_relaxed);
    return absl::OkStatus();
  }
  return reject(type, absl::ResourceExhaustedError(
                          follow_up_refusal(type.name, buffer.capacity())));
}

std::string EventBus::follow_up_refusal(std::string_view type_name,
                                        std::size_t headroom) const {
  if (headroom == 0) {
    return fmt::format(
        "queue full ({} slots) publishing {} from a handler, and follow-up "
        "headroom is off (BusConfig::follow_up_headroom = 0); set it above "
        "0 so that handlers' publishes are kept instead of refused, or "
        "raise queue_capacity",
        queue_.capacity(), type_name);
  }
  return fmt::format(
      "queue full ({} slots) publishing {} from a handler, and this worker "
      "already holds {} follow-ups (BusConfig::follow_up_headroom); raise "
      "follow_up_headroom or queue_capacity, or publish fewer events per "
      "handled one",
      queue_.capacity(), type_name, headroom);
}

void EventBus::run_follow_ups(detail::FollowUpBuffer& buffer,
                              detail::WorkerShard& shard) noexcept {
  for (;;) {
    // A fresh envelope each time, as in sweep().
    detail::Envelope envelope;
    if (!buffer.try_pop(envelope)) return;
    // relaxed: a gauge.
    follow_ups_held_.fetch_sub(1, std::memory_order_relaxed);
    handle(envelope, shard, lifecycle_.fate());
  }
}

void EventBus::notify_blocked_publishers() noexcept {
  std::lock_guard lock(blocked_mutex_);
  blocked_cv_.notify_all();
}

void EventBus::wake_blocked_publishers() noexcept {
  // relaxed: a hint. A publisher that registers just after we read 0 is
  // not woken, and re-checks within kBlockedRecheck.
  if (blocked_.load(std::memory_order_relaxed) > 0) [[unlikely]] {
    // One freed slot admits one publisher.
    std::lock_guard lock(blocked_mutex_);
    blocked_cv_.notify_one();
  }
}

bool EventBus::has_work() const noexcept {
  // A strand's owed turn is work too (see repay_and_pop()).
  return !queue_.empty() || strands_.owes_turns();
}

bool EventBus::poll_work() const noexcept { return queue_.front_ready(); }

bool EventBus::run_one(std::size_t worker,
                       absl::FunctionRef<void()> taken) noexcept {
  detail::Envelope envelope;
  LaneCursor& cursor = lane_cursors_[worker];
  if (!queue_.try_pop(envelope, cursor) && !repay_and_pop(envelope, cursor)) {
    return false;
  }
  taken();
  wake_blocked_publishers();
  detail::WorkerShard& shard = metrics_.shard(worker);
  // relaxed: a gauge for metrics(); this worker is the only writer.
  shard.in_event.store(true, std::memory_order_relaxed);
  detail::FollowUpBuffer& follow_ups = follow_ups_[worker];
  detail::ThreadRecord& record = detail::this_thread_record();
  record.follow_ups_bus = this;  // owner-only fields
  record.follow_ups = &follow_ups;
  handle(envelope, shard, lifecycle_.fate());
  // Before anything else from the queue (and before a retirement): what
  // this worker's handlers could not queue.
  if (!follow_ups.empty()) [[unlikely]]
    run_follow_ups(follow_ups, shard);
  // relaxed: as above.
  shard.in_event.store(false, std::memory_order_relaxed);
  return true;
}

void EventBus::handle(detail::Envelope& envelope, detail::WorkerShard& shard,
                      detail::Fate fate) noexcept {
  // A keyed event's turn: its event is handled (and counted) in here.
  if (envelope.slot() == strand_turn_slot_) [[unlikely]] {
    run_strand(envelope, shard);
    return;
  }
  detail::TypeSeries& series = metrics_.type_series(shard, envelope.slot());
  detail::ThreadRecord& record = detail::this_thread_record();
  const EventTrace trace = detail::event_trace(record, envelope.context());
  if (fate != detail::Fate::kDispatch) [[unlikely]] {
    detail::bump(series.dead_lettered);
    // The sink runs under the rules of a handler (see dispatch()).
    detail::DispatchScope scope(record, this, trace);
    report_dead_letter(envelope,
                       fate == detail::Fate::kDrainTimeout
                           ? DeadLetterReason::kDrainTimeout
                           : DeadLetterReason::kCancelledAtShutdown,
                       trace);
    return;
  }
  // Only the clock read stands between the dequeue and the first handler;
  // the samples are recorded after the handlers.
  const bool timed = envelope.timed() && series.queue_wait;
  const std::int64_t taken = timed ? ticks_.now() : 0;
  const std::uint64_t weight = timed ? latency_sample_every_ : 0;
  detail::WorkerCounts counts{metrics_, shard, ticks_, taken, weight};
  if (!dispatch(record, envelope.slot(), envelope.type_name(), envelope.event(),
                trace, counts, envelope.settle())) {
    detail::bump(series.unhandled);  // reported to the sink by dispatch()
  }
  if (timed) {
    const std::int64_t accepted = envelope.accepted_ticks();
    series.queue_wait->record(ticks_.elapsed_ns(accepted, taken), weight);
    series.end_to_end->record(ticks_.elapsed_ns(accepted, counts.last_ticks),
                              weight);
  }
  detail::bump(series.dispatched);
}

// Holds caller_mutex_ and marks the calling thread as the one running
// queued events with it, so that code this thread runs meanwhile (handlers,
// sinks) can tell that it must not take the lock again.
class EventBus::CallerLoop {
 public:
  // Takes the lock, or adopts `held` (a lock of caller_mutex_).
  explicit CallerLoop(EventBus& bus)
      : CallerLoop(bus, std::unique_lock(bus.caller_mutex_)) {}
  CallerLoop(EventBus& bus, std::unique_lock<std::mutex> held)
      : bus_(bus), lock_(std::move(held)) {
    FNBUS_ASSERT(lock_.mutex() == &bus.caller_mutex_ && lock_.owns_lock(),
                 "CallerLoop needs caller_mutex_ held");
    // relaxed: compared only with the id of the thread reading it, which
    // sees its own stores (see on_this_thread()).
    bus_.caller_runner_.store(std::this_thread::get_id(),
                              std::memory_order_relaxed);
  }
  ~CallerLoop() {
    // relaxed: as above.
    bus_.caller_runner_.store({}, std::memory_order_relaxed);
  }
  CallerLoop(const CallerLoop&) = delete;
  CallerLoop& operator=(const CallerLoop&) = delete;

  // Whether the calling thread is inside a CallerLoop of `bus`. A thread
  // reads its own id only if it stored it (and has not cleared it since).
  static bool on_this_thread(const EventBus& bus) noexcept {
    // relaxed: as above.
    return bus.caller_runner_.load(std::memory_order_relaxed) ==
           std::this_thread::get_id();
  }

  // Runs up to `max_events` queued events; returns how many ran.
  std::size_t run(std::size_t max_events) noexcept {
    std::size_t ran = 0;
    while (ran < max_events) {
      detail::Envelope envelope;  // fresh each time, as in sweep()
      LaneCursor& cursor = bus_.caller_cursor();
      if (!bus_.queue_.try_pop(envelope, cursor) &&
          !bus_.repay_and_pop(envelope, cursor)) {
        break;
      }
      bus_.handle(envelope, bus_.caller_shard(), bus_.lifecycle_.fate());
      ++ran;
    }
    return ran;
  }

 private:
  EventBus& bus_;
  std::unique_lock<std::mutex> lock_;
};

bool EventBus::in_caller_loop() const noexcept {
  return CallerLoop::on_this_thread(*this);
}

void EventBus::sweep() noexcept {
  CallerLoop loop(*this);
  for (;;) {
    // A fresh envelope each time: try_pop must not run the previous
    // event's destructor (user code) halfway through a pop.
    detail::Envelope envelope;
    LaneCursor& cursor = caller_cursor();
    if (!queue_.try_pop(envelope, cursor) && !repay_and_pop(envelope, cursor)) {
      return;
    }
    wake_blocked_publishers();
    handle(envelope, caller_shard(), lifecycle_.fate());
  }
}

std::unique_lock<std::mutex> EventBus::lock_for_inline() noexcept {
  // Inside a loop on this thread (a handler or sink it runs publishes):
  // that loop runs the event after the current one, breadth-first.
  if (CallerLoop::on_this_thread(*this)) return {};
  // Held from before the push to the end of the drain: no other inline
  // publisher can be halfway through a push (a claimed but unfilled slot
  // hides the slots behind it from try_pop) while this one drains, so the
  // drain cannot miss this publisher's own event.
  return std::unique_lock(caller_mutex_);
}

void EventBus::run_inline(std::unique_lock<std::mutex>& held) noexcept {
  CallerLoop loop(*this, std::move(held));
  (void)loop.run(std::numeric_limits<std::size_t>::max());
}

std::size_t EventBus::run_queued(std::size_t max_events) noexcept {
  // From code this thread runs inside a loop: the lock is ours already.
  if (CallerLoop::on_this_thread(*this)) return 0;
  CallerLoop loop(*this);
  return loop.run(max_events);
}

std::size_t EventBus::run_queued_checked(std::size_t max_events) noexcept {
  // Documented: from inside a handler of this bus, run nothing.
  if (detail::this_thread_record().dispatching_for(this)) return 0;
  return run_queued(max_events);
}

bool EventBus::run_one() {
  FNBUS_ASSERT(config_.execution != Execution::kThreadPool,
               "run_one() needs BusConfig::execution = Execution::kManual "
               "(or kInline)");
  return run_queued_checked(1) == 1;
}

std::size_t EventBus::run_all() {
  FNBUS_ASSERT(config_.execution != Execution::kThreadPool,
               "run_all() needs BusConfig::execution = Execution::kManual "
               "(or kInline)");
  return run_queued_checked(queue_.size());
}

std::size_t EventBus::run_until_idle(std::size_t max_events) {
  FNBUS_ASSERT(
      config_.execution != Execution::kThreadPool,
      "run_until_idle() needs BusConfig::execution = Execution::kManual "
      "(or kInline)");
  return run_queued_checked(max_events);
}

absl::Status EventBus::shutdown(ShutdownMode mode) {
  if (detail::this_thread_record().dispatching_for(this) ||
      (pool_ && pool_->is_own_worker())) {
    return absl::FailedPreconditionError(
        "shutdown() called from inside a handler (or a sink run for an "
        "event) of this bus, which would wait for itself; call it from a "
        "thread that is not running one of the bus's handlers");
  }
  // relaxed: only this thread can have stored its own id.
  if (shutdown_thread_.load(std::memory_order_relaxed) ==
      std::this_thread::get_id()) {
    return absl::FailedPreconditionError(
        "shutdown() called from a sink while this thread is shutting the bus "
        "down; return from the sink and let the first call finish");
  }
  if (in_caller_loop()) {
    return absl::FailedPreconditionError(
        "shutdown() called from a sink while this thread runs the bus's "
        "queued events (run_one() & co., or an Execution::kInline "
        "publish), which would wait for itself; call it after they return");
  }
  std::lock_guard lock(shutdown_mutex_);
  // relaxed: read back only by this thread (above).
  shutdown_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  struct ClearOnExit {
    std::atomic<std::thread::id>& id;
    // relaxed: as above.
    ~ClearOnExit() { id.store({}, std::memory_order_relaxed); }
  } clear{shutdown_thread_};
  // A hint is enough: shutdown_mutex_ orders our own earlier stores.
  if (lifecycle_.hint() == detail::Lifecycle::kStopped) {
    return absl::OkStatus();
  }
  // Timers first, while the bus still accepts their events: the due ones
  // publish (kDrain), the pending ones are dead-lettered.
  timers_.shutdown(mode == ShutdownMode::kDrain);
  // wait_for_publishers() runs the heavy barrier. Workers and sweeps read
  // the drain deadline per event from here on (Lifecycle::fate()).
  lifecycle_.begin_stop(mode == ShutdownMode::kCancelPending,
                        config_.drain_timeout);
  notify_blocked_publishers();  // so they see the new state at once
  detail::wait_for_publishers(this);
  if (pool_) pool_->stop_and_join();
  sweep();  // left by the workers, or published by handlers since
  // From here on even this bus's handlers are refused.
  lifecycle_.finish_stop();
  detail::wait_for_publishers(this);
  sweep();
  // Calls still pending now (their requests kept by a dead-letter store,
  // say) would wait for a reply nothing can give.
  call_deadlines_->end_all(
      absl::CancelledError("the bus shut down before the call's reply"));
  return absl::OkStatus();
}

BusStats EventBus::stats() const noexcept {
  const detail::BusMetrics::Totals totals = metrics_.totals();
  BusStats stats;
  stats.published = totals.published;
  stats.rejected = totals.rejected;
  stats.dispatched = totals.dispatched;
  stats.delivered = totals.delivered;
  stats.failed = totals.failed;
  stats.unhandled = totals.unhandled;
  stats.dead_lettered = totals.dead_lettered;
  // relaxed: a gauge.
  stats.queue_depth =
      queue_.size() + follow_ups_held_.load(std::memory_order_relaxed);
  return stats;
}

metrics::MetricsSnapshot EventBus::metrics() const {
  metrics::MetricsSnapshot snapshot;
  snapshot.taken_at = clock_->now();
  metrics_.fill(snapshot);
  snapshot.timers = timers_.metrics();
  snapshot.dead_letters = dead_letter_sink_.counts();
  metrics::Gauges& gauges = snapshot.gauges;
  // relaxed: a gauge.
  gauges.queue_depth =
      queue_.size() + follow_ups_held_.load(std::memory_order_relaxed);
  gauges.queue_capacity = queue_.capacity();
  // A worker that is neither polling nor parked is handling an event (or
  // about to): the pool's own counts, so that dispatch writes no gauge.
  // In flight: the workers inside an event, from their own flags (a
  // worker that is starting, retiring or between events is not busy).
  // Retiring workers finishing an event count as in flight, not as
  // workers.
  if (pool_) {
    const ThreadPoolStats pool = pool_->stats();
    std::uint64_t busy = 0;  // in an event and not retiring
    for (std::size_t i = 0; i < max_workers_; ++i) {
      // relaxed: a gauge.
      if (metrics_.shard(i).in_event.load(std::memory_order_relaxed)) {
        ++gauges.in_flight;
        if (pool_->is_running(i)) ++busy;
      }
    }
    gauges.workers = pool.workers;
    gauges.workers_starting = pool.starting;
    gauges.workers_retiring = pool.retiring;
    gauges.workers_max = pool.max_workers;
    // busy + idle + parked == workers; retiring threads are left out.
    gauges.workers_busy = std::min<std::uint64_t>(busy, pool.workers);
    gauges.workers_parked = std::min<std::uint64_t>(
        pool.parked, pool.workers - gauges.workers_busy);
    gauges.workers_idle =
        pool.workers - gauges.workers_busy - gauges.workers_parked;
  }
  // relaxed: a gauge; a thread running queued events (run_one() & co.,
  // kInline, or shutdown's sweep) has one in flight, or is about to.
  if (caller_runner_.load(std::memory_order_relaxed) != std::thread::id{}) {
    ++gauges.in_flight;
  }
  return snapshot;
}

absl::Status EventBus::resize_workers(std::size_t workers) {
  if (!pool_) {
    return absl::FailedPreconditionError(
        "resize_workers() needs Execution::kThreadPool; with kInline and "
        "kManual events run in the caller's thread");
  }
  if (workers < 1 || workers > max_workers_) {
    return absl::InvalidArgumentError(fmt::format(
        "resize_workers({}): use 1 to {} (BusConfig::max_workers; raise it "
        "to allow more)",
        workers, max_workers_));
  }
  // relaxed: a courtesy check for a clearer message; the pool refuses a
  // resize once it is stopping in any case.
  if (lifecycle_.hint() != detail::Lifecycle::kRunning) {
    return absl::FailedPreconditionError(
        "resize_workers() after shutdown() began; resize before shutting "
        "down");
  }
  return pool_->resize(workers);
}

ThreadPoolStats EventBus::pool_stats() const noexcept {
  return pool_ ? pool_->stats() : ThreadPoolStats{};
}

void EventBus::report_failure(const detail::HandlerEntry& entry,
                              const void* event, const Context& context,
                              absl::StatusCode code,
                              std::string_view message) noexcept {
  const HandlerError error{
      .function_name = entry.name,
      .event_type = context.event_type(),
      .code = code,
      .message = message,
      .trace = context.event_trace(),
      .event = EventRef(entry.slot, context.event_type(), event, entry.ops),
      .context = context};
  detail::call_guarded(entry.on_error, error);  // the function's own first
  error_sink_.call(error);
}

void EventBus::report_unhandled(const EventRef& event) noexcept {
  // A batch whose function is gone dead-letters its items itself.
  if (event.get<detail::BatchDelivery>() != nullptr) return;
  unhandled_sink_.call(event);
}

void EventBus::set_error_sink(ErrorSink sink) {
  error_sink_.replace(std::move(sink));
}

void EventBus::set_dead_letter_sink(DeadLetterSink sink) {
  dead_letter_sink_.replace(std::move(sink));
}

void EventBus::set_unhandled_sink(UnhandledSink sink) {
  unhandled_sink_.replace(std::move(sink));
}

void EventBus::report_dead_letter(const detail::Envelope& envelope,
                                  DeadLetterReason reason,
                                  const EventTrace& trace) noexcept {
  // A queued call is dead-lettered as its event, for its function.
  if (envelope.slot() == detail::type_slot<detail::RetryDelivery>()) {
    retry_lost(*static_cast<const detail::RetryDelivery*>(envelope.event()),
               reason);
    return;
  }
  if (envelope.slot() == detail::type_slot<detail::SlotDelivery>()) {
    slot_lost(*static_cast<const detail::SlotDelivery*>(envelope.event()),
              reason);
    return;
  }
  if (envelope.slot() == detail::type_slot<detail::BatchDelivery>()) {
    detail::BusBatches::delivery_lost(envelope.event(), reason);
    return;
  }
  if (detail::SettleState* settle = envelope.settle())
    settle->mark_dead_letter(reason);
  dead_letter_sink_.call(
      DeadLetter{.event = envelope.ref(), .reason = reason, .trace = trace});
}

}  // namespace fnbus
