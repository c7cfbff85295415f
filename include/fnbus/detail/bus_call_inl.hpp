#pragma once

// The definitions of EventBus's request/reply templates (serve() and
// call()): a call publishes a CallRequest (detail/call_state.hpp) that the
// serving function handles as an event, its reply ending the call.

#include <concepts>
#include <memory>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fmt/format.h"

#include "fnbus/detail/call_state.hpp"
#include "fnbus/detail/handler_traits.hpp"
#include "fnbus/detail/saturating_time.hpp"
#include "fnbus/event_bus.hpp"
#include "fnbus/mesh/call.hpp"

namespace fnbus {

namespace detail {

template <typename T>
struct ReplyOf {
  using type = T;
};
template <typename T>
struct ReplyOf<absl::StatusOr<T>> {
  using type = T;
};

// What a serving callable `F` (called with const Request& and maybe
// Context&) returns, and the reply type under it.
template <typename F, typename Request>
struct ServeTraits {
  static constexpr bool kTakesContext =
      std::invocable<F&, const Request&, Context&>;
  using Result =
      std::conditional_t<kTakesContext,
                         std::invoke_result<F&, const Request&, Context&>,
                         std::invoke_result<F&, const Request&>>::type;
  using Reply = typename ReplyOf<std::remove_cvref_t<Result>>::type;
};

template <typename Request, typename F>
auto invoke_server(F& fn, const Request& request, Context& context) {
  if constexpr (ServeTraits<F, Request>::kTakesContext) {
    return fn(request, context);
  } else {
    return fn(request);
  }
}

// Runs a serving callable (handler or fallback) for one request: records a
// failure for the call's final error, ends the call with a reply.
template <typename Request, typename Reply, typename F>
absl::Status serve_request(F& fn, const CallRequest<Request, Reply>& call,
                           Context& context, ServiceCounters& counters) {
  PendingCall<Request, Reply>& pending = *call.pending;
  if (!pending.admit(call.runner) || pending.state->done()) {
    ServiceCounters::add(counters.skipped);
    return absl::OkStatus();
  }
  absl::StatusOr<Reply> reply;
  try {
    reply = invoke_server<Request>(fn, pending.request, context);
  } catch (const std::exception& error) {
    pending.state->record_failure(absl::UnknownError(error.what()));
    ServiceCounters::add(counters.failed);
    throw;
  } catch (...) {
    pending.state->record_failure(absl::UnknownError(
        "unknown exception (not derived from std::exception)"));
    ServiceCounters::add(counters.failed);
    throw;
  }
  if (!reply.ok()) {
    ServiceCounters::add(counters.failed);
    pending.state->record_failure(reply.status());
    return reply.status();
  }
  ServiceCounters::add(pending.state->complete(std::move(reply))
                           ? counters.replied
                           : counters.late);
  return absl::OkStatus();
}

}  // namespace detail

template <typename F>
mesh::Service EventBus::serve(F&& handler, FunctionOptions options) {
  return serve(std::forward<F>(handler), std::move(options), nullptr);
}

template <typename F, typename G>
mesh::Service EventBus::serve(F&& handler, FunctionOptions options,
                              G&& fallback) {
  using Traits = detail::HandlerTraits<F>;
  static_assert(Traits::kHasParam && Event<typename Traits::EventType>,
                "serve() takes a callable whose first parameter is the "
                "request (const Request&), optionally followed by Context&");
  using Request = typename Traits::EventType;
  using Fn = std::decay_t<F>;
  using Reply = typename detail::ServeTraits<Fn, Request>::Reply;
  using Call = detail::CallRequest<Request, Reply>;
  static_assert(std::is_move_constructible_v<Reply>, "a reply must be movable");

  auto counters = std::make_shared<detail::ServiceCounters>();
  // Stages written for the request are moved onto the call event.
  if (options.when &&
      options.when.event_slot() == detail::type_slot<Request>()) {
    options.when = Condition::For<Call>(
        [when = std::move(options.when)](const Call& call) {
          return when(&call.pending->request);
        });
  }
  if (options.idempotency_key &&
      options.idempotency_key.event_slot() == detail::type_slot<Request>()) {
    options.idempotency_key = KeyOf::For<Call>(
        [key = std::move(options.idempotency_key)](const Call& call) {
          return key(&call.pending->request);
        });
  }
  if constexpr (!std::is_null_pointer_v<std::decay_t<G>>) {
    using FallbackFn = std::decay_t<G>;
    static_assert(
        std::is_same_v<typename detail::ServeTraits<FallbackFn, Request>::Reply,
                       Reply>,
        "a call's fallback takes the request like the handler and returns "
        "the same reply type (Reply or absl::StatusOr<Reply>)");
    options.fallback = Fallback::For<Call>(
        [fn = FallbackFn(std::forward<G>(fallback)), counters](
            const Call& call, Context& context) mutable {
          return detail::serve_request(fn, call, context, *counters);
        });
  }
  Subscription subscription = subscribe<Call>(
      [fn = Fn(std::forward<F>(handler)), counters](const Call& call,
                                                    Context& context) mutable {
        return detail::serve_request(fn, call, context, *counters);
      },
      std::move(options));
  return mesh::Service(std::move(subscription), std::move(counters));
}

template <typename Reply, Event Request>
mesh::CallFuture<Reply> EventBus::call(Request request,
                                       mesh::CallOptions options) {
  auto state = std::make_shared<detail::CallState<Reply>>(!has_pool());
  std::weak_ptr<detail::PendingCall<Request, Reply>> pending =
      start_call<Reply>(std::move(request), options, state);
  return mesh::CallFuture<Reply>(state,
                                 [this, pending] { run_call_here(pending); });
}

template <typename Reply, Event Request, typename Callback>
absl::Status EventBus::call(Request request, mesh::CallOptions options,
                            Callback on_reply) {
  static_assert(
      std::invocable<Callback&&, absl::StatusOr<Reply>>,
      "a call's callback is called as on_reply(absl::StatusOr<Reply>)");
  auto state = std::make_shared<detail::CallState<Reply>>(
      !has_pool(),
      [on_reply = std::move(on_reply)](absl::StatusOr<Reply> result) mutable {
        std::move(on_reply)(std::move(result));
      });
  // A refusal at call() is returned instead of reaching the callback.
  absl::Status refused;
  start_call<Reply>(std::move(request), options, state, &refused);
  return refused;
}

template <typename Reply, Event Request>
std::weak_ptr<detail::PendingCall<Request, Reply>> EventBus::start_call(
    Request request, const mesh::CallOptions& options,
    const std::shared_ptr<detail::CallState<Reply>>& state,
    absl::Status* refused) {
  using Call = detail::CallRequest<Request, Reply>;
  absl::Status problem =
      call_problem(options.timeout, detail::type_slot<Call>(),
                   event_type_name<Request>(), event_type_name<Reply>());
  // Kept until the call is ended below: a refused request's last copy
  // must not end it as dropped first.
  std::shared_ptr<detail::PendingCall<Request, Reply>> pending;
  if (problem.ok()) {
    // Before the publish: a worker may end the call at once.
    state->watch(call_deadlines_, clock_->now(), options.timeout, timers_);
    pending = std::make_shared<detail::PendingCall<Request, Reply>>(
        std::move(request), state);
    std::weak_ptr<detail::PendingCall<Request, Reply>> weak = pending;
    problem = publish(Call{.pending = pending}, options.publish);
    if (problem.ok()) {
      pending.reset();  // the queue's copy (or a handler's) owns it now
      return weak;
    }
  }
  if (refused != nullptr) {
    *refused = problem;
    state->end_silently();
  } else {
    state->complete(std::move(problem));
  }
  return {};
}

template <typename Request, typename Reply>
void EventBus::run_call_here(
    const std::weak_ptr<detail::PendingCall<Request, Reply>>& weak) {
  // Only on a thread running this bus's handler: the bus is alive, and
  // the caller would otherwise hold a worker while it waits.
  if (!detail::this_thread_record().dispatching_for(this)) return;
  std::shared_ptr<detail::PendingCall<Request, Reply>> pending = weak.lock();
  if (pending == nullptr || !pending->admit(detail::CallRunner::kCaller)) {
    return;
  }
  const detail::CallRequest<Request, Reply> request{
      .pending = std::move(pending), .runner = detail::CallRunner::kCaller};
  trigger(request);
}

}  // namespace fnbus
