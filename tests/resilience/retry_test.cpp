// resilience::RetryPolicy alone: its checks, how many calls it allows,
// retry_if (and one that throws), retry_on_codes, expiry and the delays'
// bounds.

#include "fnbus/resilience/retry.hpp"

#include <stdexcept>
#include <string>

#include <catch2/catch.hpp>

namespace {

using fnbus::Duration;
using fnbus::TimePoint;
using fnbus::resilience::Jitter;
using fnbus::resilience::retry_on_codes;
using fnbus::resilience::RetryOptions;
using fnbus::resilience::RetryPolicy;
using namespace std::chrono_literals;

const absl::Status kUnavailable = absl::UnavailableError("gateway down");

TEST_CASE("retry policy: bad options are refused, each named", "[retry]") {
  auto policy = RetryPolicy::Create(
      {.max_attempts = 0, .backoff = {.initial = 0ms}, .max_event_age = -1s});
  REQUIRE(policy.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(policy.status().message());
  CHECK(message.find("max_attempts is 0") != std::string::npos);
  CHECK(message.find("max_event_age") != std::string::npos);
  CHECK(message.find("initial is 0 ns") != std::string::npos);
  CHECK(RetryPolicy::Create({.max_event_age = 0s}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(RetryPolicy::Create({}).ok());
}

TEST_CASE("retry policy: attempts include the first call", "[retry]") {
  auto policy = RetryPolicy::Create({.max_attempts = 3});
  REQUIRE(policy.ok());
  CHECK(policy->should_retry(1, kUnavailable, nullptr));
  CHECK(policy->should_retry(2, kUnavailable, nullptr));
  CHECK_FALSE(policy->should_retry(3, kUnavailable, nullptr));
  CHECK(policy->exhausted(3));
  CHECK_FALSE(policy->exhausted(2));
  auto once = RetryPolicy::Create({.max_attempts = 1});
  REQUIRE(once.ok());
  CHECK_FALSE(once->should_retry(1, kUnavailable, nullptr));
}

TEST_CASE("retry policy: retry_if sees the status and the exception",
          "[retry]") {
  auto policy = RetryPolicy::Create(
      {.max_attempts = 5,
       .retry_if = [](const absl::Status& failure,
                      const std::exception_ptr& thrown) {
         if (thrown == nullptr) {
           return failure.code() == absl::StatusCode::kUnavailable;
         }
         try {
           std::rethrow_exception(thrown);
         } catch (const std::runtime_error&) {
           return true;  // transient
         } catch (...) {
           return false;
         }
       }});
  REQUIRE(policy.ok());
  CHECK(policy->should_retry(1, kUnavailable, nullptr));
  CHECK_FALSE(
      policy->should_retry(1, absl::InvalidArgumentError("bad"), nullptr));
  CHECK(policy->should_retry(1, absl::UnknownError("x"),
                             std::make_exception_ptr(std::runtime_error("x"))));
  CHECK_FALSE(
      policy->should_retry(1, absl::UnknownError("x"),
                           std::make_exception_ptr(std::logic_error("x"))));
}

TEST_CASE("retry policy: a retry_if that throws says no", "[retry]") {
  auto policy = RetryPolicy::Create(
      {.retry_if = [](const absl::Status&, const std::exception_ptr&) -> bool {
        throw std::runtime_error("predicate bug");
      }});
  REQUIRE(policy.ok());
  CHECK_FALSE(policy->should_retry(1, kUnavailable, nullptr));
}

TEST_CASE("retry policy: retry_on_codes retries only those codes", "[retry]") {
  const auto predicate = retry_on_codes(
      {absl::StatusCode::kUnavailable, absl::StatusCode::kDeadlineExceeded});
  CHECK(predicate(kUnavailable, nullptr));
  CHECK(predicate(absl::DeadlineExceededError("slow"), nullptr));
  CHECK_FALSE(predicate(absl::InvalidArgumentError("bad"), nullptr));
  CHECK_FALSE(predicate(absl::UnknownError("threw"), nullptr));
}

TEST_CASE("retry policy: an event expires after max_event_age", "[retry]") {
  auto policy = RetryPolicy::Create({.max_event_age = 1min});
  REQUIRE(policy.ok());
  const TimePoint first{10s};
  CHECK_FALSE(policy->expired(first, first + 1min));  // at the limit: not yet
  CHECK(policy->expired(first, first + 1min + 1ns));
  auto ageless = RetryPolicy::Create({});
  REQUIRE(ageless.ok());
  CHECK_FALSE(ageless->expired(first, TimePoint::max()));
}

TEST_CASE("retry policy: delays stay within the backoff's ceiling", "[retry]") {
  auto policy = RetryPolicy::Create(
      {.max_attempts = 10,
       .backoff = {.initial = 100ms, .multiplier = 2.0, .max = 1s}});
  REQUIRE(policy.ok());
  fnbus::Random random(42);
  for (std::uint32_t attempt = 1; attempt <= 8; ++attempt) {
    const Duration ceiling =
        std::min<Duration>(1s, 100ms * (std::int64_t{1} << (attempt - 1)));
    Duration longest{0};
    for (int draw = 0; draw < 2000; ++draw) {
      const Duration delay = policy->delay(attempt, random);
      REQUIRE(delay >= Duration::zero());
      REQUIRE(delay <= ceiling);
      longest = std::max(longest, delay);
    }
    // Full jitter spreads over the whole range (2000 draws: the longest is
    // within 1% of the ceiling but for a chance of 0.99^2000).
    CHECK(longest * 100 >= ceiling * 99);
  }
}

}  // namespace
