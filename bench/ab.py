#!/usr/bin/env python3
"""A/B of two fnbus_bench builds on one host.

usage: ab.py BASE NEW FILTER ROUNDS OUT.json [REPS]

Runs BASE and NEW alternately (the order swapped every round, so a drift
of the host hits both), REPS repetitions each per round, and prints per
benchmark the median of each side and new/base: over all repetitions, and
over the near / far repetitions (handoff probes < 120 ns / >= 120 ns, see
README.md) where at least 3 per side exist. The value compared is
items_per_second (throughput), p50_ns (latency) or CPU time (the rest).
OUT.json keeps every repetition's value.
"""
import json, subprocess, sys, statistics, collections
base, new, filt, rounds, out = sys.argv[1:6]
reps = sys.argv[6] if len(sys.argv) > 6 else "3"
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for r in range(int(rounds)):
    for tag, exe in (("base", base), ("new", new)) if r % 2 == 0 else (("new", new), ("base", base)):
        res = subprocess.run([exe, f"--benchmark_filter={filt}", f"--benchmark_repetitions={reps}",
                              "--benchmark_format=json"], capture_output=True, text=True, check=True)
        for b in json.loads(res.stdout)["benchmarks"]:
            if b.get("run_type") != "iteration": continue
            name = b["run_name"]
            h = b.get("handoff_ns"); he = b.get("handoff_end_ns")
            state = "-" if h is None else ("near" if h < 120 and he < 120 else "far" if h >= 120 and he >= 120 else "mixed")
            if "items_per_second" in b: v = b["items_per_second"]
            elif "p50_ns" in b: v = b["p50_ns"]
            else: v = b["cpu_time"]
            rows[name][(tag, state)].append(v)
            rows[name][(tag, "all")].append(v)
json.dump({k: {f"{t}/{s}": v for (t, s), v in d.items()} for k, d in rows.items()}, open(out, "w"), indent=1)
for name, d in rows.items():
    line = [name]
    for st in ("all", "near", "far"):
        b, n = d.get(("base", st), []), d.get(("new", st), [])
        if len(b) >= 3 and len(n) >= 3:
            mb, mn = statistics.median(b), statistics.median(n)
            line.append(f"{st}: base {mb:.4g} new {mn:.4g} new/base {mn/mb:.3f} (n={len(b)},{len(n)})")
    print(" | ".join(line))
