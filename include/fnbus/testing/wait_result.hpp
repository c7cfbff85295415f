#pragma once

// The outcome of a recorder's wait_for(): a bool that explains itself.

#include <cstddef>
#include <ostream>
#include <string>
#include <utility>

namespace fnbus::testing {

// What EventRecorder::wait_for() and the sink recorders' wait_for() return.
// Contextually convertible to bool (true: enough records arrived in time)
// and streamable, so that a test framework that prints the expression of a
// failed assertion prints why:
//
//   REQUIRE(recorder.wait_for(3, 1s));
//   // Catch2 v2 on failure:
//   //   REQUIRE( recorder.wait_for(3, 1s) )
//   // with expansion:
//   //   expected 3 shop.OrderCreated events within 1000ms, recorded 2:
//   //   [OrderCreated{id=1}, OrderCreated{id=2}]
//
// Keep the call inside the assertion: `REQUIRE(recorder.wait_for(...))`.
// Negating it (`REQUIRE(!recorder.wait_for(...))`) or storing a bool first
// loses the message; `REQUIRE_FALSE(recorder.wait_for(...))` keeps it.
// GoogleTest: `ASSERT_TRUE(r) << r;` where `auto r = recorder.wait_for(...)`.
//
// Thread safety: a plain value; const members from any thread.
class [[nodiscard]] WaitResult {
 public:
  WaitResult(bool reached, std::size_t expected, std::size_t recorded,
             std::string message)
      : reached_(reached),
        expected_(expected),
        recorded_(recorded),
        message_(std::move(message)) {}

  // Whether at least expected() records were there before the timeout.
  [[nodiscard]] bool reached() const noexcept { return reached_; }
  explicit operator bool() const noexcept { return reached_; }

  // The count waited for, and the count recorded when the wait ended.
  [[nodiscard]] std::size_t expected() const noexcept { return expected_; }
  [[nodiscard]] std::size_t recorded() const noexcept { return recorded_; }

  // E.g. "expected 3 shop.OrderCreated events within 1000ms, recorded 2:
  // [...]"; the records are listed when their type can be printed.
  [[nodiscard]] const std::string& message() const noexcept { return message_; }

  friend std::ostream& operator<<(std::ostream& out, const WaitResult& result) {
    return out << result.message_;
  }

 private:
  bool reached_;
  std::size_t expected_;
  std::size_t recorded_;
  std::string message_;
};

}  // namespace fnbus::testing
