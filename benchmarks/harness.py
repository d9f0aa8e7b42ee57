"""What every benchmark here shares: timing, the machine probe, formatting, output.

Timing, two ways (the methodology the reference results were taken with):

- time_candidates: statements compiled into timeit loops, several samples of
  a tight loop of many calls each, the candidates' order changed between
  samples by a balanced Latin square (balanced_orders), GC off; median,
  quartiles, min/max per call, plus page faults and CPU time per call
  (bench_bridge.py). summarise() adds the ratios to the best peer, check()
  makes sure the contenders compute the same thing.
- time_calls: each call timed on its own (callables, not statements), the
  candidates taking turns call by call (order rotated every round, or
  fixed), with a choice of when each result is freed, an optional device
  sync, idle gap and time limit (bench_busy.py, bench_idle.py,
  bench_npy.py, bench_transfer.py). call_stats() gives mean, median and p99.

The machine: machine_info() (CPU, cores, threads, memory settings, versions,
which torchbridge was imported and whether it is stale) and OtherLoad (CPU
used by other processes meanwhile). Formatting: fmt_time, fmt_bytes,
fmt_elems, fmt_ratio, fmt_ms, padded_table. Output: write_results (the .md
and .json pair), log (to stderr).

Scripts import it as ``import harness``: run as ``python benchmarks/x.py``,
benchmarks/ is the first entry of sys.path.
"""

from __future__ import annotations

import datetime
import gc
import json
import math
import os
import platform
import random
import resource
import shlex
import statistics
import subprocess
import sys
import time
import timeit

import numpy as np
import torch

import torchbridge as tb

KB, MB, GB = 1 << 10, 1 << 20, 1 << 30
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
# timing: candidates as timeit loops (bench_bridge.py)

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


