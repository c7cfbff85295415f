#pragma once

// A function's concurrency limit (FunctionOptions::max_concurrency, like
// AWS Lambda's reserved concurrency): at most `limit` calls hold a slot at
// once; the calls that find every slot taken wait, in arrival order, as
// values of `Waiting` (the bus keeps a copy of the event), and each slot
// given back goes to the oldest of them.
//
//   ConcurrencyLimit<Job> limit(4);
//   if (limit.try_enter()) {
//     run(job);
//     if (std::optional<Job> next = limit.leave()) start(std::move(*next));
//   } else if (std::optional<Job> now = limit.wait(std::move(job))) {
//     start(std::move(*now));  // a slot came free meanwhile: it is ours
//   }
//
// A slot is handed over, not freed, while anything waits: leave() gives it
// to the oldest waiting value, which then holds it (the caller must start
// it, or pass the slot on with leave() again). So a newcomer never
// overtakes a waiting value, and a waiting value is never stranded: while
// one waits, every slot is held by a call that will leave().
//
// Thread safety: every method may be called from any thread (one mutex;
// this is not the path of functions without a limit).

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>

#include "fnbus/detail/config.hpp"

namespace fnbus::resilience {

template <typename Waiting>
class ConcurrencyLimit {
 public:
  // Precondition: limit > 0 (FunctionOptions::max_concurrency is checked
  // at subscribe()).
  explicit ConcurrencyLimit(int limit) : limit_(limit) {
    FNBUS_ASSERT(limit > 0, "a concurrency limit is at least 1");
  }
  ConcurrencyLimit(const ConcurrencyLimit&) = delete;
  ConcurrencyLimit& operator=(const ConcurrencyLimit&) = delete;

  // Takes a slot if one is free and nothing waits for one.
  [[nodiscard]] bool try_enter() {
    std::lock_guard lock(mutex_);
    if (held_ == limit_) return false;  // then something may wait: no jump
    ++held_;
    return true;
  }

  // After try_enter() failed: keeps `waiting` until a slot is handed to
  // it (nullopt), or -- when a slot came free since -- takes that slot
  // and gives `waiting` back to be run now. May throw std::bad_alloc
  // (then nothing is kept or taken).
  [[nodiscard]] std::optional<Waiting> wait(Waiting waiting) {
    std::lock_guard lock(mutex_);
    if (held_ < limit_) {
      ++held_;
      return std::optional<Waiting>(std::move(waiting));
    }
    waiting_.push_back(std::move(waiting));
    return std::nullopt;
  }

  // Gives a slot back: hands it to the oldest waiting value, which is
  // returned (it holds the slot now), or frees it (nullopt).
  [[nodiscard]] std::optional<Waiting> leave() {
    std::lock_guard lock(mutex_);
    FNBUS_ASSERT(held_ > 0, "leave() without a slot held");
    if (waiting_.empty()) {
      --held_;
      return std::nullopt;
    }
    std::optional<Waiting> next(std::move(waiting_.front()));
    waiting_.pop_front();
    return next;
  }

  [[nodiscard]] int limit() const noexcept { return limit_; }
  // Slots held now (running calls, and values handed a slot not yet run).
  [[nodiscard]] int held() const {
    std::lock_guard lock(mutex_);
    return held_;
  }
  // Values waiting for a slot now.
  [[nodiscard]] std::size_t waiting() const {
    std::lock_guard lock(mutex_);
    return waiting_.size();
  }

 private:
  const int limit_;
  mutable std::mutex mutex_;
  // Invariant (under mutex_): 0 <= held_ <= limit_, and waiting_ is empty
  // unless held_ == limit_.
  int held_ = 0;
  std::deque<Waiting> waiting_;
};

}  // namespace fnbus::resilience
