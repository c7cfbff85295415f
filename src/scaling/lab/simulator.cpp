#include "fnbus/scaling/lab/simulator.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <functional>
#include <limits>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"

#include "fnbus/scaling/lab/random.hpp"
#include "fnbus/scaling/scaling_loop.hpp"

namespace fnbus::scaling::lab {
namespace {

constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();

std::int64_t ns(Duration d) { return d.count(); }

std::vector<std::string> problems_of(const SimulationInput& input,
                                     const SimulationOptions& options) {
  std::vector<std::string> problems;
  if (options.tick <= Duration::zero()) {
    problems.emplace_back("tick must be more than 0");
  }
  if (options.thread_start_delay < Duration::zero()) {
    problems.emplace_back("thread_start_delay must be 0 or more");
  }
  if (options.wait_slo <= Duration::zero()) {
    problems.emplace_back("wait_slo must be more than 0");
  }
  if (input.duration_ns <= 0) {
    problems.emplace_back("duration_ns must be more than 0");
  }
  if (!input.service_ns) problems.emplace_back("service_ns is empty");
  if (!input.arrivals_ns.empty() && input.arrivals_ns.front() < 0) {
    problems.emplace_back("arrivals_ns must not be negative");
  }
  if (!std::is_sorted(input.arrivals_ns.begin(), input.arrivals_ns.end())) {
    problems.emplace_back("arrivals_ns must be sorted ascending");
  }
  for (const Burst& burst : input.bursts) {
    if (burst.start_ns < 0 || burst.end_ns <= burst.start_ns ||
        burst.workers == 0) {
      problems.emplace_back(
          "each burst needs start_ns >= 0, end_ns > start_ns, workers >= 1");
      break;
    }
  }
  if (options.recovery_ticks == 0) {
    problems.emplace_back("recovery_ticks must be 1 or more");
  }
  const MachineStalls& stalls = options.stalls;
  if (!(stalls.per_second >= 0) || !std::isfinite(stalls.per_second)) {
    problems.emplace_back(
        fmt::format("stalls.per_second is {}; use a finite rate >= 0 (0: no "
                    "stalls)",
                    stalls.per_second));
  } else if (stalls.per_second > 0 && stalls.length <= Duration::zero()) {
    problems.emplace_back(
        "stalls.length must be more than 0 when stalls.per_second > 0");
  }
  if (!(options.service_overshoot >= 1) ||
      !std::isfinite(options.service_overshoot)) {
    problems.emplace_back(
        fmt::format("service_overshoot is {}; use a finite factor >= 1 (1: "
                    "service times as drawn)",
                    options.service_overshoot));
  }
  return problems;
}

// Whether a tick's exact p99 wait is within the SLO: the ceil(0.99 n)-th
// smallest wait is at most the SLO iff at most n - ceil(0.99 n) waited
// longer (integer arithmetic, so that n = 100 allows exactly 1).
bool p99_within(std::uint64_t taken, std::uint64_t late) {
  const std::uint64_t allowed = taken - (99 * taken + 99) / 100;
  return late <= allowed;
}

// Recovery from one burst, as it is being measured.
struct RecoveryTracker {
  Burst burst;
  BurstRecovery result;
  std::size_t good_ticks = 0;  // in-SLO ticks in a row so far
  std::int64_t run_begin = 0;  // when the current run of them began
};

// What the ticks measure between two of them.
struct TickStats {
  std::uint64_t arrivals = 0;
  std::uint64_t started = 0;
  std::uint64_t late = 0;     // started after waiting longer than the SLO
  double service_sum = 0;     // seconds
  double service_sq_sum = 0;  // seconds^2
  metrics::HistogramSnapshot service;
  metrics::HistogramSnapshot wait;
  double busy_ns = 0;
};

// When machine stalls begin: a Poisson process of `per_second` whose next
// stall begins after the previous one ends, from its own generator.
class StallSchedule {
 public:
  explicit StallSchedule(const MachineStalls& stalls)
      : random_(stalls.seed),
        rate_(stalls.per_second),
        length_(ns(stalls.length)) {
    next_ = draw_after(0);
  }
  // The start of the next stall (kNever if none).
  [[nodiscard]] std::int64_t next() const { return next_; }
  [[nodiscard]] std::int64_t length() const { return length_; }
  // The stall at next() has begun: draws the one after it.
  void begin() { next_ = draw_after(next_ + length_); }

