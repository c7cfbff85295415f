#pragma once

// The shared record behind PublishOptions::on_settled: one per event
// published with it, counting the calls and queued calls that still have
// the event, and what they ended in. Each owner of a reference (the
// event's envelope, each queued retry or slot wait) releases it once; the
// last release calls the callback and frees the record.

#include <atomic>
#include <cstdint>
#include <utility>

#include "fnbus/dead_letter_reason.hpp"
#include "fnbus/settlement.hpp"

namespace fnbus::detail {

class SettleState {
 public:
  // Null if memory runs out (publish() then refuses the event).
  [[nodiscard]] static SettleState* Create(SettleCallback callback) noexcept;

  void retain() noexcept {
    // relaxed: a new reference is taken from an existing one, so the
    // count cannot reach 0 meanwhile (the usual shared_ptr argument).
    references_.fetch_add(1, std::memory_order_relaxed);
  }
  // The last release settles: calls the callback and deletes this.
  void release() noexcept {
    // acq_rel: each release publishes its marks below; the last one
    // acquires them all before reading them in settle().
    if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) settle();
  }
  // Frees a record that never reached an envelope (a refused publish),
  // without calling back.
  void discard() noexcept;

  // The marks: relaxed, ordered before the reader by release() above.
  void mark_failed() noexcept { bump(failed_); }
  void mark_unhandled() noexcept { unhandled_.store(true, kRelaxed); }
  void mark_dead_letter(DeadLetterReason reason) noexcept;

 private:
  static constexpr std::memory_order kRelaxed = std::memory_order_relaxed;
  explicit SettleState(SettleCallback callback) noexcept
      : callback_(std::move(callback)) {}
  static void bump(std::atomic<std::uint32_t>& count) noexcept {
    count.fetch_add(1, kRelaxed);
  }
  void settle() noexcept;

  SettleCallback callback_;
  // The owners: the envelope until it is dispatched (or dead-lettered),
  // plus one per queued call of a function (RetryState::settle).
  std::atomic<std::uint32_t> references_{1};
  std::atomic<std::uint32_t> failed_{0};
  std::atomic<std::uint32_t> dead_lettered_{0};
  std::atomic<std::uint32_t> abandoned_{0};
  std::atomic<bool> unhandled_{false};
};

// One counted reference to a SettleState, or none (null): what a queued
// call of a function keeps. A copy is one more reference.
class SettleRef {
 public:
  SettleRef() noexcept = default;
  // A new reference (retains `state` unless null).
  explicit SettleRef(SettleState* state) noexcept : state_(state) {
    if (state_ != nullptr) state_->retain();
  }
  SettleRef(SettleRef&& other) noexcept
      : state_(std::exchange(other.state_, nullptr)) {}
  SettleRef& operator=(SettleRef&& other) noexcept {
    if (this != &other) {
      reset();
      state_ = std::exchange(other.state_, nullptr);
    }
    return *this;
  }
  SettleRef(const SettleRef& other) noexcept : SettleRef(other.state_) {}
  SettleRef& operator=(const SettleRef& other) noexcept {
    if (this != &other) *this = SettleRef(other.state_);
    return *this;
  }
  ~SettleRef() { reset(); }

  [[nodiscard]] SettleState* get() const noexcept { return state_; }
  void reset() noexcept {
    if (state_ != nullptr) std::exchange(state_, nullptr)->release();
  }

 private:
  SettleState* state_ = nullptr;
};

}  // namespace fnbus::detail
