#include "fnbus/scaling/lab/traces.hpp"

#include <cmath>
#include <numbers>

#include "fmt/format.h"

namespace fnbus::scaling::lab {
namespace {

constexpr std::int64_t kSecond = 1'000'000'000;

double seconds(std::int64_t t_ns) { return static_cast<double>(t_ns) / 1e9; }

Trace step(double c) {
  Trace trace{"step", 40 * kSecond, 0.8 * c, [c](std::int64_t t) {
                return seconds(t) < 10 ? 0.2 * c : 0.8 * c;
              }};
  trace.bursts = {{10 * kSecond, 40 * kSecond}};
  return trace;
}

Trace ramp(double c) {
  return {"ramp", 60 * kSecond, 0.9 * c, [c](std::int64_t t) {
            return 0.9 * c * std::min(1.0, seconds(t) / 60.0);
          }};
}

Trace flash_sale(double c) {
  Trace trace{"flash_sale", 80 * kSecond, c, [c](std::int64_t t) {
                const double s = seconds(t);
                const double base = 0.05 * c;
                if (s < 10) return base;
                if (s < 11) return base + (c - base) * (s - 10);  // within 1 s
                if (s < 31) return c;                             // plateau
                return base + (c - base) * std::exp(-(s - 31) / 10.0);
              }};
  trace.bursts = {{11 * kSecond, 31 * kSecond}};  // the plateau
  return trace;
}

Trace diurnal(double c) {
  Trace trace{"diurnal", 120 * kSecond, 0.9 * c, [c](std::int64_t t) {
                const double s = seconds(t);
                // Night 0.1C, day 0.6C: a raised cosine over the 120 s "day".
                const double day =
                    0.5 - 0.5 * std::cos(2 * std::numbers::pi * s / 120.0);
                const double level = 0.1 * c + 0.5 * c * day;
                // 5 s bursts every 30 s.
                const bool burst = std::fmod(s, 30.0) >= 25.0;
                return burst ? 0.9 * c : level;
              }};
  for (std::int64_t start = 25; start < 120; start += 30) {
    trace.bursts.push_back({start * kSecond, (start + 5) * kSecond});
  }
  return trace;
}

Trace on_off(double c) {
  Trace trace{"on_off", 105 * kSecond, 0.9 * c, [c](std::int64_t t) {
                const double phase = std::fmod(seconds(t), 35.0);
                return phase < 30.0 ? 0.02 * c : 0.9 * c;
              }};
  for (std::int64_t start = 30; start < 105; start += 35) {
    trace.bursts.push_back({start * kSecond, (start + 5) * kSecond});
  }
  return trace;
}

Trace slowdown(double c) {
  Trace trace{"slowdown", 60 * kSecond, 0.4 * c,
              [c](std::int64_t) { return 0.4 * c; }};
  trace.service_multiplier = [](std::int64_t t) {
    const double s = seconds(t);
    return s >= 20 && s < 40 ? 3.0 : 1.0;
  };
  trace.bursts = {{20 * kSecond, 40 * kSecond}};
  return trace;
}

}  // namespace

absl::StatusOr<std::vector<Trace>> standard_traces(double capacity) {
  if (!(std::isfinite(capacity) && capacity > 0)) {
    return absl::InvalidArgumentError(fmt::format(
        "capacity is {}; use the events per second the maximum pool can "
        "serve (> 0)",
        capacity));
  }
  return std::vector<Trace>{step(capacity),       ramp(capacity),
                            flash_sale(capacity), diurnal(capacity),
                            on_off(capacity),     slowdown(capacity)};
}

std::vector<std::int64_t> poisson_arrivals(const Trace& trace, Random& random) {
  std::vector<std::int64_t> arrivals;
  if (!(trace.max_rate > 0) || !trace.rate) return arrivals;
  const double mean_gap_ns = 1e9 / trace.max_rate;
  double t = 0;
  for (;;) {
    t += random.exponential(mean_gap_ns);
    if (t >= static_cast<double>(trace.duration_ns)) break;
    const auto at = static_cast<std::int64_t>(t);
    // Keep a candidate with probability rate(t) / max_rate.
    if (random.uniform01() * trace.max_rate < trace.rate(at)) {
      arrivals.push_back(at);
    }
  }
  return arrivals;
}

}  // namespace fnbus::scaling::lab