 private:
  std::int64_t draw_after(std::int64_t t) {
    if (!(rate_ > 0)) return kNever;
    const double gap_ns = random_.exponential(1.0 / rate_) * 1e9;
    if (!(gap_ns < static_cast<double>(kNever - t))) return kNever;
    return t + static_cast<std::int64_t>(gap_ns);
  }

  Random random_;
  double rate_;
  std::int64_t length_;
  std::int64_t next_ = kNever;
};

class Simulation {
 public:
  Simulation(const SimulationInput& input, const SimulationOptions& options,
             ScalingLoop loop)
      : input_(input),
        options_(options),
        loop_(std::move(loop)),
        stall_schedule_(options.stalls) {
    for (const Burst& burst : input_.bursts) {
      trackers_.push_back({.burst = burst});
      marks_.push_back(burst.start_ns);
    }
    std::sort(marks_.begin(), marks_.end());
  }

  SimulationResult run() {
    const std::size_t initial =
        std::clamp(options_.initial_workers, options_.governor.min_workers,
                   options_.governor.max_workers);
    for (std::size_t i = 0; i < initial; ++i) take_work(add_worker());
    tick(0);  // the estimator's baseline
    std::int64_t next_tick = ns(options_.tick);
    for (;;) {
      const std::int64_t arrival = next_arrival();
      const std::int64_t completion =
          completions_.empty() ? kNever : completions_.top().first;
      const std::int64_t ready = starting_.empty() ? kNever : starting_.front();
      const std::int64_t mark =
          next_mark_ < marks_.size() ? marks_[next_mark_] : kNever;
      const std::int64_t stall_edge = next_stall_edge();
      const bool drained = arrival == kNever && completion == kNever &&
                           queue_.empty() && now_ >= input_.duration_ns;
      if (drained) break;
      // A queue that no worker will ever take (cannot happen with
      // min_workers >= 1, which the governor enforces) must not spin.
      if (completion == kNever && ready == kNever && alive_ == 0 &&
          now_ >= input_.duration_ns) {
        break;
      }
      const std::int64_t t =
          std::min({arrival, completion, ready, mark, stall_edge, next_tick});
      advance_to(t);
      // Fixed order at equal times: completions, starts, arrivals, burst
      // starts, stall edges, tick.
      if (t == completion) {
        finish(completions_.top().second);
      } else if (t == ready) {
        starting_.pop_front();
        take_work(add_worker());
        note_capacity();
      } else if (t == arrival) {
        arrive(t);
      } else if (t == mark) {
        ++next_mark_;
        note_capacity();
      } else if (t == stall_edge) {
        stall_edge_reached(t);
      } else {
        tick(t);
        next_tick += ns(options_.tick);
      }
    }
    result_.worker_seconds = worker_ns_ / 1e9;
    const double minutes = static_cast<double>(now_) / 60e9;
    result_.actions_per_minute =
        minutes > 0 ? static_cast<double>(result_.scaling_actions) / minutes
                    : 0;
    result_.invalid_targets = loop_.governor().invalid_count();
    result_.clamped_targets = loop_.governor().clamped_count();
    for (const RecoveryTracker& tracker : trackers_) {
      result_.recoveries.push_back(tracker.result);
    }
    return std::move(result_);
  }

 private:
  struct Worker {
    bool alive = true;
    bool busy = false;
    bool retiring = false;
    std::int64_t arrived = 0;  // of the event being handled
    std::int64_t service = 0;  // its service time so far, ns
  };

