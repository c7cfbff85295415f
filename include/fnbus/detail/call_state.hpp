#pragma once

// The shared state of one EventBus::call(): how the call ends (CallState),
// the request travelling as an event (CallRequest over PendingCall), and a
// serving function's counters. See mesh/call.hpp for the public side.
//
// Who ends a call: the first of
// - the serving function's reply (or its fallback's),
// - the call's deadline (DeadlineExceeded; detail/call_deadlines.hpp),
// - the last copy of the request going away unanswered (the function
//   failed for good, the request was filtered, dead-lettered or dropped),
// - the bus refusing the request at call().
// Later attempts find the call ended and are counted (late) or skipped.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "fnbus/clock.hpp"
#include "fnbus/detail/call_deadlines.hpp"
#include "fnbus/timers/bus_timers.hpp"

namespace fnbus::detail {

// A serving function's counters (mesh::ServiceStats). relaxed everywhere:
// statistics, each exact on its own; nothing is published through them.
struct ServiceCounters {
  std::atomic<std::uint64_t> replied{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> late{0};
  std::atomic<std::uint64_t> skipped{0};

  static void add(std::atomic<std::uint64_t>& counter) noexcept {
    counter.fetch_add(1, std::memory_order_relaxed);
  }
};

// The untyped half of a call's end: the done flag, its waiters, its place
// among the bus's call deadlines and the last failure.
// Thread safety: any thread.
class CallCore : public std::enable_shared_from_this<CallCore> {
 public:
  // `waits_in_vain`: the bus has no pool (nothing runs a pending request
  // while its caller waits).
  explicit CallCore(bool waits_in_vain) noexcept
      : waits_in_vain_(waits_in_vain) {}
  CallCore(const CallCore&) = delete;
  CallCore& operator=(const CallCore&) = delete;
  virtual ~CallCore();

  // Lock-free: a caller polling ready() does not contend with the
  // thread ending the call.
  [[nodiscard]] bool done() const noexcept {
    // acquire: pairs with the release in after_end(); a caller that sees
    // the call ended then takes mutex_ for the result anyway. It may read
    // false a moment after done_ was set (before after_end()): callers
    // that must know for sure take mutex_.
    return ended_.load(std::memory_order_acquire);
  }
  [[nodiscard]] bool waits_in_vain() const noexcept { return waits_in_vain_; }
  // Waits (real time) until done; true if done.
  bool wait_for(std::chrono::nanoseconds timeout) const;

  // Puts the call among `deadlines`, to end `timeout` from `now`. Called
  // once, before the request is published.
  void watch(std::shared_ptr<CallDeadlines> deadlines, TimePoint now,
             Duration timeout, timers::BusTimers& timers);
  // A serving call failed with `error` (it may be retried).
  void record_failure(absl::Status error);
  // What a call ends with when its request goes away unanswered.
  [[nodiscard]] absl::Status dropped_status() const;
  // What a call ends with at its deadline.
  [[nodiscard]] absl::Status timeout_status() const;
  // Ends the call with `status` (an error) unless it has ended.
  virtual void end_with(absl::Status status) = 0;

 protected:
  // Marks the call ended (mutex_ held); false if it had ended already.
  bool end_locked();
  // After the call ended (mutex_ released): wakes the waiters.
  void after_end();

  mutable std::mutex mutex_;
  mutable std::condition_variable done_cv_;
  bool done_ = false;  // guarded by mutex_
  // done_, readable without the lock (set after it, never cleared).
  std::atomic<bool> ended_{false};

 private:
  friend class CallDeadlines;

  const bool waits_in_vain_;
  // Set by watch() before the request is published (which orders it
  // before every other thread's use); never changed after.
  std::shared_ptr<CallDeadlines> deadlines_;
  Duration timeout_{};  // as deadlines_
  // The call's slice in deadlines_, if it is in one. Guarded by
  // deadlines_'s mutex.
  std::optional<TimePoint> slice_;
  absl::Status last_error_;     // guarded by mutex_
  std::uint32_t failures_ = 0;  // guarded by mutex_
};

// How one call of reply type Reply ends: its result for a CallFuture, or
// its callback.
template <typename Reply>
class CallState : public CallCore {
 public:
  using Callback = absl::AnyInvocable<void(absl::StatusOr<Reply>) &&>;

