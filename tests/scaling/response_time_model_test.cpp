// Tests of the M/M/c response-time model (scaling/response_time_model.hpp)
// against textbook values, an independent direct computation (factorials
// in long double for small c, a backward sum of ratios for large c), the
// Pollaczek-Khinchine formula for M/G/1, and a brute-force staffing search.

#include "fnbus/scaling/response_time_model.hpp"

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace {

using fnbus::scaling::QueueParams;
using fnbus::scaling::ResponseTimeModel;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

ResponseTimeModel model(double lambda, double mu, double scv = 1.0) {
  auto made = ResponseTimeModel::Create({lambda, mu, scv});
  REQUIRE(made.ok());
  return *made;
}

// Erlang B from its closed form with factorials, in long double (fine for
// c up to ~100): an independent check of the recursion.
long double erlang_b_direct(int c, long double a) {
  long double sum = 0;
  long double term = 1;  // a^k / k!
  for (int k = 0; k <= c; ++k) {
    sum += term;
    if (k < c) term = term * a / (k + 1);
  }
  return term / sum;  // (a^c / c!) / sum_{k <= c} a^k / k!
}

// Erlang C from its closed form with factorials, in long double.
long double erlang_c_direct(int c, long double a) {
  long double sum = 0;
  long double term = 1;  // a^k / k!
  for (int k = 0; k < c; ++k) {
    sum += term;
    term = term * a / (k + 1);
  }
  // term is now a^c / c!
  const long double top = term * c / (c - a);
  return top / (sum + top);
}

// Erlang C for large c without factorials: with r_k = (a^k / k!) /
// (a^c / c!), C = top / (sum_{k < c} r_k + top), top = c / (c - a), and
// r_{k-1} = r_k k / a summed downwards from r_c = 1. The r_k stay near 1
// when c - a is O(sqrt(a)). A different route from the Erlang B recursion.
long double erlang_c_by_ratios(int c, long double a) {
  long double r = 1;
  long double sum = 0;
  for (int k = c; k >= 1; --k) {
    r = r * k / a;  // r_{k-1}
    sum += r;
  }
  const long double top = c / (c - a);
  return top / (sum + top);
}

// P(Wq > t) of M/M/c with Whitt's scaling, from the direct Erlang C.
double tail_direct(int c, double lambda, double mu, double scv, double t) {
  const double a = lambda / mu;
  if (!(a < c)) return 1.0;
  const double wait = static_cast<double>(erlang_c_direct(c, a));
  return wait * std::exp(-(c * mu - lambda) * t * 2.0 / (1.0 + scv));
}

}  // namespace

TEST_CASE("response_time_model: one worker is M/M/1", "[response_time_model]") {
  const ResponseTimeModel m1 = model(/*lambda=*/6, /*mu=*/10);
  CHECK(m1.offered_load() == Approx(0.6));
  CHECK(m1.utilisation(1) == Approx(0.6));
  CHECK(m1.stable(1));
  CHECK(m1.erlang_c(1) == Approx(0.6));              // P(wait) = rho
  CHECK(m1.mean_wait(1) == Approx(0.6 / (10 - 6)));  // rho / (mu - lambda)
  CHECK(m1.mean_response(1) == Approx(1.0 / (10 - 6)));
  CHECK(m1.wait_probability_above(1, 0.0) == Approx(0.6));
  CHECK(m1.wait_probability_above(1, 0.5) == Approx(0.6 * std::exp(-2.0)));
  // P(Wq > w) = 0.01 at w = ln(0.6 / 0.01) / 4.
  CHECK(m1.wait_quantile(1, 0.99) == Approx(std::log(60.0) / 4));
}

TEST_CASE("response_time_model: textbook Erlang B and C values",
          "[response_time_model]") {
  CHECK(model(1, 1).erlang_c(2) == Approx(1.0 / 3));
  CHECK(model(8, 1).erlang_c(10) == Approx(0.409180150796).epsilon(1e-11));
  CHECK(model(3, 1).erlang_b(5) == Approx(0.110054347826).epsilon(1e-11));
  CHECK(model(3, 1).erlang_b(0) == 1.0);  // B_0
  // c = 10, lambda = 8, mu = 1: E[Wq] = C / (c mu - lambda).
  const ResponseTimeModel m = model(8, 1);
  CHECK(m.mean_wait(10) ==
        Approx(static_cast<double>(erlang_c_direct(10, 8)) / 2.0));
  CHECK(m.mean_wait(10) == Approx(0.204590075398).epsilon(1e-11));
  CHECK(m.mean_response(10) == Approx(1.204590075398).epsilon(1e-11));
}

