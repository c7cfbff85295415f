#pragma once

// The definition of EventBus::subscribe_batch(): a batch function is two
// subscriptions under one Subscription -- the collector of E (which fills
// a Batcher and runs the batches it fills) and the function's
// BatchDelivery handler (which runs the batches cut by age and the
// retries). detail/batch_function.hpp holds the rest.

#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/detail/batch_delivery.hpp"
#include "fnbus/detail/batch_function.hpp"
#include "fnbus/event_bus.hpp"
#include "fnbus/exec/batcher.hpp"

namespace fnbus {

namespace detail {
// subscribe_batch()'s check (src/exec/bus_batches.cpp): OK, or
// InvalidArgument naming every bad or unsupported setting.
absl::Status batch_function_problems(const BatchOptions& batch,
                                     const FunctionOptions& options);
}  // namespace detail

template <Event E, typename F>
absl::StatusOr<Subscription> EventBus::subscribe_batch(
    F&& handler, BatchOptions batch, FunctionOptions options) {
  using Fn = std::decay_t<F>;
  static_assert(BatchHandlerFor<Fn, E>,
                "a batch handler is called as handler(std::span<const E>, "
                "fnbus::BatchResult&) and returns void or absl::Status");
  static_assert(kCopyableEvent<E>,
                "subscribe_batch() keeps a copy of each event until its "
                "batch is cut: E must be copy-constructible");
  if constexpr (BatchHandlerFor<Fn, E> && kCopyableEvent<E>) {
    if (absl::Status problems = detail::batch_function_problems(batch, options);
        !problems.ok()) {
      return problems;
    }
    std::optional<resilience::RetryPolicy> retry;
    if (options.retry) retry = *resilience::RetryPolicy::Create(*options.retry);
    std::string name =
        options.name.empty() ? std::string("<unnamed>") : options.name;
    // The collector's series (subscribe<E>() finds the same one): the
    // items' dead letters count there.
    const std::uint32_t function_id = metrics_.function_id(
        detail::type_slot<E>(), event_type_name<E>(), name);
    using Function = detail::BatchFunction<E, Fn>;
    auto function = std::make_shared<Function>(
        *this, *clock_, std::forward<F>(handler),
        *Batcher<detail::BatchItem<E>>::Create(batch),
        detail::BatchFunctionInfo{.name = name,
                                  .function_id = function_id,
                                  .on_error = std::move(options.on_error)},
        std::move(retry));
    Subscription all = subscribe<E>(
        [function](const E& event, Context& context) {
          function->collect(event, context);
        },
        FunctionOptions{.name = name, .when = std::move(options.when)});
    // Its own deliveries only: the others' are counted as filtered.
    const void* const owner = function.get();
    all.absorb(subscribe<detail::BatchDelivery>(
        [](const detail::BatchDelivery& delivery) { delivery.work->run(); },
        FunctionOptions{.name = std::move(name),
                        .when = Condition::For<detail::BatchDelivery>(
                            [owner](const detail::BatchDelivery& delivery) {
                              return delivery.work->owner() == owner;
                            })}));
    return all;
  }
  return absl::InternalError("unreachable: a static_assert above failed");
}

}  // namespace fnbus
