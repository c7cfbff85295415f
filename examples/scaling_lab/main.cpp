// The policy lab: every policy on every standard trace, in the
// deterministic simulator, over several seeds. Prints a comparison table
// and writes one CSV per (policy, trace, first seed) for plotting:
//
//   scaling_lab [--seeds N] [--out DIR]
//   gnuplot -e "csv='DIR/slo-guard_flash_sale.csv'; png='flash.png'"
//       examples/scaling_lab/plot.gp          (one command line)
//
// With --sweep it instead sweeps the HPA-style policy's target utilisation
// and the KPA-style policy's target concurrency on the flash_sale and
// diurnal traces (10 seeds unless --seeds), prints every setting's SLO
// attainment, cost and recovery, compares the cheapest setting of each
// that meets the SLO for >= 99% of events with SloGuard's defaults, and
// writes DIR/frontier.csv:
//
//   scaling_lab --sweep [--seeds N] [--out DIR] [--only POLICY]
//
// (--only keeps one policy's rows, e.g. slo-guard while tuning it; it
// works for the table too.)
//
// Either mode can make the simulated machine less ideal (both off by
// default, so that the figures in docs/scaling.md reproduce):
//
//   --stalls RATE      machine stalls per second (every worker pauses at
//                      once; scaling/lab/simulator.hpp), drawn per seed
//   --stall-ms MS      each stall's length (100 ms unless given)
//   --overshoot F      service times F times the drawn ones (e.g. 1.08)
//
// The pool: 2 ms per event on average (lognormal, scv 1.5), threads start
// in 5 ms, a 20 ms queue-wait SLO, 100 ms ticks. The traces are scaled to
// C = 16 000 events/s, what 32 workers serve, but the pool may grow to 48
// workers: at the traces' peaks (1.0C in the flash sale) the load is then
// 2/3 of the maximum pool, not all of it -- at utilisation 1 no policy can
// meet any wait SLO (a fixed 32-worker pool met it for ~53% of the flash
// sale's events), and the comparison would be about who fails least. The
// trace shapes are as documented in scaling/lab/traces.hpp.
//
// Recovery (columns "cap rec" and "SLO rec", the worst over the trace's
// bursts and seeds, "never" if a burst ended first): scaling/lab/
// simulator.hpp defines them. A burst starts when the load reaches its
// burst level (the flash sale's plateau at 11 s, after its 1 s rise) and
// needs what the clairvoyant oracle staffs for that level (ErlangSlo on the
// true rate, eps 0.01). The target is 2 ticks + the thread start
// delay = 205 ms.
//
// "oracle" is that clairvoyant policy: ErlangSlo on the trace's true rate
// and service time over the coming tick, never rate-limited and free to
// shrink at once (no down-stabilisation): the cost floor, not a contender.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
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
namespace scaling = fnbus::scaling;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kTraceWorkers = 32;  // C = kTraceWorkers / kMeanService
constexpr std::size_t kMaxWorkers = 48;    // headroom over C
constexpr double kMeanService = 0.002;
constexpr double kServiceScv = 1.5;
constexpr auto kSlo = 20ms;
constexpr double kInf = std::numeric_limits<double>::infinity();

using PolicyPtr = std::unique_ptr<scaling::ScalingPolicy>;

// How far the simulated machine is from an ideal one (--stalls,
// --stall-ms, --overshoot).
struct Machine {
  double stalls_per_second = 0;
  double stall_ms = 100;
  double overshoot = 1;
};

struct Contender {
  std::string name;
  std::string setting;  // the swept parameter, or "default"
  std::function<PolicyPtr(const lab::Trace&)> make;
  bool unconstrained = false;  // the oracle: governor limits lifted
};

// Means over seeds, except recovery: the worst over bursts and seeds (ms;
// +inf: never; NaN: the trace has no burst).
struct Score {
  double met = 0;                      // fraction of events within the SLO
  double p99 = 0, p999 = 0, resp = 0;  // ms
  double cost = 0;                     // worker-seconds
  double actions = 0;                  // per minute
  double capacity_recovery = std::nan("");
  double slo_recovery = std::nan("");
};

