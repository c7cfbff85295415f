#!/usr/bin/env python3
"""Summarise fnbus_bench JSON output as the tables in bench/README.md.

    ./build/bench/bench/fnbus_bench --benchmark_repetitions=5 \
        --benchmark_display_aggregates_only=true \
        --benchmark_out=results.json --benchmark_out_format=json
    python3 bench/summarize.py results.json [more.json ...]

Reads every repetition (not Google Benchmark's aggregates), tags each with
the host's vCPU state from the handoff probes taken before and after it
(near: both probes < 120 ns; far: both >= 120 ns; else mixed), and prints
medians, ratios against the baselines and the targets. Medians and ratios
are also given per state, from repetitions measured in that state only
(at least MIN_REPS_PER_STATE of them, else "-").
"""

import json
import statistics
import sys
from collections import defaultdict

NEAR_LIMIT_NS = 120
# Per-state figures need at least this many repetitions in that state.
MIN_REPS_PER_STATE = 3


def state_of(rep):
    if "handoff_ns" in rep:
        probes = [rep["handoff_ns"], rep.get("handoff_end_ns", rep["handoff_ns"])]
    elif rep["run_name"].startswith("BM_PingPong"):
        probes = [rep["p50_ns"]]
    else:
        return None
    if max(probes) < NEAR_LIMIT_NS:
        return "near"
    if min(probes) >= NEAR_LIMIT_NS:
        return "far"
    return "mixed"


def load(paths):
    reps = defaultdict(list)
    for path in paths:
        with open(path) as f:
            for rep in json.load(f)["benchmarks"]:
                if rep.get("run_type") == "iteration" and not rep.get("error_occurred"):
                    reps[rep["run_name"]].append(rep)
    return reps


def short(name):
    return (name.replace("/iterations:100000", "").replace("/iterations:20000", "")
            .replace("/iterations:2000", "").replace("/iterations:1", "")
            .replace("/manual_time", "").replace("/real_time", ""))


def median(reps, key, state=None):
    values = [r[key] for r in reps
              if key in r and (state is None or state_of(r) == state)]
    if state is not None and len(values) < MIN_REPS_PER_STATE:
        return None
    return statistics.median(values) if values else None


def states(reps):
    counts = defaultdict(int)
    for r in reps:
        counts[state_of(r)] += 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=str) if s)


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "M/s":
        return f"{value / 1e6:.1f} M/s"
    if unit == "%":
        return f"{value:.4f} %"
    if unit == "ns" and value >= 10000:
        return f"{value / 1000:.1f} µs"
    return f"{value:.3g} ns" if unit == "ns" else f"{value:.3g}"