  CallState(bool waits_in_vain, Callback callback = {})
      : CallCore(waits_in_vain), callback_(std::move(callback)) {}

  // Ends the call with `result` unless it has ended; false if it had.
  // The callback, if any, runs in the calling thread.
  bool complete(absl::StatusOr<Reply> result) {
    return end(&result, /*call_back=*/true);
  }
  void end_with(absl::Status status) override { complete(std::move(status)); }
  // Ends the call without a result and without calling the callback (the
  // caller was told otherwise); false if it had ended.
  bool end_silently() { return end(nullptr, /*call_back=*/false); }

  // Waits until ended, then moves the result out (once).
  absl::StatusOr<Reply> take() {
    std::unique_lock lock(mutex_);
    done_cv_.wait(lock, [&] { return done_; });
    if (!result_) {
      return absl::FailedPreconditionError(
          "CallFuture::get: the result was taken already (get() returns it "
          "once)");
    }
    absl::StatusOr<Reply> result = std::move(*result_);
    result_.reset();
    return result;
  }

 private:
  // Ends the call: stores `*result` for the future, or hands it to the
  // callback (`call_back`), or, with neither, drops the callback.
  bool end(absl::StatusOr<Reply>* result, bool call_back) {
    // Lock-free when ended (a request's last copy going after the reply).
    if (done()) return false;
    Callback callback;  // called, or destroyed, after the lock is released
    {
      std::lock_guard lock(mutex_);
      if (!end_locked()) return false;
      if (callback_) {
        callback = std::move(callback_);
      } else if (result != nullptr) {
        result_.emplace(std::move(*result));
      }
    }
    after_end();
    if (callback && call_back) std::move(callback)(std::move(*result));
    return true;
  }

  Callback callback_;                            // guarded by mutex_
  std::optional<absl::StatusOr<Reply>> result_;  // guarded by mutex_
};

// Who runs a request: the worker that takes it from the queue, or the
// caller waiting for it on a thread of the bus (CallFuture::get()).
enum class CallRunner : std::uint8_t { kNobody, kQueue, kCaller };

// One call's request, shared by every copy of its CallRequest event (a
// retry, a throttled wait, a dead-letter store's copy). When the last copy
// goes, an unanswered call ends with CallCore::dropped_status().
template <typename Request, typename Reply>
struct PendingCall {
  PendingCall(Request the_request, std::shared_ptr<CallState<Reply>> the_state)
      : request(std::move(the_request)), state(std::move(the_state)) {}
  PendingCall(const PendingCall&) = delete;
  PendingCall& operator=(const PendingCall&) = delete;
  ~PendingCall() { state->complete(state->dropped_status()); }

  // Whether `who` may run the request: the first runner claims it; its
  // retries (copies made by the same runner) keep it.
  bool admit(CallRunner who) noexcept {
    CallRunner expected = CallRunner::kNobody;
    // acq_rel on success, acquire on failure: only the claim itself is
    // decided here (the request was published before either runner could
    // see it); the winner is whoever swaps kNobody first.
    if (runner.compare_exchange_strong(expected, who, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
      return true;
    }
    return expected == who;
  }

  const Request request;
  const std::shared_ptr<CallState<Reply>> state;
  // Who claimed the request: kNobody until the first runner's
  // compare-exchange in admit(), then fixed (see the orders there).
  std::atomic<CallRunner> runner{CallRunner::kNobody};
};

// The event a call publishes: a handle on its PendingCall. 16 bytes, so it
// travels in the queue slot without an allocation.
template <typename Request, typename Reply>
struct CallRequest {
  std::shared_ptr<PendingCall<Request, Reply>> pending;
  CallRunner runner = CallRunner::kQueue;
};

}  // namespace fnbus::detail
