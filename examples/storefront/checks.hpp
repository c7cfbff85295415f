#pragma once

// Checks: what a part of the example must add up to, whatever the
// interleaving of the workers. A failed check prints what it expected to
// stderr; main() exits with 1 if any part failed one (ctest
// example.storefront relies on the exit code).

#include <cstdio>
#include <string_view>

#include "fmt/core.h"

namespace shop {

class Checks {
 public:
  explicit Checks(std::string_view part) : part_(part) {}

  // Records `condition`; when false, prints "CHECK FAILED (<part>): <what>".
  void operator()(bool condition, std::string_view what) {
    if (condition) return;
    fmt::print(stderr, "CHECK FAILED ({}): {}\n", part_, what);
    ++failed_;
  }

  // Prints the part's verdict; true if every check passed.
  [[nodiscard]] bool report() const {
    if (failed_ == 0) {
      fmt::print("{}: all checks passed\n", part_);
    } else {
      fmt::print("{}: {} CHECK(S) FAILED\n", part_, failed_);
    }
    return failed_ == 0;
  }

 private:
  std::string_view part_;
  int failed_ = 0;
};

}  // namespace shop