def figures_table(reps):
    print("| benchmark | reps (state) | median | near | far | p99 | p99.9 "
          "| handoff before / after |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rs in reps.items():
        if "p50_ns" in rs[0]:
            main, unit = "p50_ns", "ns"
        elif "items_per_second" in rs[0]:
            main, unit = "items_per_second", "M/s"
        elif "cpu_pct" in rs[0]:
            main, unit = "cpu_pct", "%"
        else:
            main, unit = "cpu_time", "ns"
        p99 = fmt(median(rs, "p99_ns"), "ns") if "p99_ns" in rs[0] else ""
        p999 = fmt(median(rs, "p999_ns"), "ns") if "p999_ns" in rs[0] else ""
        handoff = ""
        if "handoff_ns" in rs[0]:
            end = median(rs, "handoff_end_ns")
            handoff = (f"{median(rs, 'handoff_ns'):.0f} / "
                       f"{'-' if end is None else f'{end:.0f}'} ns")
        label = {"p50_ns": "p50 ", "cpu_time": "CPU ", "cpu_pct": "CPU ",
                 "items_per_second": ""}[main]
        by_state = [fmt(median(rs, main, st), unit) if states(rs) else ""
                    for st in ("near", "far")]
        print(f"| {short(name)} | {len(rs)} ({states(rs) or '-'}) | "
              f"{label}{fmt(median(rs, main), unit)} | {' | '.join(by_state)} | "
              f"{p99} | {p999} | {handoff} |")


# (what, subject, baseline, key, how the ratio is formed, target)
# "ratio" = subject / baseline; "speedup" = baseline / subject (lower is
# better for the key); "gain" = subject / baseline (higher is better).
TARGETS = [
    ("trigger, 1 handler", "BM_Trigger_Handlers/1", "BM_StdFunctionLoop_Handlers/1",
     "cpu_time", "ratio", ("<=", 1.5)),
    ("trigger, 8 handlers", "BM_Trigger_Handlers/8", "BM_StdFunctionLoop_Handlers/8",
     "cpu_time", "ratio", ("<=", 1.2)),
    ("latency p50, spinning worker vs same-rep handoff probe",
     "BM_Latency_FnbusSpinning/iterations:100000/manual_time", None,
     "p50_ns", "per_handoff", ("<=", 3.0)),
    ("latency p50, spinning worker vs BM_PingPong_Before",
     "BM_Latency_FnbusSpinning/iterations:100000/manual_time",
     "BM_PingPong_Before/iterations:100000/manual_time", "p50_ns", "ratio", ("<=", 3.0)),
    ("latency p50, mutex+condvar / fnbus spinning",
     "BM_Latency_FnbusSpinning/iterations:100000/manual_time",
     "BM_Latency_MutexCondvar/iterations:20000/manual_time", "p50_ns", "speedup",
     (">=", 5.0)),
    ("latency p50, parked: mutex+condvar / fnbus",
     "BM_Latency_FnbusParked/iterations:2000/manual_time",
     "BM_Latency_MutexCondvarParked/iterations:2000/manual_time", "p50_ns", "speedup",
     None),
    ("throughput, 1 producer, 2 workers",
     "BM_Throughput_Fnbus/workers:2/real_time/threads:1",
     "BM_Throughput_MutexCondvar/workers:2/real_time/threads:1", "items_per_second",
     "gain", (">=", 3.0)),
    ("throughput, 2 producers, 2 workers",
     "BM_Throughput_Fnbus/workers:2/real_time/threads:2",
     "BM_Throughput_MutexCondvar/workers:2/real_time/threads:2", "items_per_second",
     "gain", None),
    ("throughput, 1 producer, 1 worker",
     "BM_Throughput_Fnbus/workers:1/real_time/threads:1",
     "BM_Throughput_MutexCondvar/workers:1/real_time/threads:1", "items_per_second",
     "gain", None),
    ("throughput, 2 producers, 1 worker",
     "BM_Throughput_Fnbus/workers:1/real_time/threads:2",
     "BM_Throughput_MutexCondvar/workers:1/real_time/threads:2", "items_per_second",
     "gain", None),
    ("idle CPU, 4 workers (% of one core)", "BM_Idle_Fnbus/iterations:1/manual_time",
     None, "cpu_pct", "value", ("<", 1.0)),
    ("metrics: latency p50, histograms on / off",
     "BM_Latency_FnbusSpinning/iterations:100000/manual_time",
     "BM_Latency_FnbusSpinningNoLatency/iterations:100000/manual_time", "p50_ns",
     "ratio", ("<=", 1.10)),
    ("metrics: throughput, 1 producer, 2 workers, histograms on / off",
     "BM_Throughput_Fnbus/workers:2/real_time/threads:1",
     "BM_Throughput_FnbusNoLatency/workers:2/real_time/threads:1", "items_per_second",
     "gain", (">=", 0.90)),
    ("metrics: throughput, 1 producer, 2 workers, 1 event in 16 timed / off",
     "BM_Throughput_FnbusSampled16/workers:2/real_time/threads:1",
     "BM_Throughput_FnbusNoLatency/workers:2/real_time/threads:1", "items_per_second",
     "gain", (">=", 0.90)),
    ("metrics: histogram record, ns per sample (CPU)", "BM_Histogram_Record", None,
     "cpu_time", "value", ("<=", 10.0)),
    ("metrics: histogram record vs plain-array baseline", "BM_Histogram_Record",
     "BM_Histogram_PlainArray", "cpu_time", "ratio", None),
    ("scaling: autoscaler tick, % of one core at 100 ms (64 workers)",
     "BM_Autoscaler_Tick/max_workers:64/warmed:64", None, "core_pct_at_100ms",
     "value", ("<", 1.0)),
    ("scaling: autoscaler tick, % of one core at 100 ms (16 workers)",
     "BM_Autoscaler_Tick/max_workers:16/warmed:16", None, "core_pct_at_100ms",
     "value", ("<", 1.0)),
    ("scaling: throughput, autoscaled (held at 2) / fixed pool of 2",
     "BM_Throughput_Autoscaled/workers:2/min_time:2.000/real_time",
     "BM_Throughput_FixedPool/workers:2/min_time:2.000/real_time",
     "items_per_second", "gain", (">=", 0.95)),
    ("scaling: throughput, resizable without controller / fixed pool of 2",
     "BM_Throughput_ResizableNoAutoscaler/workers:2/min_time:2.000/real_time",
     "BM_Throughput_FixedPool/workers:2/min_time:2.000/real_time",
     "items_per_second", "gain", None),
]


def ratio(reps, subject, baseline, key, how, state):
    if subject not in reps or (baseline and baseline not in reps):
        return None
    if how == "value":
        return median(reps[subject], key, state)
    if how == "per_handoff":
        values = [r[key] / r["handoff_ns"] for r in reps[subject]
                  if state is None or state_of(r) == state]
        if state is not None and len(values) < MIN_REPS_PER_STATE:
            return None
        return statistics.median(values) if values else None
    s = median(reps[subject], key, state)
    b = median(reps[baseline], key, state)
    if s is None or b is None:
        return None
    return b / s if how == "speedup" else s / b


def met(value, target):
    if target is None or value is None:
        return "(info)"
    op, limit = target
    ok = {"<=": value <= limit, ">=": value >= limit, "<": value < limit}[op]
    return "met" if ok else "**missed**"


def verdict(reps, subject, baseline, key, how, target):
    """Judges a target on same-state ratios; all repetitions only when the
    comparison does not depend on the state (trigger, idle) or when no state
    has enough repetitions on both sides."""
    if target is None:
        return "(info)"
    judged = []
    for state in ("near", "far"):
        value = ratio(reps, subject, baseline, key, how, state)
        if value is not None:
            judged.append(f"{met(value, target)} ({state})")
    if judged:
        return ", ".join(judged)
    value = ratio(reps, subject, baseline, key, how, None)
    stateless = state_of(reps[subject][0]) is None if subject in reps else True
    return met(value, target) + ("" if stateless else " (states mixed)")


def targets_table(reps):
    print("| comparison | all reps | near only | far only | target | result |")
    print("|---|---|---|---|---|---|")
    for what, subject, baseline, key, how, target in TARGETS:
        cells = []
        for state in (None, "near", "far"):
            value = ratio(reps, subject, baseline, key, how, state)
            if value is None:
                cells.append("-")
            elif how == "value":
                cells.append(f"{value:.4f}")
            else:
                cells.append(f"{value:.2f}×")
        goal = f"{target[0]} {target[1]}" if target else "-"
        print(f"| {what} | {' | '.join(cells)} | {goal} | "
              f"{verdict(reps, subject, baseline, key, how, target)} |")


def main(paths):
    reps = load(paths)
    figures_table(reps)
    print()
    targets_table(reps)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
