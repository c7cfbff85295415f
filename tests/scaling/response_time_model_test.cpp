// Tests of the M/M/c response-time model (scaling/response_time_model.hpp)
// against textbook values and an independent direct computation.

#include "fnbus/scaling/response_time_model.hpp"

#include <cmath>
#include <limits>
#include <string>

#include <catch2/catch.hpp>

namespace {

using fnbus::scaling::QueueParams;
using fnbus::scaling::ResponseTimeModel;

ResponseTimeModel model(double lambda, double mu, double scv = 1.0) {
  auto made = ResponseTimeModel::Create({lambda, mu, scv});
  REQUIRE(made.ok());
  return *made;
}

// Erlang C from its closed form with factorials, in long double (fine for
// small c): an independent check of the recursion.
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

TEST_CASE("response_time_model: one worker is M/M/1", "[response_time_model]") {
  const ResponseTimeModel m1 = model(/*lambda=*/6, /*mu=*/10);
  CHECK(m1.utilisation(1) == Approx(0.6));
  CHECK(m1.erlang_c(1) == Approx(0.6));  // P(wait) = rho
  CHECK(m1.mean_wait(1) == Approx(0.6 / (10 - 6)));
  CHECK(m1.mean_response(1) == Approx(1.0 / (10 - 6)));
}

TEST_CASE("response_time_model: textbook Erlang B and C values",
          "[response_time_model]") {
  CHECK(model(1, 1).erlang_c(2) == Approx(1.0 / 3));
  CHECK(model(3, 1).erlang_b(5) == Approx(0.1101).epsilon(1e-3));
  for (const int c : {2, 5, 10, 20}) {
    for (const double rho : {0.3, 0.8, 0.95}) {
      const double a = rho * c;
      INFO("c = " << c << ", a = " << a);
      CHECK(model(a, 1).erlang_c(static_cast<std::size_t>(c)) ==
            Approx(static_cast<double>(erlang_c_direct(c, a))).epsilon(1e-9));
    }
  }
  // c = 10, lambda = 8, mu = 1: E[Wq] = C / (c mu - lambda).
  const ResponseTimeModel m = model(8, 1);
  CHECK(m.mean_wait(10) == Approx(m.erlang_c(10) / 2.0));
}

TEST_CASE("response_time_model: large pools stay finite and in range",
          "[response_time_model]") {
  const ResponseTimeModel m = model(9'900, 1);
  const double c = m.erlang_c(10'000);
  CHECK(std::isfinite(c));
  CHECK(c > 0.0);
  CHECK(c < 1.0);
  CHECK(std::isfinite(m.mean_wait(10'000)));
}

TEST_CASE("response_time_model: more workers never wait longer",
          "[response_time_model]") {
  const ResponseTimeModel m = model(40, 5);  // a = 8
  double previous = m.mean_wait(9);
  for (std::size_t c = 10; c < 30; ++c) {
    const double wait = m.mean_wait(c);
    CHECK(wait <= previous);
    previous = wait;
  }
}

TEST_CASE("response_time_model: an overloaded pool waits forever, never NaN",
          "[response_time_model]") {
  const ResponseTimeModel m = model(10, 1);  // a = 10
  for (const std::size_t c : {0u, 5u, 10u}) {
    INFO("c = " << c);
    CHECK_FALSE(m.stable(c));
    CHECK(m.erlang_c(c) == 1.0);
    CHECK(std::isinf(m.mean_wait(c)));
    CHECK(m.wait_probability_above(c, 1.0) == 1.0);
    CHECK(std::isinf(m.wait_quantile(c, 0.99)));
  }
  CHECK(m.stable(11));
  CHECK(std::isinf(m.utilisation(0)));
}

TEST_CASE("response_time_model: the wait quantile inverts the tail",
          "[response_time_model]") {
  const ResponseTimeModel m = model(8, 1);
  for (const double p : {0.5, 0.9, 0.99, 0.999}) {
    const double q = m.wait_quantile(10, p);
    INFO("p = " << p);
    if (q > 0) {
      CHECK(m.wait_probability_above(10, q) == Approx(1 - p).epsilon(1e-9));
    } else {
      CHECK(m.erlang_c(10) <= 1 - p);
    }
  }
  // Non-exponential service (Whitt): waits scale by (1 + scv) / 2.
  const ResponseTimeModel heavy = model(8, 1, /*scv=*/3.0);
  CHECK(heavy.mean_wait(10) == Approx(2.0 * m.mean_wait(10)));
  CHECK(heavy.wait_quantile(10, 0.99) ==
        Approx(2.0 * m.wait_quantile(10, 0.99)));
}

TEST_CASE("response_time_model: the smallest staffing agrees with a search",
          "[response_time_model]") {
  const ResponseTimeModel m = model(/*lambda=*/200, /*mu=*/20);  // a = 10
  auto staffing = m.smallest_workers_for_wait_slo(/*slo=*/0.01,
                                                  /*epsilon=*/0.01, 64);
  REQUIRE(staffing.ok());
  CHECK(staffing->met);
  std::size_t brute = 0;
  for (std::size_t c = 1; c <= 64; ++c) {
    if (m.wait_probability_above(c, 0.01) <= 0.01) {
      brute = c;
      break;
    }
  }
  CHECK(staffing->workers == brute);
  CHECK(brute > 10);
  auto capped = m.smallest_workers_for_wait_slo(0.01, 0.01, 5);
  REQUIRE(capped.ok());
  CHECK_FALSE(capped->met);
  CHECK(capped->workers == 5);
}

TEST_CASE("response_time_model: bad input is InvalidArgument",
          "[response_time_model]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const QueueParams& bad :
       {QueueParams{-1, 1, 1}, QueueParams{1, 0, 1}, QueueParams{nan, 1, 1},
        QueueParams{1, 1, -0.5},
        QueueParams{1, std::numeric_limits<double>::infinity(), 1}}) {
    auto made = ResponseTimeModel::Create(bad);
    CHECK(made.status().code() == absl::StatusCode::kInvalidArgument);
  }
  const ResponseTimeModel m = model(1, 1);
  CHECK_FALSE(m.smallest_workers_for_wait_slo(0, 0.01, 8).ok());
  CHECK_FALSE(m.smallest_workers_for_wait_slo(0.1, 1.0, 8).ok());
  CHECK_FALSE(m.smallest_workers_for_wait_slo(0.1, 0.01, 0).ok());
  CHECK(std::string(
            m.smallest_workers_for_wait_slo(-1, 0.01, 8).status().message())
            .find("slo") != std::string::npos);
}

}  // namespace
