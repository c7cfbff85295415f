// Tests of the lab's load traces (scaling/lab/traces.hpp).

#include "fnbus/scaling/lab/traces.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include <catch2/catch.hpp>

namespace {

using fnbus::scaling::lab::Random;
using fnbus::scaling::lab::Trace;

constexpr std::int64_t kSecond = 1'000'000'000;

const Trace& find(const std::vector<Trace>& traces, const std::string& name) {
  const auto it = std::find_if(traces.begin(), traces.end(),
                               [&](const Trace& t) { return t.name == name; });
  REQUIRE(it != traces.end());
  return *it;
}

TEST_CASE("lab_traces: rates follow their definitions", "[lab_traces]") {
  auto traces = fnbus::scaling::lab::standard_traces(1'000);
  REQUIRE(traces.ok());
  CHECK(traces->size() == 6);
  const Trace& step = find(*traces, "step");
  CHECK(step.rate(5 * kSecond) == Approx(200));
  CHECK(step.rate(15 * kSecond) == Approx(800));
  const Trace& ramp = find(*traces, "ramp");
  CHECK(ramp.rate(30 * kSecond) == Approx(450));
  const Trace& flash = find(*traces, "flash_sale");
  CHECK(flash.rate(5 * kSecond) == Approx(50));
  CHECK(flash.rate(11 * kSecond) == Approx(1'000));  // up within 1 s
  CHECK(flash.rate(30 * kSecond) == Approx(1'000));  // plateau
  CHECK(flash.rate(41 * kSecond) ==
        Approx(50 + 950 * std::exp(-1.0)));  // tau 10 s
  const Trace& on_off = find(*traces, "on_off");
  CHECK(on_off.rate(10 * kSecond) == Approx(20));
  CHECK(on_off.rate(32 * kSecond) == Approx(900));
  const Trace& slowdown = find(*traces, "slowdown");
  CHECK(slowdown.service_multiplier(10 * kSecond) == 1.0);
  CHECK(slowdown.service_multiplier(30 * kSecond) == 3.0);
  for (const Trace& trace : *traces) {
    INFO(trace.name);
    for (std::int64_t t = 0; t < trace.duration_ns; t += kSecond / 2) {
      CHECK(trace.rate(t) <= trace.max_rate * (1 + 1e-12));
      CHECK(trace.rate(t) >= 0);
    }
  }
}

TEST_CASE("lab_traces: bursts are where the load is at its burst level",
          "[lab_traces]") {
  auto traces = fnbus::scaling::lab::standard_traces(1'000);
  REQUIRE(traces.ok());
  // The load a trace puts on the pool: rate x service time.
  const auto work = [](const Trace& trace, std::int64_t t) {
    return trace.rate(t) * trace.service_multiplier(t);
  };
  for (const Trace& trace : *traces) {
    INFO(trace.name);
    CHECK(trace.bursts.empty() == (trace.name == "ramp"));
    std::int64_t previous_end = 0;
    for (const auto& burst : trace.bursts) {
      CHECK(burst.start_ns >= previous_end);
      CHECK(burst.end_ns > burst.start_ns);
      CHECK(burst.end_ns <= trace.duration_ns);
      previous_end = burst.end_ns;
      const double level = work(trace, burst.start_ns);
      // Level throughout (up to rounding), and more than just before.
      for (std::int64_t t = burst.start_ns; t < burst.end_ns;
           t += kSecond / 10) {
        CHECK(work(trace, t) == Approx(level));
      }
      CHECK(work(trace, burst.end_ns - 1) == Approx(level));
      CHECK(work(trace, burst.start_ns - kSecond / 10) < level);
    }
  }
  const Trace& flash = find(*traces, "flash_sale");
  REQUIRE(flash.bursts.size() == 1);
  CHECK(flash.bursts[0].start_ns == 11 * kSecond);  // after the 1 s rise
  CHECK(find(*traces, "diurnal").bursts.size() == 4);
  CHECK(find(*traces, "on_off").bursts.size() == 3);
}

TEST_CASE("lab_traces: thinning yields about the integral of the rate",
          "[lab_traces]") {
  auto traces = fnbus::scaling::lab::standard_traces(2'000);
  REQUIRE(traces.ok());
  for (const Trace& trace : *traces) {
    INFO(trace.name);
    double expected = 0;  // integral of rate(t) dt, 1 ms steps
    for (std::int64_t t = 0; t < trace.duration_ns; t += kSecond / 1000) {
      expected += trace.rate(t) / 1000;
    }
    Random random(2026);
    const auto arrivals = fnbus::scaling::lab::poisson_arrivals(trace, random);
    CHECK(std::is_sorted(arrivals.begin(), arrivals.end()));
    CHECK(static_cast<double>(arrivals.size()) ==
          Approx(expected).epsilon(0.03));
    CHECK((arrivals.empty() || arrivals.back() < trace.duration_ns));
  }
}

TEST_CASE("lab_traces: the same seed gives the same arrivals", "[lab_traces]") {
  auto traces = fnbus::scaling::lab::standard_traces(500);
  REQUIRE(traces.ok());
  Random a(5);
  Random b(5);
  Random c(6);
  const Trace& flash = find(*traces, "flash_sale");
  const auto first = fnbus::scaling::lab::poisson_arrivals(flash, a);
  CHECK(first == fnbus::scaling::lab::poisson_arrivals(flash, b));
  CHECK(first != fnbus::scaling::lab::poisson_arrivals(flash, c));
}

TEST_CASE("lab_traces: a capacity that is no rate is InvalidArgument",
          "[lab_traces]") {
  for (const double bad : {0.0, -5.0, std::nan("")}) {
    auto traces = fnbus::scaling::lab::standard_traces(bad);
    REQUIRE_FALSE(traces.ok());
    CHECK(std::string(traces.status().message()).find("capacity") !=
          std::string::npos);
  }
}

}  // namespace
