// The policy lab: every policy on every standard trace, in the
// deterministic simulator, over several seeds. Prints a comparison table
// and writes one CSV per (policy, trace, first seed) for plotting:
//
//   scaling_lab [--seeds N] [--out DIR]
//   gnuplot -e "csv='DIR/slo-guard_flash_sale.csv'; png='flash.png'"
//       examples/scaling_lab/plot.gp          (one command line)
//
// The pool: 2 ms per event on average (lognormal, scv 1.5), at most 32
// workers (capacity C = 16 000 events/s), threads start in 5 ms, a 20 ms
// queue-wait SLO, 100 ms ticks.

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fmt/core.h"

#include "fnbus/scaling/lab/random.hpp"
#include "fnbus/scaling/lab/simulator.hpp"
#include "fnbus/scaling/lab/traces.hpp"
#include "fnbus/scaling/policies.hpp"
#include "fnbus/scaling/slo_policies.hpp"

namespace lab = fnbus::scaling::lab;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMaxWorkers = 32;
constexpr double kMeanService = 0.002;

struct Contender {
  std::string name;
  std::function<std::unique_ptr<fnbus::scaling::ScalingPolicy>()> make;
};

std::vector<Contender> contenders() {
  return {
      {"fixed-max",
       [] {
         return fnbus::scaling::make_policy(
             "fixed-max", [](const fnbus::scaling::LoadSnapshot&) {
               return fnbus::scaling::ScalingDecision{kMaxWorkers, "fixed"};
             });
       }},
      {"hpa",
       [] {
         return std::unique_ptr<fnbus::scaling::ScalingPolicy>(
             *fnbus::scaling::UtilizationRatio::Create({}));
       }},
      {"kpa",
       [] {
         return std::unique_ptr<fnbus::scaling::ScalingPolicy>(
             *fnbus::scaling::TargetConcurrency::Create({}));
       }},
      {"adaptive-cap",
       [] {
         return std::unique_ptr<fnbus::scaling::ScalingPolicy>(
             *fnbus::scaling::AdaptiveCap::Create({}));
       }},
      {"erlang-slo",
       [] {
         return std::unique_ptr<fnbus::scaling::ScalingPolicy>(
             *fnbus::scaling::ErlangSlo::Create({.wait_slo = 20ms}));
       }},
      {"slo-guard",
       [] {
         return std::unique_ptr<fnbus::scaling::ScalingPolicy>(
             *fnbus::scaling::SloGuard::Create({.slo = {.wait_slo = 20ms}}));
       }},
  };
}

void write_csv(const std::string& path, const lab::SimulationResult& result) {
  std::FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) {
    fmt::print(stderr, "cannot write {}\n", path);
    return;
  }
  fmt::print(file,
             "time_s,arrival_rate,estimated_rate,workers,policy_target,"
             "queue_depth,wait_p99_ms\n");
  for (const auto& row : result.timeline) {
    fmt::print(file, "{:.1f},{:.0f},{:.0f},{},{:.2f},{},{:.3f}\n", row.time_s,
               row.arrival_rate, row.estimated_rate, row.workers,
               row.policy_target, row.queue_depth, row.wait_p99_ms);
  }
  std::fclose(file);
}

}  // namespace

int main(int argc, char** argv) {
  int seeds = 3;
  std::string out_dir = ".";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--seeds") seeds = std::max(1, std::atoi(argv[i + 1]));
    if (flag == "--out") out_dir = argv[i + 1];
  }
  const double capacity = static_cast<double>(kMaxWorkers) / kMeanService;
  auto traces = lab::standard_traces(capacity);
  auto service = lab::ServiceTimeDistribution::Lognormal(kMeanService, 1.5);
  if (!traces.ok() || !service.ok()) return 1;

  const lab::SimulationOptions options{
      .tick = 100ms,
      .thread_start_delay = 5ms,
      .wait_slo = 20ms,
      .governor = {.min_workers = 1, .max_workers = kMaxWorkers},
      .fast_window = 1s,
      .slow_window = 30s,
      .initial_workers = 1};

  fmt::print("{:<12} {:<11} {:>8} {:>9} {:>9} {:>10} {:>12} {:>10}\n", "policy",
             "trace", "SLO met", "p99 wait", "p999 wait", "p99 resp",
             "worker-s", "actions/m");
  bool ok = true;
  for (const lab::Trace& trace : *traces) {
    for (const Contender& contender : contenders()) {
      double met = 0, p99 = 0, p999 = 0, resp = 0, cost = 0, actions = 0;
      for (int seed = 1; seed <= seeds; ++seed) {
        lab::Random random(static_cast<std::uint64_t>(seed));
        lab::SimulationInput input{
            lab::poisson_arrivals(trace, random),
            [&](std::int64_t start) {
              const double slower = trace.service_multiplier(start);
              return static_cast<std::int64_t>(
                  static_cast<double>(service->sample_ns(random)) * slower);
            },
            trace.duration_ns};
        auto policy = contender.make();
        auto result = lab::simulate(input, *policy, options);
        if (!result.ok()) {
          fmt::print(stderr, "{}\n", result.status().ToString());
          ok = false;
          continue;
        }
        met += 1 - result->violation_fraction();
        p99 += result->wait.quantile_nanos(0.99) / 1e6;
        p999 += result->wait.quantile_nanos(0.999) / 1e6;
        resp += result->response.quantile_nanos(0.99) / 1e6;
        cost += result->worker_seconds;
        actions += result->actions_per_minute;
        if (seed == 1) {
          write_csv(
              fmt::format("{}/{}_{}.csv", out_dir, contender.name, trace.name),
              *result);
        }
      }
      const double n = seeds;
      fmt::print(
          "{:<12} {:<11} {:>7.2f}% {:>7.1f}ms {:>7.1f}ms {:>8.1f}ms {:>12.0f} "
          "{:>10.1f}\n",
          contender.name, trace.name, 100 * met / n, p99 / n, p999 / n,
          resp / n, cost / n, actions / n);
    }
  }
  return ok ? 0 : 1;
}