lab::SimulationOptions lab_options() {
  return {.tick = 100ms,
          .thread_start_delay = 5ms,
          .wait_slo = kSlo,
          .governor = {.min_workers = 1, .max_workers = kMaxWorkers},
          .fast_window = 1s,
          .slow_window = 30s,
          .initial_workers = 1};
}

std::unique_ptr<scaling::ErlangSlo> slo_model() {
  return *scaling::ErlangSlo::Create({.wait_slo = kSlo});
}

// ErlangSlo's staffing for the true load at `t`.
double true_need(const scaling::ErlangSlo& model, const lab::Trace& trace,
                 std::int64_t t, std::uint64_t queue_depth = 0) {
  scaling::LoadSnapshot truth;
  truth.service_time_mean = kMeanService * trace.service_multiplier(t);
  truth.service_time_scv = kServiceScv;
  truth.queue_depth = queue_depth;
  truth.min_workers = 1;
  truth.max_workers = kMaxWorkers;
  return model.target_for(truth, trace.rate(t));
}

PolicyPtr make_oracle(const lab::Trace& trace) {
  const lab::SimulationOptions options = lab_options();
  const std::int64_t horizon =
      (options.tick + options.thread_start_delay).count();
  return scaling::make_policy("oracle", [model = slo_model(), &trace, horizon](
                                            const scaling::LoadSnapshot& load) {
    // Zero lag: staff now for the most the next tick will need.
    const std::int64_t now = load.now.time_since_epoch().count();
    double need = 0;
    for (std::int64_t t = now; t <= now + horizon; t += 5'000'000) {
      need = std::max(need, true_need(*model, trace, t, load.queue_depth));
    }
    return scaling::ScalingDecision{need, "oracle", /*panic=*/true};
  });
}

Contender hpa(double utilisation) {
  return {"hpa", fmt::format("u*={:.2f}", utilisation),
          [utilisation](const lab::Trace&) -> PolicyPtr {
            return *scaling::UtilizationRatio::Create(
                {.target_utilisation = utilisation});
          }};
}

Contender kpa(double target) {
  return {"kpa", fmt::format("t={:.2f}", target),
          [target](const lab::Trace&) -> PolicyPtr {
            return *scaling::TargetConcurrency::Create({.target = target});
          }};
}

Contender slo_guard() {
  return {"slo-guard", "default", [](const lab::Trace&) -> PolicyPtr {
            return *scaling::SloGuard::Create({.slo = {.wait_slo = kSlo}});
          }};
}

Contender oracle() { return {"oracle", "floor", make_oracle, true}; }

