#pragma once

// The message of the exception being handled, for error statuses built in
// a catch (...) block.

#include <exception>
#include <string>

namespace fnbus::detail {

// Precondition: called inside a catch block.
inline std::string current_exception_message() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

}  // namespace fnbus::detail
