#pragma once

// Recorders to plug into BusConfig's sinks: ErrorRecorder (error_sink),
// DeadLetterRecorder (dead_letter_sink) and UnhandledRecorder
// (unhandled_sink). They keep owned copies of what the bus reports, so a
// test can assert on it after the sink call returned.

#include <any>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"

#include "fnbus/event.hpp"
#include "fnbus/options.hpp"
#include "fnbus/testing/detail/record_log.hpp"
#include "fnbus/testing/wait_result.hpp"

namespace fnbus::testing {

// A HandlerError with owned strings.
struct RecordedError {
  std::string function_name;  // FunctionOptions::name of the handler
  std::string event_type;     // event_type_name<E>()
  absl::StatusCode code = absl::StatusCode::kUnknown;  // kUnknown: a throw
  std::string message;  // the Status's message, or what() of the throw
  EventTrace trace;     // the failed event's trace ids

  // The failure as a Status: code() and message().
  [[nodiscard]] absl::Status status() const {
    return absl::Status(code, message);
  }

  // "request_payment on shop.OrderCreated: INVALID_ARGUMENT: no items"
  friend std::ostream& operator<<(std::ostream& out,
                                  const RecordedError& error) {
    return out << error.function_name << " on " << error.event_type << ": "
               << absl::StatusCodeToString(error.code) << ": " << error.message;
  }
};

// A DeadLetter with an owned type name, and a copy of the event if its type
// was registered with DeadLetterRecorder::keep<E>().
struct RecordedDeadLetter {
  std::string event_type;  // event_type_name<E>()
  DeadLetterReason reason = DeadLetterReason::kCancelledAtShutdown;
  EventTrace trace;
  std::any event;              // an E if keep<E>() was called, otherwise empty
  std::string function;        // DeadLetter::function
  std::uint32_t attempts = 0;  // DeadLetter::attempts
  absl::Status last_error = {};  // DeadLetter::last_error

  // The kept copy of the event if it is an E, otherwise nullptr.
  template <Event E>
  [[nodiscard]] const E* get() const noexcept {
    return std::any_cast<E>(&event);
  }

  // "shop.OrderCreated (cancelled_at_shutdown)"
  friend std::ostream& operator<<(std::ostream& out,
                                  const RecordedDeadLetter& letter) {
    return out << letter.event_type << " (" << to_string(letter.reason) << ')';
  }
};

// An event that had no subscriber, with an owned type name and a copy of
// the event if its type was registered with UnhandledRecorder::keep<E>().
struct RecordedUnhandled {
  std::string event_type;  // event_type_name<E>()
  std::any event;          // an E if keep<E>() was called, otherwise empty

  template <Event E>
  [[nodiscard]] const E* get() const noexcept {
    return std::any_cast<E>(&event);
  }

  friend std::ostream& operator<<(std::ostream& out,
                                  const RecordedUnhandled& unhandled) {
    return out << unhandled.event_type;
  }
};

namespace detail {

// Copies of events of the types registered with keep<E>(), as std::any.
class KeptTypes {
 public:
  template <Event E>
  void add() {
    static_assert(std::is_copy_constructible_v<E>,
                  "keep<E>() stores copies of the events: E must be "
                  "copy-constructible");
    std::lock_guard lock(mutex_);
    copiers_.push_back([](const EventRef& ref) -> std::any {
      if (const E* event = ref.get<E>()) return std::any(*event);
      return {};
    });
  }

  // A copy of `ref`'s event if its type was added, otherwise empty.
  [[nodiscard]] std::any copy(const EventRef& ref) const {
    std::lock_guard lock(mutex_);
    for (const auto& copier : copiers_) {
      std::any kept = copier(ref);
      if (kept.has_value()) return kept;
    }
    return {};
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::function<std::any(const EventRef&)>> copiers_;
};

// What the sink recorders share: a log of R reached from both the recorder
// and the sink functions it hands out (shared ownership, so a sink stays
// valid when the recorder is destroyed before the bus).
template <typename R>
struct SinkState {
  RecordLog<R> log;
  KeptTypes kept;
};

// The read side common to the sink recorders.
template <typename R>
class SinkRecorderBase {
 public:
  // Records so far (since the last clear()).
  [[nodiscard]] std::size_t size() const { return state_->log.size(); }
  [[nodiscard]] bool empty() const { return state_->log.empty(); }
  // Copies of the records, oldest first.
  [[nodiscard]] std::vector<R> records() const {
    return state_->log.snapshot();
  }
  // A copy of the i-th (0-based) or the latest record; std::out_of_range
  // if there is none.
  [[nodiscard]] R at(std::size_t i) const { return state_->log.at(i, owner_); }
  [[nodiscard]] R last() const { return state_->log.last(owner_); }
  // Forgets the records; recording goes on.
  void clear() { state_->log.clear(); }
  // Blocks until at least `count` records are there or `timeout` of real
  // time passes; the result converts to bool and prints the records, e.g.
  // "expected 2 handler errors within 1000ms, recorded 1: [...]". Use it
  // inside the assertion: `REQUIRE(errors.wait_for(2, 1s));`.
  [[nodiscard]] WaitResult wait_for(
      std::size_t count,
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) const {
    return state_->log.wait_for(
        count, timeout, noun_, [](const R& record) { return to_text(record); });
  }

