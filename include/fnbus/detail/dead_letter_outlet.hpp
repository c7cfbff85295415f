#pragma once

// Where a bus's dead letters go: its DeadLetterSink (replaceable while the
// bus runs), each counted by reason on its way (MetricsSnapshot::
// dead_letters) -- every dead letter passes here, so none is counted
// twice or missed.
//
// Thread safety: call(), replace() and counts() from any thread.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>

#include "fnbus/detail/live_sink.hpp"
#include "fnbus/metrics/snapshot.hpp"
#include "fnbus/options.hpp"

namespace fnbus::detail {

class DeadLetterOutlet {
 public:
  using Sink = std::function<void(const DeadLetter&)>;

  explicit DeadLetterOutlet(Sink sink) : sink_(std::move(sink)) {}

  void call(const DeadLetter& letter) noexcept {
    const auto reason = static_cast<std::size_t>(letter.reason);
    // relaxed: a statistic; counts() reads each counter on its own.
    if (reason < counts_.size())
      counts_[reason].fetch_add(1, std::memory_order_relaxed);
    sink_.call(letter);
  }
  void replace(Sink sink) { sink_.replace(std::move(sink)); }

  [[nodiscard]] metrics::DeadLetterCounts counts() const noexcept {
    metrics::DeadLetterCounts out;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      out.by_reason[i] = counts_[i].load(std::memory_order_relaxed);
    }
    return out;
  }

 private:
  LiveSink<Sink> sink_;
  std::array<std::atomic<std::uint64_t>, kDeadLetterReasonCount> counts_{};
};

}  // namespace fnbus::detail
