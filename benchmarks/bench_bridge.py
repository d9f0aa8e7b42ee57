"""CPU speed of torchbridge's conversions against the built-ins, side by side.

    python benchmarks/bench_bridge.py [--quick] [--max-mb 1024] [--out DIR]
    bash scripts/bench.sh [same options]      # set up .venv first, then this

Every comparison runs in this one process, in one run, and the results go to
--out (default benchmarks/results/, gitignored): bridge.md (Markdown tables,
also printed), bridge.json (every figure, with its spread and run counts) and
bridge.png (the plots). Sections:

1. per_call   Per-call time of the zero-copy paths on 1000-element float32
              arrays / tensors: tb.to_tensor vs torch.from_numpy,
              torch.as_tensor (torch.tensor, a copy, for reference);
              tb.to_numpy vs Tensor.numpy(), .numpy(force=True), np.asarray;
              the same on a requires_grad tensor vs .detach().numpy(),
              .numpy(force=True).
2. size       The zero-copy paths at 1 element .. 1 GB of float32: the cost
              must not grow with the size.
3. coercion   float64 -> float32 into a fresh tensor, 1K .. 128M elements:
              tb.to_tensor vs from_numpy(a.astype(float32)), from_numpy(a)
              .float(), as_tensor(a, dtype=float32), and a plain copy of the
              same output bytes into fresh memory (the memory-bandwidth
              reference), as time and GB/s of output.
4. tree       tb.tree_to_tensor / tb.tree_to_numpy of a dict of 64 small
              arrays (float32, and mixed dtypes) vs a dict comprehension of
              the built-ins and torch's own pytree tree_map.

How it times (see time_candidates in harness.py): each candidate is a
statement compiled into a timeit loop (no lambda or call overhead added); a warm-up comes first;
then several samples of a tight loop of many calls, with the order of the
candidates changed from one sample to the next by a balanced Latin square
(balanced_orders), so that each runs first equally often and right after
each other one equally often (a sample inherits the caches, freed memory and
OpenMP state its predecessor left); the sample count is rounded up to whole
squares; the garbage collector is off during samples. A figure is the
median over samples of (sample time / calls); p25/p75, the minimum and the
counts are in the JSON. "ours / best peer" is
our median over the best peer's median: < 1 means torchbridge is faster.
Rows marked as references (torch.tensor, the memcpys) never count as peers.

Section 3 fairness: every timed call makes a fresh output, which is stored in
a one-slot holder, so the previous output is freed by the next call and
outputs never accumulate; the slot is emptied before each sample and the
free of a sample's last output is timed and added, so each call costs
allocate + fault in + convert + free of its own output, as in a user's loop
that converts a new batch each step. No candidate pays for freeing
another's output. (Whether a fresh output faults depends on glibc:
blocks >= 32 MB are always new mmaps, so every call faults them in; smaller
ones are recycled from the heap after the first free and do not fault; the
JSON and the table record the page faults per call.)
The bandwidth reference is the faster of two plain copies of n float32 into
memory freshly allocated the way each library does it: NumPy's
``s32.copy()`` (malloc + memcpy, one thread; NumPy asks for transparent huge
pages on allocations >= 4 MB) and torch's ``s32t.clone()`` (c10 allocator +
ATen's copy, parallel over torch's threads; 4 KB pages unless
THP_MEM_ALLOC_ENABLE=1). Neither converts, so a conversion that also reads
8 bytes per element cannot quite reach it.

The torchbridge measured is whatever ``import torchbridge`` finds (the header
names its path, its git commit, and warns if it is not this checkout or if
csrc/ is newer than the built extension). Not part of the pytest suite; the
smoke test in test/test_benchmarks.py only checks that --quick runs.

The timing, the machine probe and the formatting are in harness.py (shared
with the other benchmarks); the tables and plots in bridge_report.py.
"""

from __future__ import annotations

import argparse
import gc
import operator
import os
import sys
import time

import numpy as np
import torch
from torch.utils._pytree import tree_map

