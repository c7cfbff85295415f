// Tests of scaling::ScalingLoop: estimate -> decide -> govern in one step,
// a throwing policy keeps the size, the start counts for stabilisation;
// and SloGuard steering a fluid model of a bus on a ManualClock through a
// machine stall, a burst and a start-up burst.

#include "fnbus/scaling/scaling_loop.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "fnbus/scaling/slo_policies.hpp"
#include "fnbus/testing/manual_clock.hpp"

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

// A fluid model of a bus for the loop to steer: events arrive at `rate`
// per second, each takes `service` seconds of one worker, first come first
// served; workers asked for are ready at once. Time comes from a
// ManualClock, advanced one tick per step.
class FluidBus {
 public:
  FluidBus(double rate, double service) : rate_(rate), service_(service) {}

  void set_rate(double rate) { rate_ = rate; }
  // `count` events at once (a start-up burst, a catch-up after a stall).
  void publish(double count) {
    queue_ += count;
    arrived_ += count;
  }
  [[nodiscard]] double queue() const { return queue_; }

  // The first observation (the loop's start).
  TickObservation start(std::size_t workers) {
    workers_ = workers;
    return observe(0, 0);
  }
  // One 100 ms tick, of which the first `stalled` the whole machine stood
  // still: no event finished, and the events in flight took that much
  // longer (measured when they finish, in the next tick that finishes
  // any).
  TickObservation tick(fnbus::Duration stalled = {}) {
    const double dt = 0.1;
    const double pause = std::chrono::duration<double>(stalled).count();
    clock_.advance(100ms);
    const double arrivals = rate_ * dt;
    queue_ += arrivals;
    arrived_ += arrivals;
    const double in_flight =
        std::min(static_cast<double>(workers_), rate_ * service_);
    const double capacity =
        static_cast<double>(workers_) * (dt - pause) / service_;
    const double served = std::min(queue_, capacity);
    queue_ -= served;
    completed_ += served;
    stretch_ += in_flight * pause;
    double stretch = 0;
    if (served >= 1) {
      stretch = stretch_ / served;
      stretch_ = 0;
    }
    return observe(served, stretch);
  }
  void resize(std::size_t workers) { workers_ = workers; }

 private:
  TickObservation observe(double served, double stretch) const {
    TickObservation observation;
    observation.now = clock_.now();
    observation.arrivals_total = static_cast<std::uint64_t>(arrived_);
    observation.completions_total = static_cast<std::uint64_t>(completed_);
    observation.queue_depth = static_cast<std::uint64_t>(queue_);
    observation.in_flight = static_cast<std::uint64_t>(
        std::min(static_cast<double>(workers_), rate_ * service_));
    if (served >= 1) {
      observation.service_samples = static_cast<std::uint64_t>(served);
      observation.service_time_mean = service_ + stretch;
      observation.service_time_scv = 1.5;
    }
    // FIFO fed at `rate`: the oldest queued event came queue / rate ago.
    if (queue_ >= 1) {
      observation.oldest_wait = rate_ > 0 ? queue_ / rate_ : 1.0;
    }
    observation.workers_running = workers_;
    return observation;
  }

  fnbus::testing::ManualClock clock_;
  double rate_;
  double service_;
  double queue_ = 0;
  double arrived_ = 0;
  double completed_ = 0;
  double stretch_ = 0;  // stall time of events not yet finished, s
  std::size_t workers_ = 1;
};

// The lab's set-up (examples/scaling_lab): a 20 ms wait SLO, windows of
// 1 s and 30 s, 1 to 48 workers, the governor's defaults otherwise.
struct GuardedBus {
  std::unique_ptr<fnbus::scaling::SloGuard> guard =
      *fnbus::scaling::SloGuard::Create({.slo = {.wait_slo = 20ms}});
  ScalingLoop loop = *ScalingLoop::Create(
      *guard, {.governor = {.min_workers = 1, .max_workers = 48},
               .fast_window = 1s,
               .slow_window = 30s});
  FluidBus bus;
  std::vector<std::size_t> sizes;  // after each tick
  double longest_service = 0;      // the largest service-time estimate

  GuardedBus(double rate, double service) : bus(rate, service) {
    loop.start(bus.start(1));
  }
  // Runs `ticks` ticks (the first with `stalled` of stall) and returns
  // the last step.
  fnbus::scaling::ScalingStep run(int ticks, fnbus::Duration stalled = {}) {
    fnbus::scaling::ScalingStep step;
    for (int i = 0; i < ticks; ++i) {
      step = loop.step(bus.tick(i == 0 ? stalled : fnbus::Duration{}));
      bus.resize(step.governed.workers);
      sizes.push_back(step.governed.workers);
      longest_service = std::max(longest_service, step.load.service_time_mean);
    }
    return step;
  }
};

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

