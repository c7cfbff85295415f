#include "fnbus/resilience/retry.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"

namespace fnbus::resilience {

RetryPredicate retry_on_codes(std::initializer_list<absl::StatusCode> codes) {
  return [codes = std::vector<absl::StatusCode>(codes)](
             const absl::Status& failure, const std::exception_ptr&) {
    return std::find(codes.begin(), codes.end(), failure.code()) != codes.end();
  };
}

absl::StatusOr<RetryPolicy> RetryPolicy::Create(RetryOptions options) {
  std::vector<std::string> problems;
  if (options.max_attempts < 1) {
    problems.emplace_back(
        "max_attempts is 0; use at least 1 (calls per event, the first "
        "included: 1 = no retry)");
  }
  if (options.max_event_age && *options.max_event_age <= Duration::zero()) {
    problems.push_back(fmt::format(
        "max_event_age is {} ns; use more than 0, or leave it unset for no "
        "limit",
        options.max_event_age->count()));
  }
  absl::StatusOr<Backoff> backoff = Backoff::Create(options.backoff);
  if (!backoff.ok()) problems.emplace_back(backoff.status().message());
  if (!problems.empty()) {
    return absl::InvalidArgumentError("RetryOptions: " +
                                      absl::StrJoin(problems, "; "));
  }
  return RetryPolicy(std::move(options), *backoff);
}

bool RetryPolicy::should_retry(std::uint32_t attempt,
                               const absl::Status& failure,
                               const std::exception_ptr& thrown) const {
  if (exhausted(attempt)) return false;
  if (!options_.retry_if) return true;
  try {
    return options_.retry_if(failure, thrown);
  } catch (...) {
    return false;  // documented: a predicate that throws says no
  }
}

}  // namespace fnbus::resilience
