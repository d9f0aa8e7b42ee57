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

How it times (see time_candidates): each candidate is a statement compiled
into a timeit loop (no lambda or call overhead added); a warm-up comes first;
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
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import operator
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
import timeit

import numpy as np
import torch
from torch.utils._pytree import tree_map

import torchbridge as tb

KB, MB, GB = 1 << 10, 1 << 20, 1 << 30
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Namespace the timed statements run in (timeit globals).
NS: dict = {"np": np, "torch": torch, "tb": tb, "tree_map": tree_map,
            "numpy_force": operator.methodcaller("numpy", force=True)}


class Cand:
    """One contender: a label, the expression timed, and its role."""

    def __init__(self, expr: str, role: str = "peer", label: str | None = None,
                 short: str | None = None, note: str = ""):
        assert role in ("ours", "peer", "ref")
        self.expr, self.role, self.label = expr, role, label or expr
        self.short, self.note = short or self.label, note

    def to_json(self, stats: dict) -> dict:
        return {"label": self.label, "short": self.short, "note": self.note,
                "expr": self.expr, "role": self.role, **stats}


# ---------------------------------------------------------------------------
# timing


def balanced_orders(m: int) -> list[list[int]]:
    """Orders of m candidates in which each one runs first equally often and
    right after each other one equally often (a Williams design: a Latin
    square balanced for the first-order carry-over effect).

    Why not a plain rotation: a cyclic shift keeps neighbours, so every
    candidate would always run right after the same other one and inherit
    its state (which memory it freed, what it left in the caches, whether
    the OpenMP workers still spin). Measured at 4M float64 -> float32: the
    candidate in the slot after the memcpys was 15-20% slower, whichever it
    was (ours and torch.as_tensor swapped slots and swapped results).
    """
    if m == 1:
        return [[0]]
    first, lo, hi = [0], 1, m - 1
    while len(first) < m:
        first.append(lo)
        lo += 1
        if len(first) < m:
            first.append(hi)
            hi -= 1
    rows = [[(x + r) % m for x in first] for r in range(m)]
    # For odd m a square balances carry-over only together with its mirror.
    return rows + [row[::-1] for row in rows] if m % 2 else rows