 protected:
  SinkRecorderBase(std::string_view owner, std::string_view noun)
      : state_(std::make_shared<SinkState<R>>()), owner_(owner), noun_(noun) {}

  std::shared_ptr<SinkState<R>> state_;

 private:
  std::string_view owner_;  // class name, for out_of_range messages
  std::string_view noun_;   // for wait_for() messages
};

}  // namespace detail

// Records every handler failure the bus reports.
//
//   fnbus::testing::ErrorRecorder errors;
//   fnbus::BusConfig config;
//   config.error_sink = errors.sink();
//   ...
//   REQUIRE(errors.size() == 1);
//   CHECK(errors.last().code == absl::StatusCode::kInvalidArgument);
//
// Thread safety: every method from any thread; the sink may run on
// several workers at once. Copies of an ErrorRecorder share one recording,
// and sink() keeps it alive, so the recorder may be destroyed before the
// bus.
class ErrorRecorder : public detail::SinkRecorderBase<RecordedError> {
 public:
  ErrorRecorder() : SinkRecorderBase("ErrorRecorder", "handler error") {}

  // The function to assign to BusConfig::error_sink.
  [[nodiscard]] std::function<void(const HandlerError&)> sink() const {
    return [state = state_](const HandlerError& error) {
      state->log.push(RecordedError{
          .function_name = std::string(error.function_name),
          .event_type = std::string(error.event_type),
          .code = error.code,
          .message = std::string(error.message),
          .trace = error.trace,
      });
    };
  }
};

// Records every event the bus hands to the dead-letter sink.
//
//   fnbus::testing::DeadLetterRecorder dead;
//   dead.keep<OrderCreated>();  // also copy OrderCreated events
//   config.dead_letter_sink = dead.sink();
//   ...
//   REQUIRE(dead.size() == 1);
//   CHECK(dead.last().get<OrderCreated>()->order_id == 7);
//
// Thread safety and lifetime: as ErrorRecorder.
class DeadLetterRecorder : public detail::SinkRecorderBase<RecordedDeadLetter> {
 public:
  DeadLetterRecorder()
      : SinkRecorderBase("DeadLetterRecorder", "dead letter") {}

  // Keeps a copy of each dead-lettered E (RecordedDeadLetter::get<E>()).
  // Call it before the events arrive. Thread safety: any thread.
  template <Event E>
  DeadLetterRecorder& keep() {
    state_->kept.add<E>();
    return *this;
  }

  // The function to assign to BusConfig::dead_letter_sink.
  [[nodiscard]] std::function<void(const DeadLetter&)> sink() const {
    return [state = state_](const DeadLetter& letter) {
      state->log.push(RecordedDeadLetter{
          .event_type = std::string(letter.event.type_name()),
          .reason = letter.reason,
          .trace = letter.trace,
          .event = state->kept.copy(letter.event),
          .function = std::string(letter.function),
          .attempts = letter.attempts,
          .last_error = letter.last_error,
      });
    };
  }
};

// Records every event that had no subscriber when it was dispatched.
//
//   fnbus::testing::UnhandledRecorder unhandled;
//   config.unhandled_sink = unhandled.sink();
//   ...
//   CHECK(unhandled.empty());  // every event found a handler
//
// Thread safety and lifetime: as ErrorRecorder.
class UnhandledRecorder : public detail::SinkRecorderBase<RecordedUnhandled> {
 public:
  UnhandledRecorder()
      : SinkRecorderBase("UnhandledRecorder", "unhandled event") {}

  // Keeps a copy of each unhandled E (RecordedUnhandled::get<E>()). Call
  // it before the events arrive. Thread safety: any thread.
  template <Event E>
  UnhandledRecorder& keep() {
    state_->kept.add<E>();
    return *this;
  }

  // The function to assign to BusConfig::unhandled_sink.
  [[nodiscard]] std::function<void(const EventRef&)> sink() const {
    return [state = state_](const EventRef& event) {
      state->log.push(RecordedUnhandled{
          .event_type = std::string(event.type_name()),
          .event = state->kept.copy(event),
      });
    };
  }
};

}  // namespace fnbus::testing
