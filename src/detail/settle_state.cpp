#include "fnbus/detail/settle_state.hpp"

#include <new>

namespace fnbus {

std::string_view to_string(Verdict verdict) noexcept {
  switch (verdict) {
    case Verdict::kAbandoned:
      return "abandoned";
    case Verdict::kFailed:
      return "failed";
    case Verdict::kUnhandled:
      return "unhandled";
    case Verdict::kDeadLettered:
      return "dead-lettered";
    case Verdict::kDone:
      return "done";
  }
  return "unknown";
}

namespace detail {
namespace {

// The dead letters after which publishing the event again would redo
// work left undone, rather than repeat a failure.
bool abandons(DeadLetterReason reason) noexcept {
  switch (reason) {
    case DeadLetterReason::kCancelledAtShutdown:
    case DeadLetterReason::kDrainTimeout:
    case DeadLetterReason::kTimerPendingAtShutdown:
    case DeadLetterReason::kRetryPendingAtShutdown:
    case DeadLetterReason::kFunctionGone:
      return true;
    default:
      return false;
  }
}

Verdict verdict_of(const Settlement& counts, bool unhandled) noexcept {
  if (counts.abandoned > 0) return Verdict::kAbandoned;
  if (counts.failed > 0) return Verdict::kFailed;
  if (unhandled) return Verdict::kUnhandled;
  if (counts.dead_lettered > 0) return Verdict::kDeadLettered;
  return Verdict::kDone;
}

}  // namespace

SettleState* SettleState::Create(SettleCallback callback) noexcept {
  return new (std::nothrow) SettleState(std::move(callback));
}

void SettleState::discard() noexcept { delete this; }

void SettleState::mark_dead_letter(DeadLetterReason reason) noexcept {
  bump(abandons(reason) ? abandoned_ : dead_lettered_);
}

void SettleState::settle() noexcept {
  Settlement settlement{.failed = failed_.load(kRelaxed),
                        .dead_lettered = dead_lettered_.load(kRelaxed),
                        .abandoned = abandoned_.load(kRelaxed)};
  settlement.verdict = verdict_of(settlement, unhandled_.load(kRelaxed));
  try {
    if (callback_) callback_(settlement);
  } catch (...) {  // documented: dropped (SettleCallback)
  }
  delete this;
}

}  // namespace detail
}  // namespace fnbus
