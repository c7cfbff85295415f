// Tests of the model-based policies (scaling/slo_policies.hpp).

#include "fnbus/scaling/slo_policies.hpp"

#include <chrono>
#include <cmath>
#include <string>

#include <catch2/catch.hpp>

#include "fnbus/scaling/response_time_model.hpp"

namespace {

using namespace std::chrono_literals;
using fnbus::scaling::ErlangSlo;
using fnbus::scaling::LoadSnapshot;
using fnbus::scaling::ResponseTimeModel;
using fnbus::scaling::SloGuard;

LoadSnapshot steady_load(double rate, double service_s, std::size_t workers) {
  LoadSnapshot load;
  load.arrival_rate_fast = rate;
  load.arrival_rate_slow = rate;
  load.service_time_mean = service_s;
  load.service_time_scv = 1.0;
  load.workers_running = workers;
  load.min_workers = 1;
  load.max_workers = 64;
  return load;
}

std::unique_ptr<SloGuard> make_guard(fnbus::scaling::SloGuardOptions options) {
  auto guard = SloGuard::Create(options);
  REQUIRE(guard.ok());
  return *std::move(guard);
}

std::unique_ptr<ErlangSlo> make_model() {
  auto model = ErlangSlo::Create();
  REQUIRE(model.ok());
  return *std::move(model);
}

std::size_t model_staffing(double rate, double service_s, double slo,
                           double epsilon) {
  auto model = ResponseTimeModel::Create({rate, 1.0 / service_s, 1.0});
  REQUIRE(model.ok());
  auto staffing = model->smallest_workers_for_wait_slo(slo, epsilon, 64);
  REQUIRE(staffing.ok());
  return staffing->workers;
}

TEST_CASE("slo_policies: ErlangSlo keeps the size until service is measured",
          "[slo_policies]") {
  auto policy = ErlangSlo::Create();
  REQUIRE(policy.ok());
  LoadSnapshot load = steady_load(100, 0, 3);
  const auto decision = (*policy)->decide(load);
  CHECK(decision.target == 3);
  CHECK(decision.reason == "no-service-estimate");
}

TEST_CASE("slo_policies: ErlangSlo staffs for the wait SLO", "[slo_policies]") {
  auto policy = ErlangSlo::Create(
      {.wait_slo = 10ms, .epsilon = 0.01, .max_utilisation = 0.95});
  REQUIRE(policy.ok());
  // a = 200/s x 50 ms = 10 workers busy on average.
  const LoadSnapshot load = steady_load(200, 0.05, 10);
  const auto decision = (*policy)->decide(load);
  const std::size_t expected = model_staffing(200, 0.05, 0.010, 0.01);
  CHECK(expected > 10);
  CHECK(decision.target ==
        Approx(std::max<double>(expected, 10 / 0.95)).epsilon(1e-12));
  CHECK(decision.reason == "erlang-slo");
  CHECK_FALSE(decision.panic);
}

TEST_CASE("slo_policies: ErlangSlo adds workers to drain a backlog",
          "[slo_policies]") {
  auto policy = ErlangSlo::Create({.drain = 1s});
  REQUIRE(policy.ok());
  LoadSnapshot load = steady_load(100, 0.01, 2);  // a = 1
  load.queue_depth = 2'000;                       // 20 s of work for one worker
  CHECK((*policy)->decide(load).target >= 1 + 2'000 * 0.01 / 1.0);
}

TEST_CASE("slo_policies: SloGuard follows the slow rate when steady",
          "[slo_policies]") {
  auto guard = make_guard({});
  auto plain = make_model();
  const LoadSnapshot load = steady_load(200, 0.05, 20);
  const auto decision = guard->decide(load);
  CHECK(decision.target == plain->decide(load).target);
  CHECK_FALSE(decision.panic);
  CHECK(decision.reason == "slo-guard");
}

TEST_CASE(
    "slo_policies: SloGuard panics on a burst and does not shrink while the "
    "backlog is late",
    "[slo_policies]") {
  auto guard = make_guard({.panic_ratio = 2.0});
  auto plain = make_model();
  LoadSnapshot load = steady_load(100, 0.05, 40);
  load.arrival_rate_fast = 400;  // 4x the slow rate: a burst
  load.queue_depth = 20;
  load.oldest_wait = 0.1;  // past the 20 ms SLO
  const auto decision = guard->decide(load);
  CHECK(decision.panic);
  CHECK(decision.reason == "slo-guard-panic");
  CHECK(decision.target >= plain->target_for(load, 400));
  CHECK(decision.target >= 40);
  // A burst that has not lasted: the governor's window holds none of it.
  CHECK(decision.hold < 40);
}

TEST_CASE(
    "slo_policies: SloGuard lets the backlog's workers go once it is gone, "
    "and staffs for the burst's rate",
    "[slo_policies]") {
  auto guard = make_guard({.panic_ratio = 2.0});
  auto plain = make_model();
  // 48 workers, added to drain a burst's backlog; the backlog is gone.
  LoadSnapshot load = steady_load(100, 0.05, 48);
  load.tick = 100ms;
  load.arrival_rate_fast = 300;  // the average still lags ...
  load.arrival_rate_last = 600;  // ... the last tick's rate
  const auto decision = guard->decide(load);
  CHECK(decision.panic);  // still a burst: growth is not rate-limited
  const double need = plain->target_for(load, 600);
  CHECK(decision.target == Approx(need).epsilon(1e-12));
  CHECK(decision.target < 48);  // shrinks towards the need
  CHECK(decision.hold < decision.target);
}

TEST_CASE(
    "slo_policies: SloGuard keeps the drain's size for settle after the "
    "backlog is gone",
    "[slo_policies]") {
  auto guard = make_guard({.settle = 300ms});
  LoadSnapshot load = steady_load(1'000, 0.002, 4);
  load.tick = 100ms;
  load.arrival_rate_last = 1'000;
  load.queue_depth = 200;
  load.oldest_wait = 0.1;  // late: a stall, say
  const auto late = guard->decide(load);
  CHECK(late.panic);
  // 2 busy + 200 events x 2 ms within the 20 ms SLO: 20 more.
  CHECK(late.target >= 21.9);
  load.queue_depth = 0;
  load.oldest_wait = 0;
  for (int i = 1; i <= 3; ++i) {
    load.now += 100ms;
    INFO("tick " << i << " after the backlog");
    CHECK(guard->decide(load).target == late.target);
  }
  load.now += 100ms;  // 400 ms after: settled
  const auto settled = guard->decide(load);
  CHECK_FALSE(settled.panic);
  CHECK(settled.target < late.target / 2);
}

TEST_CASE("slo_policies: SloGuard lets the window hold only a rate that lasted",
          "[slo_policies]") {
  auto guard = make_guard({});
  auto plain = make_model();
  LoadSnapshot load = steady_load(400, 0.05, 30);
  load.tick = 100ms;
  load.arrival_rate_last = 400;
  double hold = 0;
  for (int i = 0; i < 5; ++i) hold = guard->decide(load).hold;
  CHECK(hold == Approx(plain->target_for(load, 400)).epsilon(1e-12));
  // One tick with nothing: the rate has not lasted, whatever the averages.
  load.arrival_rate_last = 0;
  CHECK(guard->decide(load).hold < hold);
}

TEST_CASE("slo_policies: SloGuard grows with the fast rate below a burst",
          "[slo_policies]") {
  auto guard = make_guard({.panic_ratio = 2.0});
  auto plain = make_model();
  LoadSnapshot load = steady_load(100, 0.05, 10);
  load.arrival_rate_fast = 150;  // higher, not a burst
  const auto up = guard->decide(load);
  CHECK_FALSE(up.panic);
  CHECK(up.target == Approx(plain->target_for(load, 150)).epsilon(1e-12));
  CHECK(up.hold <= up.target);
  load.arrival_rate_fast = 50;  // a lull: the slow rate holds the size
  CHECK(guard->decide(load).target ==
        Approx(plain->target_for(load, 100)).epsilon(1e-12));
}

TEST_CASE("slo_policies: SloGuard panics when the oldest event is late",
          "[slo_policies]") {
  auto guard = make_guard({.slo = {.wait_slo = 20ms}});
  LoadSnapshot load = steady_load(100, 0.01, 2);
  load.oldest_wait = 0.5;
  CHECK(guard->decide(load).panic);
}

TEST_CASE("slo_policies: bad options are InvalidArgument naming each",
          "[slo_policies]") {
  auto bad = ErlangSlo::Create(
      {.wait_slo = 0ms, .epsilon = 1.5, .max_utilisation = 0, .drain = -1s});
  REQUIRE_FALSE(bad.ok());
  const std::string message(bad.status().message());
  for (const char* name : {"wait_slo", "epsilon", "max_utilisation", "drain"}) {
    INFO(name);
    CHECK(message.find(name) != std::string::npos);
  }
  auto guard = SloGuard::Create({.panic_ratio = 0.5});
  REQUIRE_FALSE(guard.ok());
  CHECK(std::string(guard.status().message()).find("panic_ratio") !=
        std::string::npos);
  auto unsettled = SloGuard::Create({.settle = -1ms});
  REQUIRE_FALSE(unsettled.ok());
  CHECK(std::string(unsettled.status().message()).find("settle") !=
        std::string::npos);
}

}  // namespace