def time_candidates(cands: list[Cand], *, number: int, samples: int, warmup: int,
                    keep: bool = False) -> list[dict]:
    """Median seconds per call of each candidate, interleaved in balanced orders.

    keep=False times the bare expression (its result is dropped at once).
    keep=True times ``_keep[0] = expr``: each result lives until the next
    call replaces it, and that free is inside the timed loop; the slot is
    empty when a sample starts and the last output's free is timed too and
    added, so a sample of k calls costs k x (allocate, fault in, convert,
    free), the amortised cost in a user's loop, and no candidate ever pays
    for freeing another's output. Besides the times, the minor page
    faults, the process CPU time and the calling thread's CPU time per call
    are recorded (measured around, not inside, the timed loop).
    """
    keep_slot = NS["_keep"] = [None]
    timers = [timeit.Timer(("_keep[0] = " if keep else "") + c.expr, globals=NS)
              for c in cands]
    clock = time.perf_counter
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for t in timers:
            t.timeit(warmup)
            keep_slot[0] = None
        per = [[] for _ in cands]
        faults = [[] for _ in cands]
        cpu = [[] for _ in cands]
        main = [[] for _ in cands]
        order = balanced_orders(len(cands))
        samples = -(-samples // len(order)) * len(order)  # whole rounds only
        for s in range(samples):
            for i in order[s % len(order)]:
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                c0, m0 = time.process_time(), time.thread_time()
                wall = timers[i].timeit(number)
                if keep:
                    f_start = clock()
                    keep_slot[0] = None
                    wall += clock() - f_start
                c1, m1 = time.process_time(), time.thread_time()
                f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                per[i].append(wall / number)
                faults[i].append((f1 - f0) / number)
                cpu[i].append((c1 - c0) / wall if wall > 0 else float("nan"))
                main[i].append((m1 - m0) / wall if wall > 0 else float("nan"))
    finally:
        NS["_keep"] = [None]
        if gc_was_enabled:
            gc.enable()
    out = []
    for p, f, c, mt in zip(per, faults, cpu, main):
        q = statistics.quantiles(p, n=4) if len(p) >= 2 else [p[0]] * 3
        out.append({"median_s": statistics.median(p), "p25_s": q[0], "p75_s": q[2],
                    "min_s": min(p), "max_s": max(p), "calls_per_sample": number,
                    "samples": samples, "warmup_calls": warmup,
                    "page_faults_per_call": statistics.median(f),
                    "cpu_per_wall": statistics.median(c),
                    "main_thread_cpu_per_wall": statistics.median(mt)})
    return out


def summarise(cands: list[Cand], stats: list[dict]) -> dict:
    """Attach ratios to the best peer (and to the best reference)."""
    rows = [c.to_json(s) for c, s in zip(cands, stats)]
    peers = [r for r in rows if r["role"] == "peer"]
    refs = [r for r in rows if r["role"] == "ref"]
    ours = next(r for r in rows if r["role"] == "ours")
    best = min(peers, key=lambda r: r["median_s"])
    for r in rows:
        r["vs_best_peer"] = r["median_s"] / best["median_s"]
    res = {"candidates": rows, "ours": ours["label"], "best_peer": best["label"],
           "ours_s": ours["median_s"], "best_peer_s": best["median_s"],
           "ratio_to_best_peer": ours["median_s"] / best["median_s"]}
    if refs:
        ref = min(refs, key=lambda r: r["median_s"])
        res.update(best_ref=ref["label"], best_ref_s=ref["median_s"],
                   ratio_to_best_ref=ours["median_s"] / ref["median_s"])
    return res


# ---------------------------------------------------------------------------
# checks: the contenders must compute the same thing


def _as_np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    return np.asarray(x)


def _data_ptr(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.data_ptr()
    return x.__array_interface__["data"][0]


def check(cands: list[Cand], source=None) -> tuple[list[str], dict[str, bool]]:
    """Evaluate each expression once; compare with ours; note zero-copy.

    Returns (problems, shares) where shares[label] says whether the result
    shares memory with `source` (when given).
    """
    problems, shares = [], {}
    ours = next(c for c in cands if c.role == "ours")
    ref = eval(ours.expr, NS)  # noqa: S307 (our own strings)
    for c in cands:  # one at a time: at 128M elements each result is 512 MB
        r = ref if c is ours else eval(c.expr, NS)  # noqa: S307
        if isinstance(ref, dict):
            ok = r.keys() == ref.keys() and all(
                _as_np(r[k]).dtype == _as_np(ref[k]).dtype
                and np.array_equal(_as_np(r[k]), _as_np(ref[k])) for k in ref)
        else:
            x, y = _as_np(r), _as_np(ref)
            ok = x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
        if not ok:
            problems.append(f"`{c.label}` does not give the same result as ours")
        if source is not None:
            shares[c.label] = _data_ptr(r) == _data_ptr(source)
        del r
    del ref
    return problems, shares


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
        probs, shares = check(cands, NS[src])
        problems += probs
        stats = time_candidates(cands, number=cfg.calls, samples=cfg.samples,
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
            probs, shares = check(cands, NS[src])
            problems += [f"{fmt_bytes(nbytes)}: {p}" for p in probs]
            problems += [f"{fmt_bytes(nbytes)}: `{lbl}` copied" for lbl, s in shares.items()
                         if not s]
            stats = time_candidates(cands, number=cfg.size_calls, samples=cfg.samples,
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
        probs, _ = check(cands[:4])  # the memcpys copy other data: not compared
        problems += [f"{n} elements: {p}" for p in probs]
        gc.collect()
        stats = time_candidates(cands, number=number, samples=samples,
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
            probs, _ = check(cands)
            problems += [f"{name} {key}: {p}" for p in probs]
            stats = time_candidates(cands, number=cfg.tree_calls, samples=cfg.samples,
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
# the machine


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


class OtherLoad:
    """How many cores' worth of CPU other processes used while we measured.

    /proc/stat's busy time of the whole machine (hypervisor steal included)
    minus this process's own CPU time, over the wall time: 0 on a quiet
    machine; on 2 cores, ~1 means another job kept a core busy, which stalls
    ATen's parallel regions.
    """

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        line = _read("/proc/stat").split("\n", 1)[0].split()
        if not line or line[0] != "cpu":
            return float("nan")
        v = [int(x) for x in line[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    def cores(self) -> float:
        wall = time.perf_counter() - self.t0
        other = (self._busy() - self.busy0) - (self._own() - self.own0)
        return max(0.0, other / wall) if wall > 0 else float("nan")


# Environment variables that change what is measured: shown in the command.
COMMAND_ENV = ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY",
               "THP_MEM_ALLOC_ENABLE", "GOMP_SPINCOUNT")


def machine_info(argv: list[str]) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        from numpy._core.multiarray import _get_madvise_hugepage  # NumPy 2
    except ImportError:
        try:
            from numpy.core.multiarray import _get_madvise_hugepage  # NumPy 1
        except ImportError:
            _get_madvise_hugepage = None
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled").strip()
    so = getattr(tb._C, "__file__", "")
    pkg = os.path.dirname(os.path.abspath(tb.__file__))
    warnings = []
    if os.path.dirname(pkg) != REPO:
        warnings.append(f"the torchbridge measured is {pkg}, not this checkout ({REPO}): "
                        f"run with PYTHONPATH={REPO} (or scripts/bench.sh)")
    csrc = os.path.join(os.path.dirname(pkg), "csrc")
    if so and os.path.isdir(csrc):
        newest = max((os.path.getmtime(os.path.join(d, f))
                      for d, _, fs in os.walk(csrc) for f in fs), default=0)
        if newest > os.path.getmtime(so):
            warnings.append("csrc/ has files newer than the built extension: "
                            "rebuild (python setup.py build_ext --inplace)")
    info = getattr(tb._C, "_build_info", {})
    return {
        "command": " ".join([f"{k}={shlex.quote(os.environ[k])}" for k in COMMAND_ENV
                             if k in os.environ]
                            + [shlex.join([os.path.basename(sys.executable)] + argv)]),
        "python_executable": sys.executable,
        "cwd": os.getcwd(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "parallel_backend": next((line.split(":", 1)[1].strip()
                                  for line in torch.__config__.parallel_info().splitlines()
                                  if line.startswith("ATen parallel backend")), ""),
        "env": {k: os.environ[k] for k in COMMAND_ENV[1:] if k in os.environ},
        "ram_gib": round(mem_kb / MB, 1),
        "transparent_hugepages": thp,
        "numpy_madvise_hugepage": (bool(_get_madvise_hugepage())
                                   if _get_madvise_hugepage else None),
        "load_average_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torchbridge": tb.__version__,
        "torchbridge_path": pkg,
        "extension": so,
        "extension_built": datetime.datetime.fromtimestamp(os.path.getmtime(so)).astimezone()
        .isoformat(timespec="seconds") if so else "",
        "extension_build_info": dict(info) if info else {},
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty_sources": bool(_git("status", "--porcelain", "--", "csrc", "torchbridge",
                                       "setup.py")),
        "warnings": warnings,
    }


# ---------------------------------------------------------------------------
# output


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_bytes(n: int) -> str:
    for unit, size in (("GB", GB), ("MB", MB), ("KB", KB)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def fmt_elems(n: int) -> str:
    for unit, size in (("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:g}{unit}"
    return str(n)


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.3g} µs"
    return f"{s * 1e9:.0f} ns"


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}" if r < 10 else f"{r:.1f}"


def best_short(row: dict) -> str:
    return next(c["short"] for c in row["candidates"] if c["label"] == row["best_peer"])


def runs(c: dict) -> str:
    return f"{c['samples']} × {c['calls_per_sample']}"


def candidate_lines(row: dict, scale: float, fmt: str, *, zero_copy: bool) -> list[str]:
    """Table lines for one row's candidates (sections 1 and 4): times in
    seconds x `scale`, formatted with `fmt`; ours in bold."""
    lines = []
    for i, c in enumerate(row["candidates"]):
        ours = c["role"] == "ours"
        lab = (f"**`{c['label']}`**" if ours else f"`{c['label']}`") + (
            f" {c['note']}" if c["note"] else "")
        rat = fmt_ratio(c["vs_best_peer"])
        cells = [row["what"] if i == 0 else "", lab, format(c["median_s"] * scale, fmt),
                 f"{c['p25_s'] * scale:{fmt}}–{c['p75_s'] * scale:{fmt}}",
                 f"**{rat}**" if ours else rat]
        if zero_copy:
            cells.append("yes" if c["zero_copy"] else "no")
        lines.append("| " + " | ".join(cells + [runs(c)]) + " |")
    return lines


def to_markdown(res: dict) -> str:
    m = res["machine"]
    out = ["# torchbridge vs the built-ins: CPU conversion speed", "",
           "| | |", "|---|---|",
           f"| command | `{m['command']}` (in `{m['cwd']}`) |",
           f"| date | {m['date']}, {res['wall_s']:.0f} s |",
           f"| CPU | {m['cpu']}: {m['logical_cores']} logical cores ({m['usable_cores']} usable), "
           f"RAM {m['ram_gib']} GiB |",
           f"| threads | torch.get_num_threads() = {m['torch_threads']} "
           f"({m['parallel_backend']}), interop {m['torch_interop_threads']}"
           + (f"; env {m['env']}" if m["env"] else "") + " |",
           f"| memory | transparent huge pages `{m['transparent_hugepages']}`; NumPy madvises "
           f"huge pages: {m['numpy_madvise_hugepage']} |",
           "| load average (1/5/15 min) | start "
           + " / ".join(f"{x:.2f}" for x in m["load_average_start"]) + ", end "
           + " / ".join(f"{x:.2f}" for x in m["load_average_end"]) + " |",
           f"| other processes | used {m['other_processes_cores']:.2f} cores' worth of CPU "
           "during the run (/proc/stat minus this process; per section: "
           + ", ".join(f"{k} {v['other_processes_cores']:.2f}" for k, v in res["sections"].items())
           + ") |",
           f"| versions | Python {m['python']}, torch {m['torch']}, NumPy {m['numpy']}, "
           f"torchbridge {m['torchbridge']} |",
           f"| torchbridge measured | `{m['torchbridge_path']}`, git {m['git_commit']}"
           + (" (uncommitted source changes)" if m["git_dirty_sources"] else "")
           + f", extension built {m['extension_built']} |",
           "",
           "Figures are medians over samples of per-call time; each sample is a tight loop "
           "of many calls (runs = samples × calls per sample, after a warm-up), with the "
           "candidates' order balanced between samples (each runs first, and right after each "
           "other, equally often) and the GC off. "
           "**ours / best peer** < 1 means torchbridge is faster than the fastest built-in; "
           "the column `/ best peer` gives each row's median over the best peer's. "
           f"An empty timeit loop costs {res['loop_overhead_ns']:.0f} ns per iteration "
           "(included in every per-call figure, not subtracted)."]
    for w in m["warnings"]:
        out += ["", f"> **warning:** {w}"]
    busy = max([m["other_processes_cores"]]
               + [v["other_processes_cores"] for v in res["sections"].values()])
    if busy > 0.2:
        out += ["", f"> **warning:** other processes kept up to {busy:.2f} cores busy during "
                f"this run (of {m['usable_cores']}): expect noise, above all in ATen's "
                "multi-threaded copies (section 3), whose parallel regions wait for a "
                "descheduled worker thread; compare kernels with --threads 1 or on a quiet "
                "machine."]
    s = res["sections"]
    if "per_call" in s:
        out += ["", f"## 1. {s['per_call']['title']}", "",
                "| conversion | call | median ns/call | p25–p75 ns | / best peer | zero-copy | runs |",
                "|---|---|---:|---:|---:|:---:|---:|"]
        for row in s["per_call"]["rows"]:
            out += candidate_lines(row, 1e9, ".0f", zero_copy=True)
    if "size" in s:
        out += ["", f"## 2. {s['size']['title']} (ns per call)", "",
                "| float32 size | elements | `tb.to_tensor(a)` | `torch.from_numpy(a)` | "
                "**ours / best peer** | `tb.to_numpy(t)` | `t.numpy(force=True)` | "
                "**ours / best peer** | runs |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in s["size"]["rows"]:
            tt, tn = row["to_tensor"], row["to_numpy"]
            out.append(f"| {fmt_bytes(row['bytes'])} | {row['elements']:,} | "
                       f"{tt['ours_s'] * 1e9:.0f} | {tt['best_peer_s'] * 1e9:.0f} | "
                       f"**{fmt_ratio(tt['ratio_to_best_peer'])}** | {tn['ours_s'] * 1e9:.0f} | "
                       f"{tn['best_peer_s'] * 1e9:.0f} | **{fmt_ratio(tn['ratio_to_best_peer'])}** | "
                       f"{runs(tt['candidates'][0])} |")
    if "coercion" in s:
        rows = s["coercion"]["rows"]
        labels = [c["label"] for c in rows[0]["candidates"]]
        out += ["", f"## 3. {s['coercion']['title']}", "",
                "Time per call (GB/s of float32 output). Each call makes a fresh output, kept "
                "only until the next call; the time includes allocating, faulting in and "
                "freeing it. memcpy = "
                "a plain copy of the same output bytes (float32 to float32, no conversion) "
                "into fresh memory: NumPy's `s32.copy()` (one thread; NumPy madvises huge "
                "pages for >= 4 MB) and torch's `s32t.clone()` (ATen's threaded copy; 4 KB "
                "pages); ours / memcpy divides by the faster of the two.", "",
                "| elements | output | " + " | ".join(
                    f"**`{lbl}`**" if i == 0 else f"`{lbl}`" for i, lbl in enumerate(labels))
                + " | **ours / best peer** | ours / memcpy | runs |",
                "|---|---|" + "---:|" * (len(labels) + 3)]
        for row in rows:
            cells = [f"{fmt_time(c['median_s'])} ({c['output_GBps']:.2f})"
                     for c in row["candidates"]]
            out.append(f"| {fmt_elems(row['elements'])} | {fmt_bytes(row['output_bytes'])} | "
                       + " | ".join(cells)
                       + f" | **{fmt_ratio(row['ratio_to_best_peer'])}** "
                       f"({best_short(row)}) | "
                       f"{fmt_ratio(row['ratio_to_best_ref'])} | "
                       f"{runs(row['candidates'][0])} |")
        out += ["", "Per call: minor page faults · process CPU time per wall second "
                "(main thread's alone). Process CPU > 1 means more than one thread was busy; "
                "it also counts OpenMP workers still spin-waiting after an earlier parallel "
                "region. Main thread well under 1 means it sat waiting (for a worker thread "
                "the scheduler had not run, or for the kernel).", "",
                "| elements | " + " | ".join(f"`{lbl}`" for lbl in labels) + " |",
                "|---|" + "---:|" * len(labels)]
        for row in rows:
            out.append(f"| {fmt_elems(row['elements'])} | " + " | ".join(
                f"{c['page_faults_per_call']:.0f} · {c['cpu_per_wall']:.2f} "
                f"({c['main_thread_cpu_per_wall']:.2f})"
                for c in row["candidates"]) + " |")
    if "tree" in s:
        out += ["", f"## 4. {s['tree']['title']}", "",
                "| tree | call | median µs/call | p25–p75 µs | / best peer | runs |",
                "|---|---|---:|---:|---:|---:|"]
        for row in s["tree"]["rows"]:
            out += candidate_lines(row, 1e6, ".1f", zero_copy=False)
    problems = [p for sec in s.values() for p in sec["problems"]]
    if problems:
        out += ["", "## Problems found while checking the contenders", ""]
        out += [f"- {p}" for p in problems]
    return "\n".join(out) + "\n"


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = res["sections"]
    fig, axes = plt.subplots(2, 2, figsize=(15, 11))
    ours_color, peer_colors = "#d62728", ["#1f77b4", "#7f7f7f", "#2ca02c", "#9467bd",
                                          "#8c564b", "#17becf"]

    def bars(ax, rows, scale, unit, title):
        """Horizontal bars, one per candidate, grouped by comparison."""
        y, yticks, ylabels = 0.0, [], []
        vmax = max(c["median_s"] * scale for row in rows for c in row["candidates"])
        for row in rows:
            ax.text(0, y - 0.15, f"{row['what']}: ours / best peer = "
                    f"{row['ratio_to_best_peer']:.2f}", fontsize=8, fontweight="bold",
                    va="bottom")
            y += 0.9
            peer_i = 0
            for c in row["candidates"]:
                if c["role"] == "ours":
                    color = ours_color
                else:
                    color = peer_colors[peer_i % len(peer_colors)]
                    peer_i += 1
                v = c["median_s"] * scale
                ax.barh(y, v, color=color, height=0.8,
                        hatch="//" if c["role"] == "ref" else None,
                        edgecolor="black" if c["role"] == "ours" else "white")
                ax.text(v + 0.01 * vmax, y, f"{v:.0f}" if v >= 10 else f"{v:.1f}",
                        va="center", fontsize=7)
                yticks.append(y)
                ylabels.append(c["label"] if len(c["label"]) <= 48
                               else c["label"][:46] + "…")
                y += 1
            y += 0.6
        ax.set_yticks(yticks, ylabels, fontsize=7)
        ax.set_ylim(y - 0.4, -1.0)  # top to bottom
        ax.set_xlim(0, vmax * 1.12)
        ax.set_xlabel(unit)
        ax.set_title(title, fontsize=10)
        for lbl, c in zip(ax.get_yticklabels(),
                          [c for row in rows for c in row["candidates"]]):
            if c["role"] == "ours":
                lbl.set_color(ours_color)
                lbl.set_fontweight("bold")

    if "per_call" in s:
        bars(axes[0, 0], s["per_call"]["rows"], 1e9, "ns per call (median)",
             "1. zero-copy paths, per call (red: torchbridge; hatched: copy, reference)")
    else:
        axes[0, 0].set_axis_off()

    ax = axes[0, 1]
    if "size" in s:
        rows = s["size"]["rows"]
        xs = [r["bytes"] for r in rows]
        for key, style in (("to_tensor", "-"), ("to_numpy", "--")):
            for i, lbl in enumerate(c["label"] for c in rows[0][key]["candidates"]):
                ys = [next(c for c in r[key]["candidates"] if c["label"] == lbl)["median_s"] * 1e9
                      for r in rows]
                ax.loglog(xs, ys, style, marker="o",
                          color=ours_color if i == 0 else peer_colors[0 if key == "to_tensor" else 1],
                          label=lbl, lw=2.5 if i == 0 else 1.5)
        ax.set_xlabel("float32 bytes")
        ax.set_ylabel("ns per call (median)")
        ax.set_title("2. zero-copy cost against size (flat = does not grow)", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    else:
        ax.set_axis_off()

    ax = axes[1, 0]
    if "coercion" in s:
        rows = s["coercion"]["rows"]
        xs = [r["elements"] for r in rows]
        peer_i = 0
        for j, c0 in enumerate(rows[0]["candidates"]):
            ys = [r["candidates"][j]["median_s"] for r in rows]
            if c0["role"] == "ours":
                kw = dict(color=ours_color, lw=2.5, marker="o")
            elif c0["role"] == "ref":
                kw = dict(color="black", ls=":" if "numpy" in c0["label"] else "-.", lw=1.2,
                          marker=".")
            else:
                kw = dict(color=peer_colors[peer_i], lw=1.5, marker="s", ms=4)
                peer_i += 1
            ax.loglog(xs, ys, label=c0["label"], **kw)
        ax.set_xlabel("elements (float64 in, float32 out)")
        ax.set_ylabel("seconds per call (median)")
        ax.set_title("3. float64 -> float32 into a fresh tensor", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    else:
        ax.set_axis_off()

    if "tree" in s:
        bars(axes[1, 1], s["tree"]["rows"], 1e6, "µs per call (median)",
             "4. trees: dict of 64 arrays of 256 elements (red: torchbridge)")
    else:
        axes[1, 1].set_axis_off()

    m = res["machine"]
    fig.suptitle(f"torchbridge {m['torchbridge']} (git {m['git_commit']}) on {m['cpu']}, "
                 f"{m['usable_cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
                 f"NumPy {m['numpy']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------


def loop_overhead_ns() -> float:
    t = timeit.Timer("pass")
    return min(t.timeit(200_000) for _ in range(5)) / 200_000 * 1e9


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

    os.makedirs(cfg.out, exist_ok=True)
    md = to_markdown(res)
    with open(os.path.join(cfg.out, "bridge.md"), "w") as f:
        f.write(md)
    with open(os.path.join(cfg.out, "bridge.json"), "w") as f:
        json.dump(res, f, indent=1, default=float)
    plot(res, os.path.join(cfg.out, "bridge.png"))
    print(md)
    log(f"wrote bridge.md, bridge.json, bridge.png to {cfg.out} ({res['wall_s']:.0f} s)")
    for prob in (p for sec in res["sections"].values() for p in sec["problems"]):
        log(f"problem: {prob}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