  [[nodiscard]] bool stalled() const { return in_stall_; }

  // The next start or end of a machine stall (kNever if none).
  [[nodiscard]] std::int64_t next_stall_edge() const {
    if (stalled()) return stalled_until_;
    const std::int64_t start = stall_schedule_.next();
    return start < input_.duration_ns ? start : kNever;
  }

  void stall_edge_reached(std::int64_t t) {
    if (stalled()) {  // t == stalled_until_: the machine runs again
      in_stall_ = false;
      while (!idle_.empty() && !queue_.empty()) {
        const std::size_t w = idle_.back();
        idle_.pop_back();
        take_work(w);
      }
      return;
    }
    stall_begins(t);
  }

  // Every worker pauses for the stall's length from `t`: the events being
  // handled finish that much later (and their service times, as measured,
  // grow by as much), and starting threads are ready at its end at the
  // earliest.
  void stall_begins(std::int64_t t) {
    const std::int64_t length = stall_schedule_.length();
    stall_schedule_.begin();
    stalled_until_ = t + length;
    in_stall_ = true;
    ++result_.stalls;
    std::vector<std::pair<std::int64_t, std::size_t>> shifted;
    while (!completions_.empty()) {
      const auto [finish_at, w] = completions_.top();
      completions_.pop();
      shifted.emplace_back(finish_at + length, w);
      const double before = static_cast<double>(workers_[w].service) / 1e9;
      workers_[w].service += length;
      const double after = static_cast<double>(workers_[w].service) / 1e9;
      tick_.service_sum += after - before;
      tick_.service_sq_sum += after * after - before * before;
    }
    for (const auto& entry : shifted) completions_.push(entry);
    for (std::int64_t& ready_at : starting_) {
      ready_at = std::max(ready_at, stalled_until_);
    }
  }

  std::int64_t next_arrival() const {
    if (next_arrival_ >= input_.arrivals_ns.size()) return kNever;
    const std::int64_t at = input_.arrivals_ns[next_arrival_];
    return at < input_.duration_ns ? at : kNever;
  }

  // Integrates the cost and busy time up to `t`.
  void advance_to(std::int64_t t) {
    const auto dt = static_cast<double>(t - now_);
    worker_ns_ += dt * static_cast<double>(alive_ + starting_.size());
    tick_.busy_ns += dt * static_cast<double>(busy_);
    now_ = t;
  }

  std::size_t add_worker() {
    workers_.push_back({});
    ++alive_;
    return workers_.size() - 1;
  }

  // Worker `w` is free: it takes the oldest queued event, or idles (also
  // during a stall, until its end).
  void take_work(std::size_t w) {
    if (queue_.empty() || stalled()) {
      idle_.push_back(w);
      return;
    }
    const std::int64_t arrived = queue_.front();
    queue_.pop_front();
    const std::int64_t wait = now_ - arrived;
    const std::int64_t service = overshoot(input_.service_ns(now_));
    workers_[w].busy = true;
    workers_[w].arrived = arrived;
    workers_[w].service = service;
    ++busy_;
    completions_.emplace(now_ + service, w);
    const auto wait_u = static_cast<std::uint64_t>(wait);
    const auto service_u = static_cast<std::uint64_t>(service);
    result_.wait.add(wait_u);
    if (wait > ns(options_.wait_slo)) {
      ++result_.slo_violations;
      ++tick_.late;
    }
    ++result_.events;
    ++tick_.started;
    const double seconds = static_cast<double>(service) / 1e9;
    tick_.service_sum += seconds;
    tick_.service_sq_sum += seconds * seconds;
    tick_.service.add(service_u);
    tick_.wait.add(wait_u);
  }

