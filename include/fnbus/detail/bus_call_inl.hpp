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

namespace detail {

// EventBus's request/reply internals (a friend: the bus keeps only the
// deadlines and the hook in dispatch that a call needs).
struct BusCalls {
  // Whether nothing runs a pending request while its caller waits.
  [[nodiscard]] static bool waits_in_vain(const EventBus& bus) noexcept {
    return bus.config().execution != Execution::kThreadPool;
  }
  // Why a call of `call_slot` with `timeout` cannot start, or OK
  // (src/mesh/bus_calls.cpp).
  static absl::Status problem(EventBus& bus, Duration timeout,
                              TypeSlot call_slot, std::string_view request_type,
                              std::string_view reply_type);

  // Sets the call's deadline and publishes the request; on failure ends
  // the call with the error (or, given `refused`, stores the error there
  // and ends the call without calling back). The request's handle, empty
  // on failure.
  template <typename Reply, Event Request>
  static std::weak_ptr<PendingCall<Request, Reply>> start(
      EventBus& bus, Request request, const mesh::CallOptions& options,
      const std::shared_ptr<CallState<Reply>>& state,
      absl::Status* refused = nullptr) {
    using Call = CallRequest<Request, Reply>;
    absl::Status error =
        problem(bus, options.timeout, type_slot<Call>(),
                event_type_name<Request>(), event_type_name<Reply>());
    // Kept until the call is ended below: a refused request's last copy
    // must not end it as dropped first.
    std::shared_ptr<PendingCall<Request, Reply>> pending;
    if (error.ok()) {
      // Before the publish: a worker may end the call at once.
      state->watch(bus.call_deadlines_, bus.clock().now(), options.timeout,
                   bus.timers_);
      pending = std::make_shared<PendingCall<Request, Reply>>(
          std::move(request), state);
      std::weak_ptr<PendingCall<Request, Reply>> weak = pending;
      error = bus.publish(Call{.pending = pending}, options.publish);
      if (error.ok()) {
        pending.reset();  // the queue's copy (or a handler's) owns it now
        return weak;
      }
    }
    if (refused != nullptr) {
      *refused = error;
      state->end_silently();
    } else {
      state->complete(std::move(error));
    }
    return {};
  }

  // CallFuture::get(): runs the request in the calling thread if that
  // thread runs a handler of `bus` and no worker took the request.
  template <typename Request, typename Reply>
  static void run_here(EventBus& bus,
                       const std::weak_ptr<PendingCall<Request, Reply>>& weak) {
    // Only on a thread running this bus's handler: the bus is alive, and
    // the caller would otherwise hold a worker while it waits.
    if (!this_thread_record().dispatching_for(&bus)) return;
    std::shared_ptr<PendingCall<Request, Reply>> pending = weak.lock();
    if (pending == nullptr || !pending->admit(CallRunner::kCaller)) return;
    const CallRequest<Request, Reply> request{.pending = std::move(pending),
                                              .runner = CallRunner::kCaller};
    bus.trigger(request);
  }
};

}  // namespace detail

template <typename Reply, Event Request>
mesh::CallFuture<Reply> EventBus::call(Request request,
                                       mesh::CallOptions options) {
  auto state = std::make_shared<detail::CallState<Reply>>(
      detail::BusCalls::waits_in_vain(*this));
  std::weak_ptr<detail::PendingCall<Request, Reply>> pending =
      detail::BusCalls::start<Reply>(*this, std::move(request), options, state);
  return mesh::CallFuture<Reply>(
      state, [this, pending] { detail::BusCalls::run_here(*this, pending); });
}

template <typename Reply, Event Request, typename Callback>
absl::Status EventBus::call(Request request, mesh::CallOptions options,
                            Callback on_reply) {
  static_assert(
      std::invocable<Callback&&, absl::StatusOr<Reply>>,
      "a call's callback is called as on_reply(absl::StatusOr<Reply>)");
  auto state = std::make_shared<detail::CallState<Reply>>(
      detail::BusCalls::waits_in_vain(*this),
      [on_reply = std::move(on_reply)](absl::StatusOr<Reply> result) mutable {
        std::move(on_reply)(std::move(result));
      });
  // A refusal at call() is returned instead of reaching the callback.
  absl::Status refused;
  detail::BusCalls::start<Reply>(*this, std::move(request), options, state,
                                 &refused);
  return refused;
}

}  // namespace fnbus
