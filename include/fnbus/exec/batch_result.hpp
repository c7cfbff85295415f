#pragma once

// What a batch handler (EventBus::subscribe_batch, docs/batches.md) reports
// per item: Lambda's partial batch response. The handler marks the items
// it could not handle; only those are retried (FunctionOptions::retry) or,
// out of retries, dead-lettered. A handler that throws or returns a
// non-OK absl::Status fails the whole batch.
//
//   bus->subscribe_batch<Order>(
//       [](std::span<const Order> orders, fnbus::BatchResult& result) {
//         for (std::size_t i = 0; i < orders.size(); ++i) {
//           if (!store(orders[i])) result.fail(i,
//           absl::UnavailableError("db"));
//         }
//       },
//       {.max_items = 25, .max_wait = 50ms}, {.name = "store-orders"});

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"

namespace fnbus {

// One batch call's per-item outcome. Every item succeeds unless marked.
// Thread safety: none; the handler's own, for the call's duration.
class BatchResult {
 public:
  // A result for `size` items, all succeeded, of call `attempt`.
  BatchResult(std::size_t size, std::uint32_t attempt)
      : statuses_(size), attempt_(attempt) {}

  // Marks item `index` failed with `status` (an OK status becomes
  // Unknown): only failed items are called again. Marking an item twice
  // keeps the last status. An index past the batch is a bug in the
  // handler: the whole batch then fails (InvalidArgument, naming it).
  void fail(std::size_t index,
            absl::Status status = absl::UnknownError(
                "marked failed by its batch handler (BatchResult::fail)"));

  // Items in the batch.
  [[nodiscard]] std::size_t size() const noexcept { return statuses_.size(); }
  // The call this is for these items: 1 the first, 2 the first retry...
  [[nodiscard]] std::uint32_t attempt() const noexcept { return attempt_; }
  // Items marked failed so far.
  [[nodiscard]] std::size_t failed_count() const noexcept { return failed_; }
  // Item `index`'s status: OK unless marked (or out of range: OK).
  [[nodiscard]] const absl::Status& status(std::size_t index) const noexcept;
  // OK, or the misuse that fails the whole batch (fail() out of range).
  [[nodiscard]] const absl::Status& misuse() const noexcept { return misuse_; }

 private:
  std::vector<absl::Status> statuses_;  // OK: succeeded
  std::uint32_t attempt_;
  std::size_t failed_ = 0;
  absl::Status misuse_;
};

// A batch handler for events of type E: called as
// handler(std::span<const E>, BatchResult&), returning void or
// absl::Status.
template <typename F, typename E>
concept BatchHandlerFor =
    std::invocable<F&, std::span<const E>, BatchResult&> &&
    (std::is_void_v<
         std::invoke_result_t<F&, std::span<const E>, BatchResult&>> ||
     std::same_as<std::invoke_result_t<F&, std::span<const E>, BatchResult&>,
                  absl::Status>);

}  // namespace fnbus