  // A drawn service time as the handler takes it (>= 1 ns).
  [[nodiscard]] std::int64_t overshoot(std::int64_t drawn) const {
    const double factor = options_.service_overshoot;
    if (factor == 1.0) return std::max<std::int64_t>(1, drawn);
    return std::max<std::int64_t>(
        1, std::llround(static_cast<double>(drawn) * factor));
  }

  void finish(std::size_t w) {
    completions_.pop();
    // At completion, so that a stall's stretch is in it.
    result_.response.add(
        static_cast<std::uint64_t>(now_ - workers_[w].arrived));
    workers_[w].busy = false;
    --busy_;
    ++completed_;
    if (workers_[w].retiring) {
      workers_[w].alive = false;
      --alive_;
      --retiring_;
      return;
    }
    take_work(w);
  }

  void arrive(std::int64_t t) {
    ++next_arrival_;
    ++arrivals_;
    ++tick_.arrivals;
    queue_.push_back(t);
    if (!idle_.empty() && !stalled()) {
      const std::size_t w = idle_.back();
      idle_.pop_back();
      take_work(w);
    }
  }

  // Workers taking events: running and not retiring.
  std::size_t running() const { return alive_ - retiring_; }

  // Workers that will be there: running, plus starting.
  std::size_t capacity() const { return running() + starting_.size(); }

  // Records the capacity recovery of every burst under way whose need the
  // running workers now meet (called when a burst starts and whenever a
  // worker becomes ready: the only moments its need can first be met).
  void note_capacity() {
    for (RecoveryTracker& tracker : trackers_) {
      const Burst& burst = tracker.burst;
      if (tracker.result.capacity_ns || now_ < burst.start_ns ||
          now_ > burst.end_ns || running() < burst.workers) {
        continue;
      }
      tracker.result.capacity_ns = now_ - burst.start_ns;
    }
  }

  // Scores the tick ending at `t` for the SLO recovery of every burst it
  // overlaps.
  void note_slo(std::int64_t t) {
    const std::int64_t begin = t - ns(options_.tick);
    const bool within = p99_within(tick_.started, tick_.late);
    for (RecoveryTracker& tracker : trackers_) {
      const Burst& burst = tracker.burst;
      if (tracker.result.slo_ns || t <= burst.start_ns ||
          begin >= burst.end_ns) {
        continue;
      }
      if (!within) {
        tracker.good_ticks = 0;
        continue;
      }
      if (tracker.good_ticks++ == 0) {
        tracker.run_begin = std::max(begin, burst.start_ns);
      }
      if (tracker.good_ticks >= options_.recovery_ticks) {
        tracker.result.slo_ns = tracker.run_begin - burst.start_ns;
      }
    }
  }

  void resize(std::size_t target) {
    std::size_t current = capacity();
    while (current < target) {
      // A thread cannot start during a stall: ready at its end at the
      // earliest (which keeps starting_ ascending).
      starting_.push_back(
          std::max(now_ + ns(options_.thread_start_delay), stalled_until_));
      ++current;
    }
    // Shrink: cancel starting workers, then retire idle ones, then let
    // busy ones go after their event.
    while (current > target && !starting_.empty()) {
      starting_.pop_back();
      --current;
    }
    while (current > target && !idle_.empty()) {
      workers_[idle_.back()].alive = false;
      idle_.pop_back();
      --alive_;
      --current;
    }
    for (Worker& worker : workers_) {
      if (current <= target) break;
      if (worker.alive && worker.busy && !worker.retiring) {
        worker.retiring = true;
        ++retiring_;
        --current;
      }
    }
  }

