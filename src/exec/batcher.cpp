// BatchOptions' check and BatchResult's out-of-line parts.

#include "fnbus/exec/batcher.hpp"

#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"

#include "fnbus/exec/batch_result.hpp"

namespace fnbus {

absl::Status check(const BatchOptions& options) {
  std::vector<std::string> problems;
  if (options.max_items < 1 || options.max_items > kMaxBatchItems) {
    problems.push_back(
        fmt::format("max_items is {}; use 1 to {} (items per batch call; 10 "
                    "is SQS's default)",
                    options.max_items, kMaxBatchItems));
  }
  if (options.max_wait <= Duration::zero() ||
      options.max_wait > kMaxBatchWait) {
    problems.push_back(fmt::format(
        "max_wait is {} ns; use more than 0 and at most 1 hour (how long the "
        "first item of a batch waits for the batch to fill, e.g. 100ms)",
        options.max_wait.count()));
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError("BatchOptions: " +
                                    absl::StrJoin(problems, "; "));
}

void BatchResult::fail(std::size_t index, absl::Status status) {
  if (index >= statuses_.size()) {
    misuse_ = absl::InvalidArgumentError(fmt::format(
        "BatchResult::fail({}) on a batch of {} items; pass an index below {} "
        "(the item's position in the span)",
        index, statuses_.size(), statuses_.size()));
    return;
  }
  if (status.ok()) {
    status = absl::UnknownError(
        "marked failed by its batch handler with an OK status");
  }
  if (statuses_[index].ok()) ++failed_;
  statuses_[index] = std::move(status);
}

const absl::Status& BatchResult::status(std::size_t index) const noexcept {
  static const absl::Status kOk;
  return index < statuses_.size() ? statuses_[index] : kOk;
}

}  // namespace fnbus
