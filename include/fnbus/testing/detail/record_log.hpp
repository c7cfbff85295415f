#pragma once

// Internals of the testing kit (namespace fnbus::testing::detail): the
// mutex-guarded log every recorder keeps, and how records are printed in
// wait_for() messages. Not API.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#if __has_include(<fmt/core.h>)
#include "fmt/core.h"
#endif

#include "fnbus/testing/wait_result.hpp"

namespace fnbus::testing::detail {

// T has an operator<< (found by ordinary lookup or ADL).
template <typename T>
concept Streamable = requires(std::ostream& out, const T& value) {
  out << value;
};

// T has an fmt::formatter. Only when fmt's headers are on the include
// path; formatting then needs the test to link fmt (a test that wrote a
// formatter does).
#if __has_include(<fmt/core.h>)
template <typename T>
concept FmtFormattable = fmt::is_formattable<T>::value;
#else
template <typename T>
concept FmtFormattable = false;
#endif

template <typename T>
concept Printable = Streamable<T> || FmtFormattable<T>;

// `value` as text: through operator<< if it has one, otherwise fmt.
template <Printable T>
std::string to_text(const T& value) {
  if constexpr (Streamable<T>) {
    std::ostringstream out;
    out << value;
    return std::move(out).str();
  }
#if __has_include(<fmt/core.h>)
  else {
    return fmt::format("{}", value);
  }
#endif
}

// At most this many records are listed in a wait_for() message.
inline constexpr std::size_t kMaxListed = 20;

// "expected 3 shop.OrderCreated events within 1000ms, recorded 2: [a, b]".
// `items` holds the text of the first (at most kMaxListed) records, or
// nothing when the records cannot be printed.
inline std::string wait_message(bool reached, std::size_t expected,
                                std::size_t recorded, std::string_view noun,
                                std::chrono::milliseconds timeout,
                                const std::vector<std::string>& items) {
  std::string text;
  text += reached ? "recorded " : "expected ";
  text += std::to_string(reached ? recorded : expected);
  text += ' ';
  text += noun;
  if ((reached ? recorded : expected) != 1) text += 's';
  if (reached) {
    text += " (expected ";
    text += std::to_string(expected);
    text += " within ";
    text += std::to_string(timeout.count());
    text += "ms)";
  } else {
    text += " within ";
    text += std::to_string(timeout.count());
    text += "ms, recorded ";
    text += std::to_string(recorded);
  }
  if (!items.empty()) {
    text += ": [";
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (i != 0) text += ", ";
      text += items[i];
    }
    if (recorded > items.size()) {
      text += ", ... ";
      text += std::to_string(recorded - items.size());
      text += " more";
    }
    text += ']';
  }
  return text;
}

// An append-only (until clear()) log of records, written by sinks and
// handlers on any thread and read by the test.
//
// Thread safety: every method, from any thread. T's copy and move
// constructors run under the log's mutex and must not call back into it;
// printing (operator<<, fmt) runs outside it.
template <typename T>
class RecordLog {
 public:
  void push(T record) {
    {
      std::lock_guard lock(mutex_);
      records_.push_back(std::move(record));
    }
    grown_.notify_all();
  }

  [[nodiscard]] std::size_t size() const {
    std::lock_guard lock(mutex_);
    return records_.size();
  }
  [[nodiscard]] bool empty() const { return size() == 0; }

  [[nodiscard]] std::vector<T> snapshot() const {
    std::lock_guard lock(mutex_);
    return records_;
  }

  // A copy of record i; std::out_of_range naming `owner` if there is none.
  [[nodiscard]] T at(std::size_t i, std::string_view owner) const {
    std::lock_guard lock(mutex_);
    if (i >= records_.size()) {
      throw std::out_of_range(std::string(owner) + "::at(" + std::to_string(i) +
                              "): only " + std::to_string(records_.size()) +
                              " recorded");
    }
    return records_[i];
  }
  [[nodiscard]] T last(std::string_view owner) const {
    std::lock_guard lock(mutex_);
    if (records_.empty()) {
      throw std::out_of_range(std::string(owner) +
                              "::last(): nothing recorded");
    }
    return records_.back();
  }

  void clear() {
    std::lock_guard lock(mutex_);
    records_.clear();
  }

  // Waits until at least `count` records are there or `timeout` of real
  // time passes. `print(record)` gives a record's text for the message, or
  // `print` is nullptr when records cannot be printed.
  template <typename Print>
  WaitResult wait_for(std::size_t count, std::chrono::milliseconds timeout,
                      std::string_view noun, Print print) const {
    constexpr bool kPrintable = !std::is_null_pointer_v<Print>;
    std::vector<T> listed;  // the first kMaxListed records, to print
    std::size_t recorded = 0;
    bool reached = false;
    {
      std::unique_lock lock(mutex_);
      reached = grown_.wait_for(lock, timeout,
                                [&] { return records_.size() >= count; });
      recorded = records_.size();
      if constexpr (kPrintable) {
        const std::size_t n = recorded < kMaxListed ? recorded : kMaxListed;
        listed.assign(records_.begin(), records_.begin() + n);
      }
    }
    std::vector<std::string> items;
    if constexpr (kPrintable) {
      items.reserve(listed.size());
      for (const T& record : listed) items.push_back(print(record));
    }
    std::string message =
        wait_message(reached, count, recorded, noun, timeout, items);
    return WaitResult(reached, count, recorded, std::move(message));
  }

 private:
  mutable std::mutex mutex_;
  // Notified after each push(), for wait_for().
  mutable std::condition_variable grown_;
  std::vector<T> records_;
};

}  // namespace fnbus::testing::detail