namespace {

// What ErlangSlo staffs for `rate` at 2 ms (scv 1.5) with a 20 ms SLO.
std::size_t need_for(double rate) {
  auto model = fnbus::scaling::ErlangSlo::Create({.wait_slo = 20ms});
  REQUIRE(model.ok());
  LoadSnapshot truth;
  truth.service_time_mean = 0.002;
  truth.service_time_scv = 1.5;
  truth.max_workers = 48;
  return static_cast<std::size_t>(std::ceil((*model)->target_for(truth, rate)));
}

}  // namespace

TEST_CASE(
    "scaling_loop: a 100 ms machine stall in a steady load is drained, not "
    "held, and not taken for a slower service",
    "[scaling_loop][slo_guard]") {
  GuardedBus guarded(4'000, 0.002);  // 8 workers busy on average
  (void)guarded.run(600);            // 60 s: settled
  const std::size_t steady = guarded.sizes.back();
  for (std::size_t i = guarded.sizes.size() - 20; i < guarded.sizes.size();
       ++i) {
    REQUIRE(guarded.sizes[i] == steady);
  }
  guarded.sizes.clear();
  guarded.longest_service = 0;
  // 100 ms in which nothing ran: 400 events queue, the oldest waits
  // 100 ms (past the SLO), and the 8 events in flight take 100 ms longer.
  (void)guarded.run(100, 100ms);
  INFO("steady " << steady << ", sizes after the stall "
                 << ::Catch::Detail::stringify(guarded.sizes));
  CHECK(guarded.bus.queue() < 1);  // the backlog drained
  // The stretched events moved the service-time estimate by under 10 %.
  CHECK(guarded.longest_service < 0.0022);
  // The workers added to drain the backlog within the SLO go after it:
  // settle (3 ticks), then halving per tick. From the 8th tick on the
  // pool is back at its size, and nothing holds it (the governor's window
  // would have held them for 30 s).
  for (std::size_t i = 8; i < guarded.sizes.size(); ++i) {
    INFO("tick " << i);
    CHECK(guarded.sizes[i] == steady);
  }
  CHECK(guarded.sizes.front() > steady);  // it did drain with more
}

TEST_CASE(
    "scaling_loop: a burst is staffed at once, and its backlog's workers go "
    "within 5 s of the backlog clearing",
    "[scaling_loop][slo_guard]") {
  GuardedBus guarded(1'000, 0.002);
  (void)guarded.run(600);
  const std::size_t need = need_for(8'000);
  guarded.bus.set_rate(8'000);  // x8: 16 workers busy on average
  guarded.sizes.clear();
  // Recovery: the pool reaches the burst's need within 2 ticks.
  (void)guarded.run(2);
  CHECK(guarded.sizes.back() >= need);
  int ticks = 0;
  while (guarded.bus.queue() >= 1 && ticks < 50) {
    (void)guarded.run(1);
    ++ticks;
  }
  REQUIRE(guarded.bus.queue() < 1);  // the backlog is gone
  const std::size_t peak =
      *std::max_element(guarded.sizes.begin(), guarded.sizes.end());
  CHECK(peak > need);     // it took more than the need to drain the backlog
  (void)guarded.run(50);  // 5 s
  INFO("need " << need << ", sizes "
               << ::Catch::Detail::stringify(guarded.sizes));
  // Back to the burst's need, and still staffed for it.
  CHECK(guarded.sizes.back() <= need + 1);
  CHECK(guarded.sizes.back() >= need);
}

TEST_CASE(
    "scaling_loop: after a burst in a bus's first tick and then silence, "
    "the pool returns to the floor",
    "[scaling_loop][slo_guard]") {
  GuardedBus guarded(0, 0.002);
  guarded.bus.publish(2'000);  // 4 s of one worker's time, all at once
  (void)guarded.run(1);
  CHECK(guarded.sizes.back() > 1);  // grows to drain it
  int ticks = 1;
  while (guarded.sizes.back() > 1 && ticks < 600) {
    (void)guarded.run(1);
    ++ticks;
  }
  INFO("ticks to the floor: " << ticks);
  CHECK(guarded.sizes.back() == 1);
  CHECK(guarded.bus.queue() < 1);
  CHECK(ticks <= 100);     // within 10 s
  (void)guarded.run(100);  // and it stays there
  CHECK(guarded.sizes.back() == 1);
}