import torchbridge as tb
from bridge_report import plot, to_markdown
from harness import (GB, KB, MB, REPO, Cand, OtherLoad, check, fmt_bytes, fmt_time, log,
                     loop_overhead_ns, machine_info, summarise, time_candidates, write_results)

# Namespace the timed statements run in (timeit globals).
NS: dict = {"np": np, "torch": torch, "tb": tb, "tree_map": tree_map,
            "numpy_force": operator.methodcaller("numpy", force=True)}


# ---------------------------------------------------------------------------
# sections


def sec_per_call(cfg) -> dict:
    rng = np.random.default_rng(0)
    NS["a"] = rng.random(1000, dtype=np.float32)
    NS["t"] = torch.rand(1000)
    NS["g"] = torch.rand(1000, requires_grad=True)
    groups = [
        ("to_tensor", "1000 float32 ndarray -> tensor", "a", [
            Cand("tb.to_tensor(a)", "ours"), Cand("torch.from_numpy(a)"),
            Cand("torch.as_tensor(a)"),
            Cand("torch.tensor(a)", "ref", note="(copies; reference, not a peer)")]),
        ("to_numpy", "1000 float32 tensor -> ndarray", "t", [
            Cand("tb.to_numpy(t)", "ours"), Cand("t.numpy()"),
            Cand("t.numpy(force=True)"), Cand("np.asarray(t)")]),
        ("to_numpy_grad", "requires_grad tensor -> ndarray", "g", [
            Cand("tb.to_numpy(g)", "ours"), Cand("g.detach().numpy()"),
            Cand("g.numpy(force=True)")]),
    ]
    rows, problems = [], []
    for key, what, src, cands in groups:
        probs, shares = check(cands, NS, NS[src])
        problems += probs
        stats = time_candidates(cands, NS, number=cfg.calls, samples=cfg.samples,
                                warmup=cfg.calls // 4)
        row = {"key": key, "what": what, **summarise(cands, stats)}
        for c in row["candidates"]:
            c["zero_copy"] = shares[c["label"]]
        rows.append(row)
        log(f"  {what}: ours {row['ours_s'] * 1e9:.0f} ns, best peer "
            f"{row['best_peer_s'] * 1e9:.0f} ns ({row['best_peer']})")
    for k in ("a", "t", "g"):
        del NS[k]
    return {"title": "Per-call time of the zero-copy paths", "rows": rows,
            "problems": problems, "unit": "ns per call"}


def sec_size(cfg) -> dict:
    sizes = [4, KB, MB, 64 * MB, GB]
    sizes = [s for s in sizes if s <= cfg.max_mb * MB] or [4]
    groups = [("to_tensor", "a", [Cand("tb.to_tensor(a)", "ours"), Cand("torch.from_numpy(a)")]),
              ("to_numpy", "t", [Cand("tb.to_numpy(t)", "ours"), Cand("t.numpy(force=True)")])]
    rows, problems = [], []
    for nbytes in sizes:
        n = nbytes // 4
        NS["a"] = np.full(n, 1.5, dtype=np.float32)  # touched: real pages
        NS["t"] = torch.full((n,), 1.5)
        row = {"bytes": nbytes, "elements": n}
        for key, src, cands in groups:
            probs, shares = check(cands, NS, NS[src])
            problems += [f"{fmt_bytes(nbytes)}: {p}" for p in probs]
            problems += [f"{fmt_bytes(nbytes)}: `{lbl}` copied" for lbl, s in shares.items()
                         if not s]
            stats = time_candidates(cands, NS, number=cfg.size_calls, samples=cfg.samples,
                                    warmup=cfg.size_calls // 4)
            row[key] = summarise(cands, stats)
        rows.append(row)
        log(f"  {fmt_bytes(nbytes)}: to_tensor {row['to_tensor']['ours_s'] * 1e9:.0f} ns "
            f"vs {row['to_tensor']['best_peer_s'] * 1e9:.0f}; to_numpy "
            f"{row['to_numpy']['ours_s'] * 1e9:.0f} ns vs "
            f"{row['to_numpy']['best_peer_s'] * 1e9:.0f}")
        del NS["a"], NS["t"]
        gc.collect()
    return {"title": "Zero-copy cost against size", "rows": rows, "problems": problems,
            "unit": "ns per call"}


# (elements, calls per sample, samples) for section 3; samples >= 5 always.
COERCION_PLAN = [(1 << 10, 2000, 31), (1 << 14, 300, 31), (1 << 18, 30, 21),
                 (1 << 22, 3, 21), (1 << 25, 1, 15), (1 << 27, 1, 9)]
COERCION_PLAN_QUICK = [(1 << 10, 500, 7), (1 << 14, 100, 7), (1 << 18, 10, 5),
                       (1 << 22, 1, 5)]


def sec_coercion(cfg) -> dict:
    plan = COERCION_PLAN_QUICK if cfg.quick else COERCION_PLAN
    plan = [p for p in plan if p[0] * 8 <= cfg.max_mb * MB] or plan[:1]
    cands = [Cand("tb.to_tensor(a)", "ours", short="ours"),
             Cand("torch.from_numpy(a.astype(np.float32))", short="astype"),
             Cand("torch.from_numpy(a).float()", short=".float()"),
             Cand("torch.as_tensor(a, dtype=torch.float32)", short="as_tensor"),
             Cand("s32.copy()", "ref", "memcpy, numpy: s32.copy()", short="memcpy numpy"),
             Cand("s32t.clone()", "ref", "memcpy, torch: s32t.clone()",
                  short="memcpy torch")]
    rng = np.random.default_rng(0)
    rows, problems = [], []
    for n, number, samples in plan:
        NS["a"] = rng.random(n)  # float64
        NS["s32"] = rng.random(n, dtype=np.float32)
        NS["s32t"] = torch.from_numpy(NS["s32"].copy())
        probs, _ = check(cands[:4], NS)  # the memcpys copy other data: not compared
        problems += [f"{n} elements: {p}" for p in probs]
        gc.collect()
        stats = time_candidates(cands, NS, number=number, samples=samples,
                                warmup=max(1, number // 2), keep=True)
        row = {"elements": n, "output_bytes": 4 * n, **summarise(cands, stats)}
        for c in row["candidates"]:
            c["output_GBps"] = 4 * n / c["median_s"] / 1e9
        rows.append(row)
        log(f"  {n} elements: ours {fmt_time(row['ours_s'])}, best peer "
            f"{fmt_time(row['best_peer_s'])}, memcpy {fmt_time(row['best_ref_s'])}")
        del NS["a"], NS["s32"], NS["s32t"]
        gc.collect()
    return {"title": "float64 -> float32 coercion into a fresh tensor", "rows": rows,
            "problems": problems, "unit": "seconds per call"}


def sec_tree(cfg) -> dict:
    rng = np.random.default_rng(0)
    mixed = [np.float32, np.float16, np.int64, np.int32, np.int16, np.uint8, np.bool_,
             np.complex64]

    def leaf(i, dt):
        x = rng.standard_normal(256) * 100
        return (x > 0) if dt is np.bool_ else x.astype(dt)

    variants = [("float32", {f"leaf{i}": leaf(i, np.float32) for i in range(64)}),
                ("mixed dtypes", {f"leaf{i}": leaf(i, mixed[i % len(mixed)]) for i in range(64)})]
    rows, problems = [], []
    for name, tree in variants:
        NS["tree"] = tree
        NS["ttree"] = {k: torch.from_numpy(v.copy()) for k, v in tree.items()}
        for key, cands in [
            ("tree_to_tensor", [Cand("tb.tree_to_tensor(tree)", "ours"),
                                Cand("{k: torch.from_numpy(v) for k, v in tree.items()}"),
                                Cand("tree_map(torch.from_numpy, tree)")]),
            ("tree_to_numpy", [Cand("tb.tree_to_numpy(ttree)", "ours"),
                               Cand("{k: v.numpy(force=True) for k, v in ttree.items()}"),
                               Cand("tree_map(numpy_force, ttree)",
                                    label="tree_map(lambda v: v.numpy(force=True), ttree)",
                                    note="(the lambda is a methodcaller made once)")]),
        ]:
            probs, _ = check(cands, NS)
            problems += [f"{name} {key}: {p}" for p in probs]
            stats = time_candidates(cands, NS, number=cfg.tree_calls, samples=cfg.samples,
                                    warmup=cfg.tree_calls // 4)
            row = {"key": key, "what": f"{key}, dict of 64 x 256 {name}",
                   **summarise(cands, stats)}
            rows.append(row)
            log(f"  {key}, {name}: ours {row['ours_s'] * 1e6:.1f} us, best peer "
                f"{row['best_peer_s'] * 1e6:.1f} us")
        del NS["tree"], NS["ttree"]
    return {"title": "Trees: a dict of 64 small arrays", "rows": rows, "problems": problems,
            "unit": "seconds per call"}


SECTIONS = {"per_call": sec_per_call, "size": sec_size, "coercion": sec_coercion,
            "tree": sec_tree}


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Sections: " + ", ".join(SECTIONS))
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"),
                   help="output folder (default: benchmarks/results/)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run (well under a minute): fewer calls and samples, "
                        "sizes up to 64 MB")
    p.add_argument("--max-mb", type=int, default=None,
                   help="largest array in sections 2 and 3, in MB of the source array "
                        "(default 1024; 64 with --quick)")
    p.add_argument("--samples", type=int, default=None,
                   help="samples per figure in sections 1, 2 and 4 (default 31; 5 with --quick)")
    p.add_argument("--calls", type=int, default=None,
                   help="calls per sample in section 1 (default 20000; 2000 with --quick)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads(N) first (default: leave torch's default)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma-separated subset of: " + ", ".join(SECTIONS))
    cfg = p.parse_args(argv)
    q = cfg.quick
    cfg.max_mb = cfg.max_mb if cfg.max_mb is not None else (64 if q else 1024)
    cfg.samples = cfg.samples or (5 if q else 31)
    cfg.calls = cfg.calls or (2000 if q else 20000)
    cfg.size_calls = max(100, cfg.calls // 4)
    cfg.tree_calls = 50 if q else 300
    wanted = [x.strip() for x in cfg.sections.split(",") if x.strip()]
    unknown = [x for x in wanted if x not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if cfg.samples < 5:
        p.error("--samples must be >= 5")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    t0, load = time.perf_counter(), OtherLoad()
    res = {"machine": machine_info([os.path.relpath(os.path.abspath(sys.argv[0]))
                                    if sys.argv and sys.argv[0] else "bench_bridge.py"] + argv),
           "config": {"quick": q, "max_mb": cfg.max_mb, "samples": cfg.samples,
                      "calls": cfg.calls, "size_calls": cfg.size_calls,
                      "tree_calls": cfg.tree_calls, "sections": wanted,
                      "threads": torch.get_num_threads()},
           "loop_overhead_ns": loop_overhead_ns(), "sections": {}}
    for w in res["machine"]["warnings"]:
        log(f"warning: {w}")
    for name in SECTIONS:
        if name in wanted:
            log(f"[{name}] ...")
            ts, load = time.perf_counter(), OtherLoad()
            res["sections"][name] = sec = SECTIONS[name](cfg)
            sec["wall_s"] = time.perf_counter() - ts
            sec["other_processes_cores"] = load.cores()
            log(f"[{name}] {sec['wall_s']:.0f} s; other processes used "
                f"{sec['other_processes_cores']:.2f} cores meanwhile")
    res["machine"]["load_average_end"] = list(os.getloadavg())
    res["machine"]["other_processes_cores"] = load.cores()
    res["wall_s"] = time.perf_counter() - t0

    md = to_markdown(res)
    write_results(cfg.out, "bridge", md, res)
    plot(res, os.path.join(cfg.out, "bridge.png"))
    print(md)
    log(f"wrote bridge.md, bridge.json, bridge.png to {cfg.out} ({res['wall_s']:.0f} s)")
    for prob in (p for sec in res["sections"].values() for p in sec["problems"]):
        log(f"problem: {prob}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
