#include "fnbus/detail/bus_metrics.hpp"

#include <algorithm>
#include <cstddef>
#include <memory>
#include <tuple>
#include <utility>

namespace fnbus::detail {
namespace {

std::unique_ptr<metrics::LatencyRecorder> recorder_if(bool timed) {
  return timed ? std::make_unique<metrics::LatencyRecorder>() : nullptr;
}

// relaxed everywhere below: statistics read for a report; each counter is
// exact, their moments differ.
std::uint64_t read(const std::atomic<std::uint64_t>& counter) noexcept {
  return counter.load(std::memory_order_relaxed);
}

void add_histogram(const std::unique_ptr<metrics::LatencyRecorder>& recorder,
                   metrics::HistogramSnapshot& out) {
  if (recorder) recorder->add_to(out);
}

// Folds adjacent entries of a sorted vector that `same` says are equal.
template <typename T, typename Same>
void fold_adjacent(std::vector<T>& entries, Same same) {
  if (entries.empty()) return;
  std::size_t kept = 0;
  for (std::size_t i = 1; i < entries.size(); ++i) {
    if (same(entries[kept], entries[i])) {
      entries[kept].merge(entries[i]);
    } else if (++kept != i) {
      entries[kept] = std::move(entries[i]);
    }
  }
  entries.resize(kept + 1);
}

// Two event types may share a name (E::kEventName, or the same spelling in
// two shared objects); a scraper must see one series per label set.
void merge_same_names(metrics::MetricsSnapshot& snapshot) {
  fold_adjacent(snapshot.events, [](const auto& a, const auto& b) {
    return a.event == b.event;
  });
  fold_adjacent(snapshot.functions, [](const auto& a, const auto& b) {
    return a.event == b.event && a.function == b.function;
  });
}

// A live-breaker count; below 0 for a moment while two reports race (see
// BreakerSeries::in_state).
std::uint64_t read_live(const std::atomic<std::int64_t>& count) noexcept {
  const std::int64_t value = count.load(std::memory_order_relaxed);
  return value > 0 ? static_cast<std::uint64_t>(value) : 0;
}

void fill_breakers(const BreakerSeries& series, metrics::FunctionMetrics& out) {
  const auto live = [&](resilience::BreakerState state) {
    return read_live(series.in_state[static_cast<std::size_t>(state)]);
  };
  out.breakers.closed = live(resilience::BreakerState::kClosed);
  out.breakers.half_open = live(resilience::BreakerState::kHalfOpen);
  out.breakers.open = live(resilience::BreakerState::kOpen);
  out.breaker_opened = read(series.opened);
  out.breaker_half_opened = read(series.half_opened);
  out.breaker_closed = read(series.closed);
}

}  // namespace

TypeSeries::TypeSeries(bool timed)
    : queue_wait(recorder_if(timed)), end_to_end(recorder_if(timed)) {}

FunctionSeries::FunctionSeries(bool timed) : run_time(recorder_if(timed)) {}

BusMetrics::BusMetrics(std::size_t shards, bool timed,
                       std::size_t max_functions)
    : timed_(timed),
      max_functions_(std::clamp<std::size_t>(max_functions, 1, kMaxFunctions)),
      shard_count_(shards),
      shards_(new WorkerShard[shards]) {}

BreakerTally::BreakerTally(std::shared_ptr<BreakerSeries> series)
    : series_(std::move(series)) {
  add(resilience::BreakerState::kClosed, 1);  // a breaker starts closed
}

BreakerTally::~BreakerTally() {
  for (std::size_t i = 0; i < BreakerSeries::kStates; ++i) {
    // relaxed: see mine_ (and BreakerSeries::in_state for the RMW).
    series_->in_state[i].fetch_sub(mine_[i].load(std::memory_order_relaxed),
                                   std::memory_order_relaxed);
  }
}

void BreakerTally::on_transition(
    const resilience::BreakerTransition& transition) noexcept {
  // Adding -1 and +1 rather than storing the state: reports of one
  // breaker's transitions may race (see resilience::BreakerObserver), and
  // additions come out right in any order.
  add(transition.from, -1);
  add(transition.to, 1);
  std::atomic<std::uint64_t>* entered = nullptr;
  switch (transition.to) {
    case resilience::BreakerState::kOpen:
      entered = &series_->opened;
      break;
    case resilience::BreakerState::kHalfOpen:
      entered = &series_->half_opened;
      break;
    case resilience::BreakerState::kClosed:
      entered = &series_->closed;
      break;
  }
  // relaxed: a count (see BreakerSeries).
  if (entered != nullptr) entered->fetch_add(1, std::memory_order_relaxed);
}

void BreakerTally::add(resilience::BreakerState state,
                       std::int64_t delta) noexcept {
  const auto i = static_cast<std::size_t>(state);
  FNBUS_ASSERT(i < BreakerSeries::kStates, "a BreakerState");
  // relaxed: counts (see BreakerSeries::in_state and mine_).
  series_->in_state[i].fetch_add(delta, std::memory_order_relaxed);
  mine_[i].fetch_add(delta, std::memory_order_relaxed);
}

TypeInfo& BusMetrics::create_type_info(TypeSlot slot, std::string_view name) {
  std::lock_guard lock(mutex_);
  return types_.get_or_create(slot, [&] { return new TypeInfo(name); });
}

std::uint32_t BusMetrics::function_id(TypeSlot slot, std::string_view event,
                                      const std::string& name) {
  std::lock_guard lock(mutex_);
  (void)types_.get_or_create(slot, [&] { return new TypeInfo(event); });
  if (auto it = function_ids_.find(std::pair(slot, name));
      it != function_ids_.end()) {
    return it->second;
  }
  const auto id = static_cast<std::uint32_t>(functions_.size());
  if (functions_.size() + 1 >= max_functions_) {
    // The last id is the overflow series, shared by every later function.
    if (functions_.size() + 1 == max_functions_) {
      functions_.push_back(
          {slot, kOverflowFunction, std::string(kOverflowFunction)});
    }
    return static_cast<std::uint32_t>(max_functions_ - 1);
  }
  function_ids_.emplace(std::pair(slot, name), id);
  functions_.push_back({slot, event, name});
  return id;
}

std::shared_ptr<BreakerSeries> BusMetrics::breaker_series(
    std::uint32_t function_id) {
  std::lock_guard lock(mutex_);
  FNBUS_ASSERT(function_id < functions_.size(), "an id from function_id()");
  std::shared_ptr<BreakerSeries>& series = functions_[function_id].breakers;
  if (series == nullptr) series = std::make_shared<BreakerSeries>();
  return series;
}

void BusMetrics::count_dead_letter(std::uint32_t function_id,
                                   DeadLetterReason reason) noexcept {
  const auto index = static_cast<std::size_t>(reason);
  std::lock_guard lock(mutex_);
  if (function_id < functions_.size() && index < kDeadLetterReasonCount) {
    ++functions_[function_id].dead_letters.by_reason[index];
  }
}

BusMetrics::Totals BusMetrics::totals() const {
  Totals totals;
  types_.for_each([&](std::uint32_t, const TypeInfo& info) {
    totals.published += read(info.published);
    totals.rejected += read(info.rejected);
  });
  for (std::size_t i = 0; i < shard_count_; ++i) {
    shards_[i].types.for_each([&](std::uint32_t, const TypeSeries& series) {
      totals.dispatched += read(series.dispatched);
      totals.unhandled += read(series.unhandled);
      totals.dead_lettered += read(series.dead_lettered);
    });
    shards_[i].functions.for_each(
        [&](std::uint32_t, const FunctionSeries& series) {
          totals.delivered += read(series.delivered);
          totals.failed += read(series.failed);
        });
  }
  return totals;
}

void BusMetrics::fill(metrics::MetricsSnapshot& snapshot) const {
  snapshot.latency_recorded = timed_;
  types_.for_each([&](std::uint32_t slot, const TypeInfo& info) {
    metrics::EventTypeMetrics& out = snapshot.events.emplace_back();
    out.event = std::string(info.name);
    out.published = read(info.published);
    out.rejected = read(info.rejected);
    for (std::size_t i = 0; i < shard_count_; ++i) {
      const TypeSeries* series = shards_[i].types.find(slot);
      if (series == nullptr) continue;
      out.dispatched += read(series->dispatched);
      out.unhandled += read(series->unhandled);
      out.dead_lettered += read(series->dead_lettered);
      add_histogram(series->queue_wait, out.queue_wait);
      add_histogram(series->end_to_end, out.end_to_end);
    }
  });
  {
    std::lock_guard lock(mutex_);
    for (std::uint32_t id = 0; id < functions_.size(); ++id) {
      metrics::FunctionMetrics& out = snapshot.functions.emplace_back();
      out.event = std::string(functions_[id].event);
      out.function = functions_[id].name;
      for (std::size_t i = 0; i < shard_count_; ++i) {
        const FunctionSeries* series = shards_[i].functions.find(id);
        if (series == nullptr) continue;
        out.delivered += read(series->delivered);
        out.failed += read(series->failed);
        out.filtered += read(series->filtered);
        out.duplicates += read(series->duplicates);
        out.rejected += read(series->rejected);
        out.fell_back += read(series->fell_back);
        out.timed_out += read(series->timed_out);
        out.late += read(series->late);
        out.retried += read(series->retried);
        out.throttled += read(series->throttled);
        add_histogram(series->run_time, out.run_time);
      }
      out.dead_letter_reasons = functions_[id].dead_letters;
      out.dead_lettered = out.dead_letter_reasons.total();
      if (functions_[id].breakers != nullptr) {
        fill_breakers(*functions_[id].breakers, out);
      }
    }
  }
  std::sort(snapshot.events.begin(), snapshot.events.end(),
            [](const auto& a, const auto& b) { return a.event < b.event; });
  std::sort(snapshot.functions.begin(), snapshot.functions.end(),
            [](const auto& a, const auto& b) {
              return std::tie(a.event, a.function) <
                     std::tie(b.event, b.function);
            });
  merge_same_names(snapshot);
}

}  // namespace fnbus::detail