def time_candidates(cands: list[Cand], ns: dict, *, number: int, samples: int, warmup: int,
                    keep: bool = False) -> list[dict]:
    """Median seconds per call of each candidate, interleaved in balanced orders.

    ns is the namespace the statements run in (timeit globals); ns["_keep"]
    is the one-slot holder for keep=True.

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
    keep_slot = ns["_keep"] = [None]
    timers = [timeit.Timer(("_keep[0] = " if keep else "") + c.expr, globals=ns)
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
        ns["_keep"] = [None]
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


def loop_overhead_ns() -> float:
    t = timeit.Timer("pass")
    return min(t.timeit(200_000) for _ in range(5)) / 200_000 * 1e9


# ---------------------------------------------------------------------------
# timing: call by call (bench_busy.py, bench_idle.py, bench_npy.py, bench_transfer.py)


def _one_call(fn, free: str, sync):
    """A function that calls fn once and returns the seconds it took.

    free says when fn's result is freed: "next" keeps it until fn's next
    call replaces it (that free is timed, in the next call), as a user's
    output lives until the next batch; "after" frees it just after the
    clock stops (not timed); "now" drops it at once, inside the timed
    call. sync (with "now" only) is called after fn, inside the timing
    (torch.cuda.synchronize). The clock is read inside, so this wrapper's
    own call is not timed.
    """
    clock = time.perf_counter
    if sync is not None:
        if free != "now":
            raise ValueError("sync goes with free='now'")

        def call():
            t0 = clock()
            fn()
            sync()
            return clock() - t0
    elif free == "next":
        slot = [None]

        def call():
            t0 = clock()
            slot[0] = fn()
            return clock() - t0
    elif free == "after":
        def call():
            t0 = clock()
            out = fn()
            dt = clock() - t0
            del out
            return dt
    elif free == "now":
        def call():
            t0 = clock()
            fn()
            return clock() - t0
    else:
        raise ValueError(f"free must be 'next', 'after' or 'now', not {free!r}")
    return call


def time_calls(fns: list, rounds: int, *, min_rounds: int = 0, seconds: float = math.inf,
               rotate: bool = True, warmup: int = 0, free: str = "next", sync=None,
               gap: float = 0.0, gc_off: bool = False) -> list[list[float]]:
    """Seconds of each call of each function, the functions taking turns.

    One round calls each function once: with rotate, in a row of
    balanced_orders (each function first, and right after each other one,
    equally often: a plain shift made one candidate always follow torch's
    OpenMP ops, whose spinning workers took the core from it on a busy
    machine), every row once per block of rounds, the rows of a block in a
    shuffled order (seeded: the same in every run); in the order given
    otherwise. Why shuffled: a fixed cycle of rows has a period, and on a
    busy machine the scheduler's timeslices have one too; the two lock
    together for seconds, so the same candidate's calls keep catching the
    ends of timeslices. At 1M float64 -> float32 with 2 spinners on 2 cores,
    ours against `astype` (medians tied), six runs of 1,500 rounds gave mean
    ratios 0.77-1.18 cycling and 0.90-1.03 shuffled. It stops after `rounds` rounds, or earlier
    once at least `min_rounds` are done and `seconds` have passed since the
    first. First each function is called `warmup` times (then sync, if
    given); gap sleeps that many seconds before every timed call (not
    timed); gc_off runs the rounds with the garbage collector off (after a
    collection). free and sync: see _one_call.
    """
    calls = [_one_call(f, free, sync) for f in fns]
    for f in fns:  # warm-up: allocator, caches, lazy initialisation
        for _ in range(warmup):
            f()
    if sync is not None:
        sync()
    times: list[list[float]] = [[] for _ in fns]
    k, clock = len(fns), time.perf_counter
    orders = balanced_orders(k)
    shuffle = random.Random(0).shuffle
    block: list[list[int]] = []
    gc_was_enabled = gc.isenabled()
    if gc_off:
        gc.collect()
        gc.disable()
    try:
        start, r = clock(), 0
        while r < rounds:
            if not block:
                block = list(orders)
                shuffle(block)
            row = block.pop()
            for j in range(k):
                i = row[j] if rotate else j
                if gap:
                    time.sleep(gap)
                times[i].append(calls[i]())
            r += 1
            if r >= min_rounds and seconds < math.inf and clock() - start >= seconds:
                break
    finally:
        if gc_off and gc_was_enabled:
            gc.enable()
    return times


def call_stats(ts: list[float]) -> dict:
    """Mean (stalls included: what a loop pays), median, p99 and max of
    per-call seconds, and the call count."""
    ts = sorted(ts)
    return {"mean_s": statistics.fmean(ts), "median_s": ts[len(ts) // 2],
            "p99_s": ts[min(len(ts) - 1, int(0.99 * len(ts)))], "max_s": ts[-1],
            "calls": len(ts)}


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


def same_result(r, ref) -> bool:
    """Same dtype, shape and values (arrays or tensors; dicts of them leaf
    by leaf, with the same keys)."""
    if isinstance(ref, dict):
        return r.keys() == ref.keys() and all(same_result(r[k], ref[k]) for k in ref)
    x, y = _as_np(r), _as_np(ref)
    return x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def check(cands: list[Cand], ns: dict, source=None) -> tuple[list[str], dict[str, bool]]:
    """Evaluate each expression once; compare with ours; note zero-copy.

    Returns (problems, shares) where shares[label] says whether the result
    shares memory with `source` (when given).
    """
    problems, shares = [], {}
    ours = next(c for c in cands if c.role == "ours")
    ref = eval(ours.expr, ns)  # noqa: S307 (our own strings)
    for c in cands:  # one at a time: at 128M elements each result is 512 MB
        r = ref if c is ours else eval(c.expr, ns)  # noqa: S307
        if not same_result(r, ref):
            problems.append(f"`{c.label}` does not give the same result as ours")
        if source is not None:
            shares[c.label] = _data_ptr(r) == _data_ptr(source)
        del r
    del ref
    return problems, shares


# ---------------------------------------------------------------------------
# the machine

def read_text(path: str) -> str:
    """The file's text, or "" where it cannot be read."""
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
        line = read_text("/proc/stat").split("\n", 1)[0].split()
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
    cpu = next((line.split(":", 1)[1].strip() for line in read_text("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in read_text("/proc/meminfo").splitlines()
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
    thp = read_text("/sys/kernel/mm/transparent_hugepage/enabled").strip()
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
# formatting and output

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_bytes(n: int, top: int = GB) -> str:
    """1.5 MB, 64 KB...; units up to `top` (top=MB writes 1 GB as 1024 MB)."""
    for unit, size in (("GB", GB), ("MB", MB), ("KB", KB)):
        if n >= size and size <= top:
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



def fmt_ms(seconds: float) -> str:
    """Milliseconds, whole from 100 ms up, else 3 significant digits."""
    v = seconds * 1e3
    return f"{v:.0f} ms" if v >= 100 else f"{v:.3g} ms"


def padded_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table whose columns are padded to line up as plain text."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    return (["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
            + ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows])


def write_results(folder: str, stem: str, md: str, res: dict) -> None:
    """Write stem.md (md as given) and stem.json (res) into folder."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, stem + ".md"), "w") as f:
        f.write(md)
    with open(os.path.join(folder, stem + ".json"), "w") as f:
        json.dump(res, f, indent=1, default=float)