std::vector<Contender> contenders() {
  return {
      {"fixed-max", "default",
       [](const lab::Trace&) -> PolicyPtr {
         return *scaling::Fixed::Create(kMaxWorkers);
       }},
      hpa(0.7),
      kpa(1.0),
      {"adaptive-cap", "default",
       [](const lab::Trace&) -> PolicyPtr {
         return *scaling::AdaptiveCap::Create({});
       }},
      {"erlang-slo", "default",
       [](const lab::Trace&) -> PolicyPtr { return slo_model(); }},
      slo_guard(),
      oracle(),
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

// The trace's bursts, each needing what the oracle staffs for its level.
std::vector<lab::Burst> bursts_of(const lab::Trace& trace) {
  const auto model = slo_model();
  std::vector<lab::Burst> bursts;
  for (const lab::BurstWindow& window : trace.bursts) {
    const double need = true_need(*model, trace, window.start_ns);
    bursts.push_back({.start_ns = window.start_ns,
                      .end_ns = window.end_ns,
                      .workers = static_cast<std::size_t>(std::ceil(need))});
  }
  return bursts;
}

double worst(double so_far, const std::optional<std::int64_t>& recovery_ns) {
  const double ms =
      recovery_ns ? static_cast<double>(*recovery_ns) / 1e6 : kInf;
  return std::isnan(so_far) ? ms : std::max(so_far, ms);
}

// Adds one run to the sums in `score` (divided by the seeds at the end).
void add_run(Score& score, const lab::SimulationResult& result) {
  score.met += 1 - result.violation_fraction();
  score.p99 += result.wait.quantile_nanos(0.99) / 1e6;
  score.p999 += result.wait.quantile_nanos(0.999) / 1e6;
  score.resp += result.response.quantile_nanos(0.99) / 1e6;
  score.cost += result.worker_seconds;
  score.actions += result.actions_per_minute;
  for (const lab::BurstRecovery& recovery : result.recoveries) {
    score.capacity_recovery =
        worst(score.capacity_recovery, recovery.capacity_ns);
    score.slo_recovery = worst(score.slo_recovery, recovery.slo_ns);
  }
}

// Runs `contender` on `trace` for seeds 1..seeds; writes the first seed's
// timeline to `csv` unless it is empty. Empty on a simulation error.
std::optional<Score> evaluate(const lab::Trace& trace,
                              const Contender& contender, int seeds,
                              const Machine& machine, const std::string& csv) {
  auto service =
      lab::ServiceTimeDistribution::Lognormal(kMeanService, kServiceScv);
  lab::SimulationOptions options = lab_options();
  if (contender.unconstrained) {
    options.governor.max_down_fraction = 1;
    options.governor.down_stabilisation = 0s;
  }
  options.service_overshoot = machine.overshoot;
  Score score;
  for (int seed = 1; seed <= seeds; ++seed) {
    options.stalls = {
        .per_second = machine.stalls_per_second,
        .length = std::chrono::duration_cast<fnbus::Duration>(
            std::chrono::duration<double, std::milli>(machine.stall_ms)),
        .seed = static_cast<std::uint64_t>(seed)};
    lab::Random random(static_cast<std::uint64_t>(seed));
    const lab::SimulationInput input{
        lab::poisson_arrivals(trace, random),
        [&](std::int64_t start) {
          const double slower = trace.service_multiplier(start);
          return static_cast<std::int64_t>(
              static_cast<double>(service->sample_ns(random)) * slower);
        },
        trace.duration_ns, bursts_of(trace)};
    auto policy = contender.make(trace);
    auto result = lab::simulate(input, *policy, options);
    if (!result.ok()) {
      fmt::print(stderr, "{}\n", result.status().ToString());
      return std::nullopt;
    }
    add_run(score, *result);
    if (seed == 1 && !csv.empty()) write_csv(csv, *result);
  }
  const double n = seeds;
  for (double* mean : {&score.met, &score.p99, &score.p999, &score.resp,
                       &score.cost, &score.actions}) {
    *mean /= n;
  }
  return score;
}

std::string ms_text(double ms) {
  if (std::isnan(ms)) return "-";
  if (std::isinf(ms)) return "never";
  return fmt::format("{:.0f}ms", ms);
}

bool run_table(const std::vector<lab::Trace>& traces, int seeds,
               const Machine& machine, const std::string& out_dir,
               const std::string& only) {
  fmt::print("{:<12} {:<11} {:>8} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8} {:>8}\n",
             "policy", "trace", "SLO met", "p99 wait", "p999 wait", "p99 resp",
             "worker-s", "actions/m", "cap rec", "SLO rec");
  for (const lab::Trace& trace : traces) {
    for (const Contender& contender : contenders()) {
      if (!only.empty() && contender.name != only) continue;
      const auto score = evaluate(
          trace, contender, seeds, machine,
          fmt::format("{}/{}_{}.csv", out_dir, contender.name, trace.name));
      if (!score) return false;
      fmt::print(
          "{:<12} {:<11} {:>7.2f}% {:>7.1f}ms {:>7.1f}ms {:>8.1f}ms {:>9.0f} "
          "{:>9.1f} {:>8} {:>8}\n",
          contender.name, trace.name, 100 * score->met, score->p99, score->p999,
          score->resp, score->cost, score->actions,
          ms_text(score->capacity_recovery), ms_text(score->slo_recovery));
    }
  }
  return true;
}

struct SweepRow {
  std::string trace;
  Contender contender;
  Score score;
};

std::vector<Contender> sweep_contenders() {
  std::vector<Contender> out;
  // Up to the most each allows (u* <= 1) or past where it stops meeting
  // the SLO (t = 1 is Knative's default), so that the best-tuned setting
  // is inside the range, not at its edge.
  for (int u = 30; u <= 100; u += 5) out.push_back(hpa(u / 100.0));
  for (int t = 20; t <= 120; t += 5) out.push_back(kpa(t / 100.0));
  out.push_back(slo_guard());
  out.push_back(oracle());
  // The oracle under the same governor as the contenders: how much of
  // their cost over the floor is the governor's hold after a burst.
  Contender governed = oracle();
  governed.setting = "governed";
  governed.unconstrained = false;
  out.push_back(governed);
  return out;
}

// The cheapest row of `family` on `trace` whose attainment is >= `floor`.
const SweepRow* cheapest(const std::vector<SweepRow>& rows,
                         const std::string& trace, const std::string& family,
                         double floor) {
  const SweepRow* best = nullptr;
  for (const SweepRow& row : rows) {
    if (row.trace != trace || row.contender.name != family) continue;
    if (row.score.met < floor) continue;
    if (best == nullptr || row.score.cost < best->score.cost) best = &row;
  }
  return best;
}

// The row of `family` on `trace` with the highest attainment.
const SweepRow* most_met(const std::vector<SweepRow>& rows,
                         const std::string& trace, const std::string& family) {
  const SweepRow* best = nullptr;
  for (const SweepRow& row : rows) {
    if (row.trace != trace || row.contender.name != family) continue;
    if (best == nullptr || row.score.met > best->score.met) best = &row;
  }
  return best;
}

bool is_oracle(const SweepRow& row) { return row.contender.name == "oracle"; }

// No other row on the trace is at least as good in both attainment and
// cost and better in one (the oracles excluded: they are no contenders).
bool on_frontier(const std::vector<SweepRow>& rows, const SweepRow& row) {
  if (is_oracle(row)) return false;
  for (const SweepRow& other : rows) {
    if (other.trace != row.trace || is_oracle(other)) continue;
    const bool no_worse =
        other.score.met >= row.score.met && other.score.cost <= row.score.cost;
    const bool better =
        other.score.met > row.score.met || other.score.cost < row.score.cost;
    if (no_worse && better) return false;
  }
  return true;
}

void print_sweep_row(const SweepRow& row) {
  fmt::print("{:<11} {:<10} {:<8} {:>8.2f}% {:>9.0f} {:>8} {:>8}\n", row.trace,
             row.contender.name, row.contender.setting, 100 * row.score.met,
             row.score.cost, ms_text(row.score.capacity_recovery),
             ms_text(row.score.slo_recovery));
}

void print_comparison(const std::vector<SweepRow>& rows,
                      const std::string& trace, const SweepRow& guard) {
  constexpr double kFloor = 0.99;
  for (const char* family : {"hpa", "kpa"}) {
    const SweepRow* best = cheapest(rows, trace, family, kFloor);
    if (best == nullptr) {
      const SweepRow* top = most_met(rows, trace, family);
      fmt::print("  best-tuned {} at >= 99%: none (best {} {:.2f}%)\n", family,
                 top->contender.setting, 100 * top->score.met);
      continue;
    }
    fmt::print(
        "  best-tuned {} at >= 99%: {} {:.2f}% {:.0f} worker-s; slo-guard "
        "{:+.1f}% cost\n",
        family, best->contender.setting, 100 * best->score.met,
        best->score.cost, 100 * (guard.score.cost / best->score.cost - 1));
  }
}

const SweepRow* find_row(const std::vector<SweepRow>& rows,
                         const std::string& trace, const std::string& name,
                         const std::string& setting) {
  for (const SweepRow& row : rows) {
    if (row.trace == trace && row.contender.name == name &&
        row.contender.setting == setting) {
      return &row;
    }
  }
  return nullptr;
}

void print_summary(const std::vector<SweepRow>& rows,
                   const std::string& trace) {
  const SweepRow* guard = find_row(rows, trace, "slo-guard", "default");
  const SweepRow* floor = find_row(rows, trace, "oracle", "floor");
  const SweepRow* governed = find_row(rows, trace, "oracle", "governed");
  if (guard == nullptr || floor == nullptr || governed == nullptr) return;
  fmt::print(
      "{}: slo-guard {:.2f}% {:.0f} worker-s, worst recovery: capacity {}, "
      "SLO {} (target 205ms)\n",
      trace, 100 * guard->score.met, guard->score.cost,
      ms_text(guard->score.capacity_recovery),
      ms_text(guard->score.slo_recovery));
  fmt::print(
      "  oracle: {:.2f}% {:.0f} worker-s; under the governor {:.2f}% "
      "{:.0f} worker-s\n",
      100 * floor->score.met, floor->score.cost, 100 * governed->score.met,
      governed->score.cost);
  print_comparison(rows, trace, *guard);
}

void write_frontier(const std::string& path,
                    const std::vector<SweepRow>& rows) {
  std::FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) {
    fmt::print(stderr, "cannot write {}\n", path);
    return;
  }
  fmt::print(file,
             "trace,policy,setting,slo_met_pct,worker_seconds,"
             "capacity_recovery_ms,slo_recovery_ms,on_frontier\n");
  for (const SweepRow& row : rows) {
    fmt::print(file, "{},{},{},{:.3f},{:.1f},{},{},{}\n", row.trace,
               row.contender.name, row.contender.setting, 100 * row.score.met,
               row.score.cost, ms_text(row.score.capacity_recovery),
               ms_text(row.score.slo_recovery), on_frontier(rows, row) ? 1 : 0);
  }
  std::fclose(file);
}

bool run_sweep(const std::vector<lab::Trace>& traces, int seeds,
               const Machine& machine, const std::string& out_dir,
               const std::string& only) {
  std::vector<SweepRow> rows;
  fmt::print("{} seeds per setting\n", seeds);
  fmt::print("{:<11} {:<10} {:<8} {:>9} {:>9} {:>8} {:>8}\n", "trace", "policy",
             "setting", "SLO met", "worker-s", "cap rec", "SLO rec");
  for (const lab::Trace& trace : traces) {
    if (trace.name != "flash_sale" && trace.name != "diurnal") continue;
    for (const Contender& contender : sweep_contenders()) {
      if (!only.empty() && contender.name != only) continue;
      const auto score = evaluate(trace, contender, seeds, machine, "");
      if (!score) return false;
      rows.push_back({trace.name, contender, *score});
      print_sweep_row(rows.back());
    }
  }
  fmt::print("\n");
  for (const char* trace : {"flash_sale", "diurnal"}) {
    print_summary(rows, trace);
  }
  write_frontier(out_dir + "/frontier.csv", rows);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int seeds = 0;  // 0: the mode's default
  bool sweep = false;
  std::string only;  // just this policy's rows
  std::string out_dir = ".";
  Machine machine;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--sweep") {
      sweep = true;
    } else if (flag == "--seeds" && i + 1 < argc) {
      seeds = std::max(1, std::atoi(argv[++i]));
    } else if (flag == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (flag == "--out" && i + 1 < argc) {
      out_dir = argv[++i];
    } else if (flag == "--stalls" && i + 1 < argc) {
      machine.stalls_per_second = std::max(0.0, std::atof(argv[++i]));
    } else if (flag == "--stall-ms" && i + 1 < argc) {
      machine.stall_ms = std::max(0.001, std::atof(argv[++i]));
    } else if (flag == "--overshoot" && i + 1 < argc) {
      machine.overshoot = std::max(1.0, std::atof(argv[++i]));
    } else {
      fmt::print(stderr,
                 "usage: scaling_lab [--sweep] [--seeds N] [--out DIR] "
                 "[--only POLICY] [--stalls RATE] [--stall-ms MS] "
                 "[--overshoot F]\n");
      return 2;
    }
  }
  const double capacity = static_cast<double>(kTraceWorkers) / kMeanService;
  auto traces = lab::standard_traces(capacity);
  if (!traces.ok()) return 1;
  const bool ok =
      sweep ? run_sweep(*traces, seeds > 0 ? seeds : 10, machine, out_dir, only)
            : run_table(*traces, seeds > 0 ? seeds : 3, machine, out_dir, only);
  return ok ? 0 : 1;
}