  TickObservation observation(std::int64_t t) const {
    TickObservation obs;
    obs.now = TimePoint{} + std::chrono::nanoseconds(t);
    obs.arrivals_total = arrivals_;
    obs.completions_total = completed_;
    obs.queue_depth = queue_.size();
    obs.in_flight = busy_;
    obs.workers_running = alive_;
    obs.workers_starting = starting_.size();
    if (tick_.started > 0) {
      const auto n = static_cast<double>(tick_.started);
      const double mean = tick_.service_sum / n;
      const double variance =
          std::max(0.0, tick_.service_sq_sum / n - mean * mean);
      obs.service_samples = tick_.started;
      obs.service_time_mean = mean;
      obs.service_time_scv = mean > 0 ? variance / (mean * mean) : 1.0;
      obs.service_time_p99 = tick_.service.quantile_nanos(0.99) / 1e9;
      obs.wait_p99 = tick_.wait.quantile_nanos(0.99) / 1e9;
    }
    if (!queue_.empty()) {
      obs.oldest_wait = static_cast<double>(t - queue_.front()) / 1e9;
    }
    const double span =
        static_cast<double>(alive_) * static_cast<double>(ns(options_.tick));
    obs.busy_fraction = span > 0 ? tick_.busy_ns / span : 0;
    return obs;
  }

  void tick(std::int64_t t) {
    const TickObservation obs = observation(t);
    if (t == 0) {
      loop_.start(obs);  // the estimator's baseline
      tick_ = {};
      return;
    }
    const ScalingStep step = loop_.step(obs);
    if (!step.error.ok()) ++result_.policy_errors;  // the size was kept
    const std::size_t before = capacity();
    resize(step.governed.workers);
    if (capacity() != before) ++result_.scaling_actions;
    TimelineRow row;
    row.time_s = static_cast<double>(t) / 1e9;
    row.arrival_rate = static_cast<double>(tick_.arrivals) /
                       std::chrono::duration<double>(options_.tick).count();
    row.estimated_rate = step.load.arrival_rate_slow;
    row.workers = capacity();
    row.policy_target = step.decision.target;
    row.queue_depth = queue_.size();
    row.wait_p99_ms = obs.wait_p99 * 1e3;
    result_.timeline.push_back(row);
    note_slo(t);
    tick_ = {};
  }

  const SimulationInput& input_;
  const SimulationOptions& options_;
  ScalingLoop loop_;
  SimulationResult result_;

  std::int64_t now_ = 0;
  std::size_t next_arrival_ = 0;
  std::uint64_t arrivals_ = 0;
  std::uint64_t completed_ = 0;
  std::deque<std::int64_t> queue_;     // arrival times, FIFO
  std::deque<std::int64_t> starting_;  // ready times, ascending
  std::vector<Worker> workers_;
  std::vector<std::size_t> idle_;
  std::size_t alive_ = 0;
  std::size_t busy_ = 0;
  std::size_t retiring_ = 0;  // alive, busy, and going after this event
  // (finish time, worker): earliest first; ties by worker id.
  std::priority_queue<std::pair<std::int64_t, std::size_t>,
                      std::vector<std::pair<std::int64_t, std::size_t>>,
                      std::greater<>>
      completions_;
  double worker_ns_ = 0;
  TickStats tick_;
  std::vector<RecoveryTracker> trackers_;  // in SimulationInput order
  std::vector<std::int64_t> marks_;        // burst starts, ascending
  std::size_t next_mark_ = 0;
  StallSchedule stall_schedule_;
  bool in_stall_ = false;
  std::int64_t stalled_until_ = 0;  // the end of the last stall
};

}  // namespace

absl::StatusOr<SimulationResult> simulate(const SimulationInput& input,
                                          ScalingPolicy& policy,
                                          const SimulationOptions& options) {
  if (auto problems = problems_of(input, options); !problems.empty()) {
    return absl::InvalidArgumentError("invalid simulation: " +
                                      absl::StrJoin(problems, "; "));
  }
  auto loop = ScalingLoop::Create(policy, {.governor = options.governor,
                                           .fast_window = options.fast_window,
                                           .slow_window = options.slow_window});
  if (!loop.ok()) return loop.status();
  Simulation simulation(input, options, *std::move(loop));
  return simulation.run();
}

}  // namespace fnbus::scaling::lab
