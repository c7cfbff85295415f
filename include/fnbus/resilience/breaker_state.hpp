#pragma once

// A circuit breaker's state, apart from the breaker (circuit_breaker.hpp),
// so that a metrics snapshot can name it without the breaker's machinery.

#include <string_view>

namespace fnbus::resilience {

// closed: calls pass; open: calls are refused; half-open: a few probe
// calls pass (see CircuitBreaker).
enum class BreakerState { kClosed, kOpen, kHalfOpen };

// "closed", "open" or "half_open".
[[nodiscard]] std::string_view to_string(BreakerState state) noexcept;

}  // namespace fnbus::resilience