TEST_CASE("response_time_model: the recursion matches the factorial form",
          "[response_time_model]") {
  for (const int c : {1, 2, 5, 10, 20, 50, 100}) {
    for (const double rho : {0.05, 0.3, 0.8, 0.95, 0.999}) {
      const double a = rho * c;
      INFO("c = " << c << ", a = " << a);
      const ResponseTimeModel m = model(a, 1);
      const auto cs = static_cast<std::size_t>(c);
      CHECK(m.erlang_b(cs) ==
            Approx(static_cast<double>(erlang_b_direct(c, a))).epsilon(1e-10));
      CHECK(m.erlang_c(cs) ==
            Approx(static_cast<double>(erlang_c_direct(c, a))).epsilon(1e-10));
      // The ratio route agrees with the factorial route here too.
      CHECK(static_cast<double>(erlang_c_by_ratios(c, a)) ==
            Approx(static_cast<double>(erlang_c_direct(c, a))).epsilon(1e-10));
    }
  }
}

TEST_CASE("response_time_model: large pools stay finite and accurate",
          "[response_time_model]") {
  // c = 10 000, a = 9 900: a^c / c! alone would overflow any float type.
  const ResponseTimeModel m = model(9'900, 1);
  const double wait = m.erlang_c(10'000);
  CHECK(wait == Approx(0.222776928864148).epsilon(1e-9));
  CHECK(wait == Approx(static_cast<double>(erlang_c_by_ratios(10'000, 9'900)))
                    .epsilon(1e-9));
  CHECK(m.mean_wait(10'000) == Approx(0.222776928864148 / 100).epsilon(1e-9));
  const double b = m.erlang_b(10'000);
  CHECK(b > 0.0);
  CHECK(b < wait);  // B < C whenever 0 < a < c
  // c = 100 000, a = 99 000.
  const ResponseTimeModel big = model(99'000, 1);
  CHECK(big.erlang_c(100'000) == Approx(0.000821908237410795).epsilon(1e-8));
  CHECK(std::isfinite(big.mean_wait(100'000)));
  CHECK(big.wait_quantile(100'000, 0.5) == 0.0);  // C < 0.5: most never wait
}

TEST_CASE("response_time_model: more workers wait strictly less",
          "[response_time_model]") {
  const ResponseTimeModel m = model(40, 5);  // a = 8
  for (std::size_t c = 10; c < 40; ++c) {
    INFO("c = " << c);
    CHECK(m.erlang_c(c) < m.erlang_c(c - 1));
    CHECK(m.mean_wait(c) < m.mean_wait(c - 1));
    CHECK(m.mean_response(c) < m.mean_response(c - 1));
    CHECK(m.wait_probability_above(c, 0.05) <
          m.wait_probability_above(c - 1, 0.05));
    CHECK(m.wait_quantile(c, 0.999) <= m.wait_quantile(c - 1, 0.999));
    CHECK(m.mean_wait(c) > 0.0);
  }
  // And the tail falls with t.
  CHECK(m.wait_probability_above(10, 0.2) < m.wait_probability_above(10, 0.1));
}

TEST_CASE("response_time_model: an overloaded pool waits forever, never NaN",
          "[response_time_model]") {
  const ResponseTimeModel m = model(10, 1);  // a = 10
  for (const std::size_t c : {0u, 1u, 5u, 10u}) {
    INFO("c = " << c);
    CHECK_FALSE(m.stable(c));
    CHECK(m.utilisation(c) >= 1.0);
    CHECK(m.erlang_c(c) == 1.0);
    CHECK(m.mean_wait(c) == kInf);
    CHECK(m.mean_response(c) == kInf);
    CHECK(m.wait_probability_above(c, 1.0) == 1.0);
    CHECK(m.wait_probability_above(c, kInf) == 1.0);
    CHECK(m.wait_quantile(c, 0.99) == kInf);
    CHECK(m.wait_quantile(c, 0.0) == kInf);
    CHECK_FALSE(std::isnan(m.erlang_b(c)));
  }
  CHECK(m.erlang_b(10) == Approx(static_cast<double>(erlang_b_direct(10, 10))));
  CHECK(m.stable(11));
  CHECK(m.utilisation(0) == kInf);
  CHECK(model(0, 1).utilisation(0) == kInf);  // no workers never keep up
  CHECK_FALSE(model(0, 1).stable(0));

  // a = lambda / mu overflows: unstable for every c, still no NaN.
  const ResponseTimeModel huge = model(1e300, 1e-300);
  REQUIRE(huge.offered_load() == kInf);
  CHECK(huge.erlang_b(5) == 1.0);
  CHECK(huge.erlang_c(5) == 1.0);
  CHECK(huge.mean_wait(1'000'000) == kInf);
  CHECK(huge.wait_probability_above(5, 1.0) == 1.0);
  CHECK(huge.wait_quantile(5, 0.5) == kInf);
  auto never = huge.smallest_workers_for_wait_slo(1.0, 0.01, 64);
  REQUIRE(never.ok());
  CHECK(never->workers == 64);
  CHECK_FALSE(never->met);
  // A finite load far above max_workers returns at once.
  auto capped = model(1e25, 1).smallest_workers_for_wait_slo(1.0, 0.01, 64);
  REQUIRE(capped.ok());
  CHECK(capped->workers == 64);
  CHECK_FALSE(capped->met);
  // ... however many workers are allowed (no loop up to a = 1e25).
  const std::size_t unlimited = std::numeric_limits<std::size_t>::max();
  auto unbounded =
      model(1e25, 1).smallest_workers_for_wait_slo(1.0, 0.01, unlimited);
  REQUIRE(unbounded.ok());
  CHECK(unbounded->workers == unlimited);
  CHECK_FALSE(unbounded->met);
}

TEST_CASE("response_time_model: edge values of t, p and the rates",
          "[response_time_model]") {
  const ResponseTimeModel m = model(8, 1);  // C(10, 8) ~ 0.409
  const double wait = m.erlang_c(10);
  // t: every wait is >= 0 > t; NaN is answered conservatively.
  CHECK(m.wait_probability_above(10, -1.0) == 1.0);
  CHECK(m.wait_probability_above(10, kNaN) == 1.0);
  CHECK(m.wait_probability_above(10, 0.0) == wait);
  CHECK(m.wait_probability_above(10, kInf) == 0.0);
  // p: 1 - p >= C gives 0; p -> 1 grows without bound.
  CHECK(m.wait_quantile(10, 0.5) == 0.0);
  CHECK(m.wait_quantile(10, 1.0 - wait - 1e-12) == 0.0);
  CHECK(m.wait_quantile(10, 0.6) > 0.0);
  CHECK(m.wait_quantile(10, 0.0) == 0.0);
  CHECK(m.wait_quantile(10, -3.0) == 0.0);
  CHECK(m.wait_quantile(10, 1.0) == kInf);
  CHECK(m.wait_quantile(10, 7.0) == kInf);
  CHECK(m.wait_quantile(10, kNaN) == kInf);

  // No arrivals: nobody waits, at any quantile.
  const ResponseTimeModel idle = model(0, 2);
  CHECK(idle.stable(1));
  CHECK(idle.erlang_b(3) == 0.0);
  CHECK(idle.erlang_c(1) == 0.0);
  CHECK(idle.mean_wait(1) == 0.0);
  CHECK(idle.mean_response(1) == 0.5);
  CHECK(idle.wait_probability_above(1, 0.0) == 0.0);
  CHECK(idle.wait_quantile(1, 1.0) == 0.0);

  // c mu - lambda overflows to +inf (mu = 1e308, c - a = 2), still no
  // NaN: the wait is Erlang C at t = 0 and nothing after.
  const ResponseTimeModel fast = model(1e308, 1e308);  // a = 1
  REQUIRE(fast.stable(3));
  const double fast_wait = fast.erlang_c(3);
  CHECK(fast_wait == Approx(1.0 / 11));  // C(3, 1)
  CHECK(fast.wait_probability_above(3, 0.0) == fast_wait);
  CHECK(fast.wait_probability_above(3, 1e-9) == 0.0);
  CHECK(fast.mean_wait(3) == 0.0);
  CHECK(fast.wait_quantile(3, 0.999999) == 0.0);
}

TEST_CASE("response_time_model: the wait quantile inverts the tail",
          "[response_time_model]") {
  for (const double scv : {0.0, 1.0, 4.0}) {
    const ResponseTimeModel m = model(8, 1, scv);
    for (const double p : {0.6, 0.9, 0.99, 0.999, 0.999999}) {
      INFO("scv = " << scv << ", p = " << p);
      const double q = m.wait_quantile(10, p);
      REQUIRE(q > 0);
      CHECK(m.wait_probability_above(10, q) == Approx(1 - p).epsilon(1e-9));
    }
  }
}

TEST_CASE("response_time_model: Whitt's correction for non-exponential service",
          "[response_time_model]") {
  const ResponseTimeModel exponential = model(8, 1);
  const ResponseTimeModel variable = model(8, 1, /*scv=*/3.0);  // w = 2
  const ResponseTimeModel constant = model(8, 1, /*scv=*/0.0);  // w = 1/2
  // P(wait > 0) is Erlang C whatever the scv.
  CHECK(variable.erlang_c(10) == exponential.erlang_c(10));
  CHECK(variable.wait_probability_above(10, 0.0) == exponential.erlang_c(10));
  // Waits scale by (1 + scv) / 2; the tail decays that much slower.
  CHECK(variable.mean_wait(10) == Approx(2.0 * exponential.mean_wait(10)));
  CHECK(constant.mean_wait(10) == Approx(0.5 * exponential.mean_wait(10)));
  CHECK(variable.mean_response(10) ==
        Approx(1.0 + 2.0 * exponential.mean_wait(10)));
  CHECK(variable.wait_quantile(10, 0.99) ==
        Approx(2.0 * exponential.wait_quantile(10, 0.99)));
  CHECK(variable.wait_probability_above(10, 0.6) ==
        Approx(exponential.wait_probability_above(10, 0.3)));
  CHECK(constant.wait_probability_above(10, 0.3) ==
        Approx(exponential.wait_probability_above(10, 0.6)));

  // One worker: exactly Pollaczek-Khinchine, E[Wq] = lambda E[S^2] /
  // (2 (1 - rho)), with E[S^2] = (1 + scv) / mu^2.
  for (const double scv : {0.0, 0.5, 1.0, 2.5, 9.0}) {
    const double lambda = 3, mu = 5;
    const double rho = lambda / mu;
    const double second_moment = (1 + scv) / (mu * mu);
    INFO("scv = " << scv);
    CHECK(model(lambda, mu, scv).mean_wait(1) ==
          Approx(lambda * second_moment / (2 * (1 - rho))));
  }
}

TEST_CASE("response_time_model: the smallest staffing agrees with brute force",
          "[response_time_model]") {
  struct Case {
    double lambda, mu, scv, slo, epsilon;
  };
  const std::vector<Case> cases = {
      {200, 20, 1.0, 0.01, 0.01},   // a = 10
      {200, 20, 4.0, 0.01, 0.01},   // heavier tail: more workers
      {200, 20, 0.0, 0.01, 0.01},   // constant service: fewer
      {3, 1, 1.0, 0.5, 0.2},        // a = 3
      {0.5, 1, 1.0, 0.1, 0.5},      // light load: one worker suffices
      {35, 1, 1.0, 0.05, 0.001},    // a = 35
      {35, 1, 2.0, 0.001, 0.0001},  // tight
  };
  for (const Case& k : cases) {
    INFO("lambda = " << k.lambda << ", mu = " << k.mu << ", scv = " << k.scv
                     << ", slo = " << k.slo << ", epsilon = " << k.epsilon);
    const ResponseTimeModel m = model(k.lambda, k.mu, k.scv);
    // Brute force over the direct (factorial) computation.
    int brute = 0;
    for (int c = 1; c <= 100; ++c) {
      if (tail_direct(c, k.lambda, k.mu, k.scv, k.slo) <= k.epsilon) {
        brute = c;
        break;
      }
    }
    REQUIRE(brute > 0);
    auto staffing = m.smallest_workers_for_wait_slo(k.slo, k.epsilon, 100);
    REQUIRE(staffing.ok());
    CHECK(staffing->met);
    CHECK(staffing->workers == static_cast<std::size_t>(brute));
    CHECK(m.stable(staffing->workers));
    CHECK(m.wait_probability_above(staffing->workers, k.slo) <= k.epsilon);
    if (staffing->workers > 1) {
      CHECK(m.wait_probability_above(staffing->workers - 1, k.slo) > k.epsilon);
    }
    // Capped exactly at the answer: met; one below it: not met.
    auto exact =
        m.smallest_workers_for_wait_slo(k.slo, k.epsilon, staffing->workers);
    REQUIRE(exact.ok());
    CHECK(exact->met);
    CHECK(exact->workers == staffing->workers);
    if (staffing->workers > 1) {
      const std::size_t below = staffing->workers - 1;
      auto capped = m.smallest_workers_for_wait_slo(k.slo, k.epsilon, below);
      REQUIRE(capped.ok());
      CHECK_FALSE(capped->met);
      CHECK(capped->workers == below);
    }
  }
  // Ordering across the cases above: a heavier tail never needs fewer.
  auto exp_staff =
      model(200, 20, 1.0).smallest_workers_for_wait_slo(0.01, 0.01, 100);
  auto heavy_staff =
      model(200, 20, 4.0).smallest_workers_for_wait_slo(0.01, 0.01, 100);
  REQUIRE(exp_staff.ok());
  REQUIRE(heavy_staff.ok());
  CHECK(heavy_staff->workers > exp_staff->workers);
}

TEST_CASE("response_time_model: the staffing search scales to large pools",
          "[response_time_model]") {
  // a = 9 900: the answer lies a little above a (square-root staffing).
  const ResponseTimeModel m = model(9'900, 1);
  auto staffing = m.smallest_workers_for_wait_slo(0.01, 0.01, 100'000);
  REQUIRE(staffing.ok());
  CHECK(staffing->met);
  CHECK(staffing->workers > 9'900);
  CHECK(staffing->workers < 9'900 + 5 * 100);  // within 5 sqrt(a)
  CHECK(m.wait_probability_above(staffing->workers, 0.01) <= 0.01);
  CHECK(m.wait_probability_above(staffing->workers - 1, 0.01) > 0.01);
}

TEST_CASE("response_time_model: bad input is InvalidArgument",
          "[response_time_model]") {
  struct Bad {
    QueueParams params;
    std::string field;
  };
  const std::vector<Bad> bad = {
      {{-1, 1, 1}, "arrival_rate"},   {{kNaN, 1, 1}, "arrival_rate"},
      {{kInf, 1, 1}, "arrival_rate"}, {{1, 0, 1}, "service_rate"},
      {{1, -2, 1}, "service_rate"},   {{1, kNaN, 1}, "service_rate"},
      {{1, kInf, 1}, "service_rate"}, {{1, 1, -0.5}, "service_scv"},
      {{1, 1, kNaN}, "service_scv"},  {{1, 1, kInf}, "service_scv"},
  };
  for (const Bad& b : bad) {
    INFO(b.field << " in {" << b.params.arrival_rate << ", "
                 << b.params.service_rate << ", " << b.params.service_scv
                 << "}");
    auto made = ResponseTimeModel::Create(b.params);
    CHECK(made.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(made.status().message()).find(b.field) !=
          std::string::npos);
  }
  // Every bad field is named at once.
  const std::string all(
      ResponseTimeModel::Create({-1, 0, -1}).status().message());
  CHECK(all.find("arrival_rate") != std::string::npos);
  CHECK(all.find("service_rate") != std::string::npos);
  CHECK(all.find("service_scv") != std::string::npos);

  const ResponseTimeModel m = model(1, 1);
  struct BadSearch {
    double slo, epsilon;
    std::size_t max_workers;
  };
  for (const BadSearch& s :
       {BadSearch{0, 0.01, 8}, BadSearch{-1, 0.01, 8}, BadSearch{kNaN, 0.01, 8},
        BadSearch{kInf, 0.01, 8}, BadSearch{0.1, 0, 8}, BadSearch{0.1, 1, 8},
        BadSearch{0.1, -0.5, 8}, BadSearch{0.1, kNaN, 8},
        BadSearch{0.1, 0.01, 0}}) {
    INFO("slo = " << s.slo << ", epsilon = " << s.epsilon
                  << ", max_workers = " << s.max_workers);
    auto staffing =
        m.smallest_workers_for_wait_slo(s.slo, s.epsilon, s.max_workers);
    CHECK(staffing.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(staffing.status().message()).find("0 < epsilon < 1") !=
          std::string::npos);
  }
  // The same model with good arguments works (the rejections are not
  // blanket failures).
  CHECK(m.smallest_workers_for_wait_slo(0.1, 0.01, 8).ok());
}
