#pragma once

// Load traces for the policy lab: arrival rate lambda(t) and a service-time
// multiplier over a run, scaled to a capacity C (events/s that the maximum
// pool can serve), and the arrivals they generate.
//
//   step        0.2C, then 0.8C from 10 s                         (40 s)
//   ramp        0 -> 0.9C linearly over 60 s                      (60 s)
//   flash_sale  0.05C; at 10 s up to C within 1 s, 20 s plateau,
//               then decay to 0.05C with tau 10 s                 (80 s)
//   diurnal     a day compressed to 2 minutes: 0.1C at night,
//               0.6C by day, 5 s bursts to 0.9C every 30 s        (120 s)
//   on_off      30 s at 0.02C, 5 s bursts at 0.9C                 (105 s)
//   slowdown    0.4C throughout; service time x3 from 20 s to 40 s (60 s)
//
// Each trace but ramp also lists its bursts: the intervals in which the
// load is at its burst level (for the flash sale, from the end of its 1 s
// rise to the end of the plateau), for scoring recovery.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "fnbus/scaling/lab/random.hpp"

namespace fnbus::scaling::lab {

// [start_ns, end_ns): the load is at a burst level.
struct BurstWindow {
  std::int64_t start_ns = 0;
  std::int64_t end_ns = 0;
};

struct Trace {
  std::string name;
  std::int64_t duration_ns = 0;
  double max_rate = 0;  // an upper bound of rate(t), for thinning
  std::function<double(std::int64_t t_ns)> rate;  // events/s at t
  // Service times of events starting at t are multiplied by this.
  std::function<double(std::int64_t t_ns)> service_multiplier =
      [](std::int64_t) { return 1.0; };
  std::vector<BurstWindow> bursts;  // ascending
};

// Every trace above for capacity `capacity` (> 0, events/s), in the order
// listed. InvalidArgument for a capacity that is not a positive number.
absl::StatusOr<std::vector<Trace>> standard_traces(double capacity);

// Arrival times (ns, ascending) of a non-homogeneous Poisson process with
// rate trace.rate(t), by thinning a process at trace.max_rate
// (Lewis-Shedler). Deterministic for a given generator state.
std::vector<std::int64_t> poisson_arrivals(const Trace& trace, Random& random);

}  // namespace fnbus::scaling::lab
