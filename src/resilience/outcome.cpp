#include "fnbus/resilience/outcome.hpp"

namespace fnbus {

std::string_view to_string(Outcome outcome) noexcept {
  switch (outcome) {
    case Outcome::kDelivered:
      return "delivered";
    case Outcome::kFailed:
      return "failed";
    case Outcome::kFiltered:
      return "filtered";
    case Outcome::kDuplicate:
      return "duplicate";
    case Outcome::kRejected:
      return "rejected";
    case Outcome::kFellBack:
      return "fell_back";
    case Outcome::kTimedOut:
      return "timed_out";
    case Outcome::kRetrying:
      return "retrying";
    case Outcome::kThrottled:
      return "throttled";
  }
  return "unknown";
}

}  // namespace fnbus
