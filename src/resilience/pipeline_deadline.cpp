// resilience::Pipeline's deadline stage (FunctionOptions::deadline): the
// handler runs watched by a DeadlineWatch, which requests its stop token
// once the deadline passes; when it returns, a clock read decides whether
// it overran (a coarse one when that is sure to say "on time", see
// pipeline.hpp).

#include <chrono>
#include <iterator>
#include <string>
#include <string_view>

#include "fmt/format.h"

#include "fnbus/detail/coarse_clock.hpp"
#include "fnbus/detail/exception_message.hpp"
#include "fnbus/detail/saturating_time.hpp"
#include "fnbus/resilience/pipeline.hpp"

namespace fnbus::resilience {
namespace {

// `d` for a message: whole seconds, milliseconds or microseconds when
// exact, else milliseconds with three decimals, or nanoseconds.
std::string human(Duration d) {
  const auto ns = d.count();
  if (ns != 0 && ns % 1'000'000'000 == 0) {
    return fmt::format("{}s", ns / 1'000'000'000);
  }
  if (ns % 1'000'000 == 0) return fmt::format("{}ms", ns / 1'000'000);
  if (ns >= 1'000'000) return fmt::format("{:.3f}ms", ns / 1e6);
  if (ns % 1'000 == 0) return fmt::format("{}us", ns / 1'000);
  return fmt::format("{}ns", ns);
}

// The failure of a call that ended after its deadline: what it did (`ran`,
// `failed after`, `threw after`) and, for a failure, its own message.
absl::Status overrun(const detail::DeadlineState& state, std::string_view did,
                     Duration ran, std::string_view cause) {
  std::string message = fmt::format("{} {}, past its deadline of {}", did,
                                    human(ran), human(state.budget));
  if (!cause.empty())
    fmt::format_to(std::back_inserter(message), ": {}", cause);
  return absl::DeadlineExceededError(message);
}

}  // namespace

bool Pipeline::surely_on_time(TimePoint deadline) const noexcept {
  // The coarse clock is never ahead of steady_clock and lags it by about
  // a tick (<= 1 % of the deadline), far less than the margin (half of
  // it). No overflow: the deadline is at least the margin after the
  // steady clock's epoch (a start >= 0 plus twice the margin).
  return coarse_end_margin_ != Duration::zero() &&
         detail::coarse_steady_now() <= deadline - coarse_end_margin_;
}

Outcome Pipeline::call_within_deadline(const void* event, Context& context,
                                       absl::Status& failure, Call& handler,
                                       TimePoint start) {
  const TimePoint deadline = detail::saturating_add(start, *deadline_);
  DeadlineWatch::Invocation call = watch_->begin(deadline, *deadline_);
  detail::DeadlineState& state = call.state();
  detail::ContextAccess::set_deadline(context, &state);
  Outcome outcome;
  try {
    outcome = handler(event, context, failure);
  } catch (...) {
    call.end();
    const TimePoint end = clock_.now();
    if (end <= deadline) throw;  // on time: the caller reports it as usual
    state.timed_out = true;
    failure = overrun(state, "threw after", end - start,
                      detail::current_exception_message());
    return Outcome::kTimedOut;
  }
  call.end();
  if (surely_on_time(deadline)) [[likely]]
    return outcome;
  const TimePoint end = clock_.now();
  if (end <= deadline) return outcome;
  state.timed_out = true;
  state.late = outcome == Outcome::kDelivered;
  failure = state.late ? overrun(state, "ran", end - start, {})
                       : overrun(state, "failed after", end - start,
                                 std::string(failure.message()));
  return Outcome::kTimedOut;
}

}  // namespace fnbus::resilience
