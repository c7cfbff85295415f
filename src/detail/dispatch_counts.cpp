#include "fnbus/detail/dispatch_counts.hpp"

namespace fnbus::detail {

void TriggerFailures::count(const HandlerEntry& entry) noexcept {
  count(entry.function_id, &FunctionSeries::failed);
}

void TriggerFailures::count(
    std::uint32_t function_id,
    std::atomic<std::uint64_t> FunctionSeries::*counter) noexcept {
  try {
    std::lock_guard lock(mutex_);
    bump(metrics_.function_series(shard_, function_id).*counter);
  } catch (...) {
    // Out of memory for the series: the failure or letter still reaches
    // its sink.
  }
}

}  // namespace fnbus::detail
