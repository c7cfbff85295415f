#include "fnbus/detail/call_state.hpp"

#include <string>
#include <utility>

#include "absl/time/time.h"
#include "fmt/format.h"

namespace fnbus::detail {

CallCore::~CallCore() {
  if (deadlines_ != nullptr) deadlines_->unwatch(*this);
}

bool CallCore::wait_for(std::chrono::nanoseconds timeout) const {
  std::unique_lock lock(mutex_);
  return done_cv_.wait_for(lock, timeout, [&] { return done_; });
}

void CallCore::watch(std::shared_ptr<CallDeadlines> deadlines, TimePoint now,
                     Duration timeout, timers::BusTimers& timers) {
  deadlines_ = std::move(deadlines);
  timeout_ = timeout;
  deadlines_->watch(*this, now, timeout, timers);
}

void CallCore::record_failure(absl::Status error) {
  std::lock_guard lock(mutex_);
  last_error_ = std::move(error);
  ++failures_;
}

absl::Status CallCore::dropped_status() const {
  std::lock_guard lock(mutex_);
  if (!last_error_.ok()) {
    return absl::Status(
        last_error_.code(),
        fmt::format("the serving function failed ({} call{}; no reply): {}",
                    failures_, failures_ == 1 ? "" : "s",
                    std::string(last_error_.message())));
  }
  return absl::UnavailableError(
      "no reply: the request was not handled -- filtered out by the serving "
      "function's condition, refused by its open circuit breaker, or "
      "dead-lettered (e.g. at shutdown); see the dead-letter sink");
}

absl::Status CallCore::timeout_status() const {
  std::lock_guard lock(mutex_);
  std::string message =
      fmt::format("no reply within the call's timeout ({})",
                  absl::FormatDuration(absl::FromChrono(timeout_)));
  if (!last_error_.ok()) {
    message += fmt::format("; last failure ({} so far): {}", failures_,
                           last_error_.ToString());
  }
  return absl::DeadlineExceededError(message);
}

bool CallCore::end_locked() {
  if (done_) return false;
  done_ = true;
  return true;
}

void CallCore::after_end() {
  // The call stays in its deadline slice until it is destroyed (or the
  // slice comes due and finds it ended): the slice is written by the
  // calling thread only, not by the worker that ends the call -- one
  // cache line less to hand between them per call.
  // Set after mutex_ is released: a caller polling ready() that sees it
  // then takes mutex_ without finding it held (a contended lock would put
  // it to sleep: microseconds per call). release: pairs with the acquire
  // in done(); the result was stored before.
  ended_.store(true, std::memory_order_release);
  done_cv_.notify_all();
}

}  // namespace fnbus::detail
