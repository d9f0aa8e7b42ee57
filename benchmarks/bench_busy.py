"""Conversions on a quiet machine and on a busy one, against the built-ins.

    python benchmarks/bench_busy.py [--quick] [--out DIR] [--spinners N]
    bash scripts/bench.sh --busy [same options]

A DataLoader's main process converts batches while its workers keep every
core busy. Parallel code that waits at a barrier for its helper threads then
waits a scheduler timeslice (4-12 ms) for each helper not yet running, on a
call that takes 0.2 ms alone. This benchmark measures what a user sees
there: each case is timed call by call, first on the quiet machine, then
with N spinning processes (one per usable core by default, started and
stopped by this script), and reports the mean per call (stalls included:
the mean is what a training loop pays) and the p99.

Cases, float64 -> float32 into a fresh tensor (what a model wants):
64x3x32x32 (196K elements), 1M and 4M elements, a list of 64 3x32x32
arrays (stacked), and a 64 MB float32 .npy load. Peers are every built-in
way to get the same tensor; the ratio is ours over the best peer's mean in
the same phase. Candidates take turns call by call (in balanced orders:
each first, and right after each other one, equally often), so the load
and the state one call leaves (torch's spinning OpenMP workers) hit all of
them alike. Writes busy.md and busy.json
to --out (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import torchbridge as tb
from harness import (MB, REPO, call_stats, fmt_time, log, machine_info, same_result, time_calls,
                     write_results)

# (name, statement for ours, [peer statements]); `a`/`L`/`path` in NS.
CASES = [
    ("196K (64x3x32x32)", "a", "tb.to_tensor(a)",
     ["torch.from_numpy(a.astype(np.float32))", "torch.from_numpy(a).float()",
      "torch.as_tensor(a, dtype=torch.float32)"]),
    ("1M", "a", "tb.to_tensor(a)",
     ["torch.from_numpy(a.astype(np.float32))", "torch.from_numpy(a).float()",
      "torch.as_tensor(a, dtype=torch.float32)"]),
    ("4M", "a", "tb.to_tensor(a)",
     ["torch.from_numpy(a.astype(np.float32))", "torch.from_numpy(a).float()",
      "torch.as_tensor(a, dtype=torch.float32)"]),
    ("list of 64 x 3x32x32", "L", "tb.to_tensor(L)",
     ["torch.from_numpy(np.stack(L).astype(np.float32))",
      "torch.from_numpy(np.stack(L, dtype=np.float32))",
      "torch.stack([torch.from_numpy(x) for x in L]).float()"]),
    ("load 64 MB .npy", "path", "tb.load(path)",
     ["torch.from_numpy(np.load(path))"]),
]
SHAPES = {"196K (64x3x32x32)": (64, 3, 32, 32), "1M": (1 << 20,), "4M": (1 << 22,)}


def make_inputs(name: str, folder: str) -> dict:
    rng = np.random.default_rng(0)
    if name in SHAPES:
        return {"a": rng.standard_normal(SHAPES[name])}
    if name.startswith("list"):
        return {"L": [rng.standard_normal((3, 32, 32)) for _ in range(64)]}
    path = os.path.join(folder, "x.npy")
    np.save(path, rng.random(16 * MB, dtype=np.float32))
    return {"path": path}


class Spinners:
    """N processes that each keep one core busy until stopped."""

    def __init__(self, n: int):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(n)]
        time.sleep(0.5)  # let the scheduler give them their share

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []


def run_phase(phase: str, cases, inputs, calls: int, seconds: float) -> list[dict]:
    rows = []
    for name, _, ours, peers in cases:
        ns = {"np": np, "torch": torch, "tb": tb, **inputs[name]}
        # Each result lives until the same expression's next call, as a
        # user's output does until the next batch replaces it; at least 20
        # rounds, then until `calls` rounds or `seconds`.
        fns = [eval("lambda: " + e, ns) for e in [ours] + peers]  # noqa: S307 - our own strings
        times = time_calls(fns, calls, min_rounds=21, seconds=seconds, rotate=True, warmup=3,
                           free="next", gc_off=True)
        cand = [{"expr": e, "role": "ours" if i == 0 else "peer", **call_stats(t)}
                for i, (e, t) in enumerate(zip([ours] + peers, times))]
        best = min(cand[1:], key=lambda c: c["mean_s"])
        row = {"case": name, "phase": phase, "candidates": cand, "best_peer": best["expr"],
               "ratio_mean": cand[0]["mean_s"] / best["mean_s"],
               "ratio_p99": cand[0]["p99_s"] / min(c["p99_s"] for c in cand[1:]),
               "usable_threads": tb._C._parallel()[0]}
        rows.append(row)
        log(f"  [{phase}] {name}: ours {fmt_time(cand[0]['mean_s'])} mean, "
            f"{fmt_time(cand[0]['p99_s'])} p99; best peer {fmt_time(best['mean_s'])} "
            f"({best['expr']}); ratio {row['ratio_mean']:.2f}")
    return rows


def check_same(cases, inputs) -> list[str]:
    problems = []
    for name, _, ours, peers in cases:
        ns = {"np": np, "torch": torch, "tb": tb, **inputs[name]}
        want = eval(ours, ns)  # noqa: S307
        for e in peers:
            got = eval(e, ns)  # noqa: S307
            if not same_result(got, want):
                problems.append(f"{name}: {e} differs from {ours}")
    return problems


def to_markdown(res: dict) -> str:
    m = res["machine"]
    out = [f"## Quiet and busy machine: mean and p99 per call ({res['spinners']} spinning "
           f"processes on {m['usable_cores']} cores)", "",
           f"{m['cpu']}, {m['usable_cores']} usable cores, torch {m['torch']} "
           f"({m['torch_threads']} threads), NumPy {m['numpy']}, {m['date'][:10]}. "
           "Mean includes stalls; ratio = ours / best peer's mean in the same phase "
           "(< 1: torchbridge faster).", "",
           "| case | phase | torchbridge mean | p99 | best peer | its mean | p99 | ratio |",
           "|---|---|---:|---:|---|---:|---:|---:|"]
    for r in res["rows"]:
        o = r["candidates"][0]
        b = next(c for c in r["candidates"] if c["expr"] == r["best_peer"])
        out.append(f"| {r['case']} | {r['phase']} | {fmt_time(o['mean_s'])} | "
                   f"{fmt_time(o['p99_s'])} | `{b['expr']}` | {fmt_time(b['mean_s'])} | "
                   f"{fmt_time(b['p99_s'])} | {r['ratio_mean']:.2f} |")
    out += ["", "Every candidate (mean / p99):", ""]
    for r in res["rows"]:
        out.append(f"- {r['case']}, {r['phase']}: " + "; ".join(
            f"`{c['expr']}` {fmt_time(c['mean_s'])} / {fmt_time(c['p99_s'])}"
            for c in r["candidates"]))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    p.add_argument("--quick", action="store_true", help="smoke run: a few calls per case")
    p.add_argument("--spinners", type=int, default=None,
                   help="busy processes (default: one per usable core)")
    p.add_argument("--seconds", type=float, default=None,
                   help="time limit per case and phase (default 8; 0.5 with --quick)")
    cfg = p.parse_args(sys.argv[1:] if argv is None else argv)
    n = cfg.spinners if cfg.spinners is not None else len(os.sched_getaffinity(0))
    calls = 30 if cfg.quick else 2000
    seconds = cfg.seconds if cfg.seconds is not None else (0.5 if cfg.quick else 8.0)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        inputs = {name: make_inputs(name, folder) for name, *_ in CASES}
        problems = check_same(CASES, inputs)
        rows = run_phase("quiet", CASES, inputs, calls, seconds)
        spin = Spinners(n)
        try:
            rows += run_phase("busy", CASES, inputs, calls, seconds)
        finally:
            spin.stop()
    res = {"machine": machine_info(["benchmarks/bench_busy.py"] + (argv or sys.argv[1:])),
           "spinners": n, "rows": rows, "problems": problems,
           "wall_s": time.perf_counter() - t0}
    md = to_markdown(res)
    write_results(cfg.out, "busy", md, res)
    print(md)
    for prob in problems:
        log(f"problem: {prob}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
