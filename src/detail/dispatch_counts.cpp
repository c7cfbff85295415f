#include "fnbus/detail/dispatch_counts.hpp"

namespace fnbus::detail {

void TriggerFailures::count(const HandlerEntry& entry) noexcept {
  try {
    std::lock_guard lock(mutex_);
    bump(metrics_.function_series(shard_, entry.function_id).failed);
  } catch (...) {
    // Out of memory for the series: the failure still reaches the sinks.
  }
}

void TriggerFailures::count(
    std::uint32_t function_id,
    std::atomic<std::uint64_t> FunctionSeries::*counter) noexcept {
  try {
    std::lock_guard lock(mutex_);
    bump(metrics_.function_series(shard_, function_id).*counter);
  } catch (...) {
    // Out of memory for the series: the letter still reaches the sink.
  }
}

}  // namespace fnbus::detail
