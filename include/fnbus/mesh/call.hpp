#pragma once

// Request/reply between functions (docs/request_reply.md): the public
// types of EventBus::serve() and EventBus::call().
//
//   auto pricing = bus->serve(
//       [](const GetQuote& q) -> absl::StatusOr<Quote> { return price(q); },
//       {.name = "pricing", .retry = fnbus::resilience::RetryOptions{}});
//   fnbus::mesh::CallFuture<Quote> quote =
//       bus->call<Quote>(GetQuote{.sku = "A-1"}, {.timeout = 200ms});
//   absl::StatusOr<Quote> answer = quote.get();
//
// A call is a published event of its own type (the request travels inside
// it), handled by the serving function like any event: its FunctionOptions
// (condition, breaker, retries, deadline, fallback, concurrency limit)
// apply to calls exactly as to events, and its metrics count them.
//
// EventBus::serve(handler, options[, fallback]): `handler` takes
// (const Request&[, Context&]) and returns absl::StatusOr<Reply> or a
// Reply. A condition or idempotency key written for Request is applied to
// the request; an error Status (or a throw) is retried by options.retry,
// counts for the breaker, and when final is the call's result. `fallback`
// (same forms and reply type) answers while the breaker is open and after
// the handler failed for good. Each serve() is a function of its own: with
// two for one (Request, Reply) the first reply wins and the other is
// counted as late. Bad options fail a precondition, as in subscribe().
//
// EventBus::call<Reply>(request, options) publishes the request
// (options.publish applies) and returns its CallFuture. A call ends once,
// with the first of: the reply; the function's final error; DeadlineExceeded
// once options.timeout passes on the bus clock (a later reply is counted as
// late and dropped); Unavailable when the request is dropped unanswered
// (filtered, refused by an open breaker, dead-lettered); Cancelled when the
// request outlives the bus's shutdown. At once: NotFound when no function
// serves (Request, Reply); InvalidArgument for a timeout <= 0; the
// publish's refusal. Calls carry the caller's trace.
//
// EventBus::call<Reply>(request, options, on_reply) ends with
// `on_reply(absl::StatusOr<Reply>)` instead -- called once, on the thread
// that ends the call (the serving worker, the timer thread at the timeout,
// the thread dropping the request) -- so nothing waits and no worker is
// held. Keep it short (publish to hand work on). Returns OK when the call
// started; otherwise its error, and `on_reply` is not called.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/detail/call_state.hpp"
#include "fnbus/fwd.hpp"
#include "fnbus/options.hpp"
#include "fnbus/subscription.hpp"

namespace fnbus::mesh {

// Options of one EventBus::call().
struct CallOptions {
  // How long the caller waits for the reply, on the bus clock (> 0); then
  // the call ends with DeadlineExceeded and a later reply is counted as
  // late and dropped. A waiting deadline is a bus timer: it holds no
  // worker.
  Duration timeout = std::chrono::seconds(30);
  // How the request is published (overflow, block timeout, trace).
  PublishOptions publish = {};
};

// The reply of one EventBus::call(), as a future. Move-only.
//
// Thread safety: one thread uses a CallFuture at a time.
template <typename Reply>
class CallFuture {
 public:
  // Whether the call has ended (reply, error or timeout).
  [[nodiscard]] bool ready() const { return state_->done(); }

  // Waits for the call to end and returns its result: the reply, the
  // serving function's error (the Status it returned last, after its
  // retries), DeadlineExceeded at the call's timeout, NotFound when no
  // function serves the request, or the publish's refusal.
  // From a handler of the same bus, a request no worker has taken yet is
  // run in the calling thread instead of waiting for a worker (the queued
  // copy is then skipped): a handler calling a function of its own bus --
  // itself included -- does not deadlock a pool of one worker. A request
  // that is already running, or waits for a retry or a concurrency slot,
  // is waited for (at most the call's timeout).
  // On a bus without a pool (Execution::kManual or kInline) get() cannot
  // wait, since nothing would run the request: while the call is pending
  // it returns FailedPrecondition at once, saying to run the bus first.
  // Returns the result once; later calls return FailedPrecondition.
  absl::StatusOr<Reply> get() {
    if (!state_->done()) {
      if (run_here_) run_here_();
      if (!state_->done() && state_->waits_in_vain()) {
        return absl::FailedPreconditionError(
            "CallFuture::get: the call is still pending and this bus has no "
            "pool to run it (Execution::kManual or kInline); call "
            "bus.run_until_idle() (and run_due_timers() for timeouts) first");
      }
    }
    return state_->take();
  }

  // Waits until the call ends or `timeout` (real time) passes; true if it
  // ended. Does not run the request itself.
  bool wait_for(std::chrono::nanoseconds timeout) const {
    return state_->wait_for(timeout);
  }

 private:
  friend class fnbus::EventBus;
  CallFuture(std::shared_ptr<fnbus::detail::CallState<Reply>> state,
             absl::AnyInvocable<void()> run_here)
      : state_(std::move(state)), run_here_(std::move(run_here)) {}

  std::shared_ptr<fnbus::detail::CallState<Reply>> state_;
  // Runs the request in this thread if that is allowed and nobody took it.
  absl::AnyInvocable<void()> run_here_;
};

// What a serving function has done (relaxed counters, each exact on its
// own).
struct ServiceStats {
  std::uint64_t replied = 0;  // replies that ended their call
  std::uint64_t failed = 0;   // handler calls that returned an error/threw
  // Replies that came after their call had ended (its timeout passed, or
  // another function replied first): dropped.
  std::uint64_t late = 0;
  // Requests not run because their call had already ended when a worker
  // took them (timed out while queued, or run by the waiting caller).
  std::uint64_t skipped = 0;
};

// A function registered by EventBus::serve(): its Subscription (RAII:
// destroying the Service stops serving) and its counters. Move-only.
class Service {
 public:
  Service() = default;

  [[nodiscard]] ServiceStats stats() const noexcept {
    if (!counters_) return {};
    // relaxed: statistics, each an exact count on its own.
    constexpr auto kRelaxed = std::memory_order_relaxed;
    return {.replied = counters_->replied.load(kRelaxed),
            .failed = counters_->failed.load(kRelaxed),
            .late = counters_->late.load(kRelaxed),
            .skipped = counters_->skipped.load(kRelaxed)};
  }
  // Stops serving (see Subscription::cancel()); pending calls then end by
  // their timeout, or at once if their requests are dropped.
  void cancel() { subscription_.cancel(); }
  [[nodiscard]] bool active() const noexcept { return subscription_.active(); }

 private:
  friend class fnbus::EventBus;
  Service(Subscription subscription,
          std::shared_ptr<fnbus::detail::ServiceCounters> counters)
      : subscription_(std::move(subscription)),
        counters_(std::move(counters)) {}

  Subscription subscription_;
  std::shared_ptr<fnbus::detail::ServiceCounters> counters_;
};

}  // namespace fnbus::mesh
