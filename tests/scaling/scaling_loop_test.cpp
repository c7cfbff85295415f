// Tests of scaling::ScalingLoop: estimate -> decide -> govern in one step,
// a throwing policy keeps the size, the start counts for stabilisation.

#include "fnbus/scaling/scaling_loop.hpp"

#include <chrono>
#include <stdexcept>
#include <string>

#include <catch2/catch.hpp>

namespace {

using namespace std::chrono_literals;
using fnbus::scaling::LoadSnapshot;
using fnbus::scaling::ScalingDecision;
using fnbus::scaling::ScalingLoop;
using fnbus::scaling::TickObservation;

// `workers` running at `seconds` after an arbitrary origin.
TickObservation at(double seconds, std::size_t workers) {
  TickObservation observation;
  observation.now =
      fnbus::TimePoint{} + std::chrono::duration_cast<fnbus::Duration>(
                               std::chrono::duration<double>(seconds));
  observation.workers_running = workers;
  return observation;
}

}  // namespace

TEST_CASE("scaling_loop: a step estimates, decides and governs",
          "[scaling_loop]") {
  double answer = 6;
  auto policy = fnbus::scaling::make_policy(
      "answer", [&](const LoadSnapshot&) -> ScalingDecision {
        if (answer < 0) throw std::runtime_error("no estimate");
        return {answer, "answer"};
      });
  auto loop = ScalingLoop::Create(
      *policy,
      {.governor = {
           .min_workers = 1, .max_workers = 8, .down_stabilisation = 0s}});
  REQUIRE(loop.ok());
  loop->start(at(0, 2));

  const auto grown = loop->step(at(0.1, 2));
  CHECK(grown.error.ok());
  CHECK(grown.decision.target == 6);
  CHECK(grown.governed.workers == 6);  // within max(2R, R + 4) = 6
  CHECK(grown.load.workers() == 2);

  answer = -1;  // throws
  const auto failed = loop->step(at(0.2, 6));
  CHECK(failed.governed.workers == 6);  // the size is kept
  CHECK(failed.decision.reason == "policy-error");
  CHECK(std::string(failed.error.message())
            .find("scaling policy answer threw (no estimate)") !=
        std::string::npos);
}

TEST_CASE("scaling_loop: the starting size holds a shrink for the window",
          "[scaling_loop]") {
  auto policy = fnbus::scaling::make_policy(
      "idle", [](const LoadSnapshot&) -> ScalingDecision {
        return {1, "idle"};
      });
  auto loop = ScalingLoop::Create(
      *policy,
      {.governor = {
           .min_workers = 1, .max_workers = 8, .down_stabilisation = 1s}});
  REQUIRE(loop.ok());
  loop->start(at(0, 4));
  CHECK(loop->step(at(0.5, 4)).governed.workers == 4);  // held
  CHECK(loop->step(at(1.5, 4)).governed.workers == 2);  // halved
  CHECK(ScalingLoop::Create(*policy,
                            {.governor = {.min_workers = 3, .max_workers = 2}})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
}
