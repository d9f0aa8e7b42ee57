"""Large conversions in a tight loop and after the process sat idle.

    python benchmarks/bench_idle.py [--gap 3] [--repeat 5] [--elements 27]
                                    [--npy-mb 256] [--dir DIR]

Why this exists: a tight loop measures the best case, where every fresh
output lands on memory the previous call just freed. A real program
converts, then computes for a while, then converts again. On a VM that
hands freed memory back to its host (free page reporting, as on the CI
machine kind), memory freed a few seconds ago is unbacked again, and the
next allocation pays for the host to fault it back in. This hits
transparent huge pages hardest: NumPy madvises them for arrays >= 4 MB, and
torchbridge did for its outputs until this benchmark showed that at 128M
float64 -> float32 elements they were 1.8x faster in a tight loop but 5.8x
slower after 3 s idle. torchbridge now uses 4 KB pages (csrc/core/
host_memory.cpp, npy.cpp).

Each candidate runs --repeat times in a tight loop (no gap) and --repeat
times with --gap seconds of sleep before each call, interleaved with the
others; a figure is the median of one call's wall time. Prints a Markdown
table. Not part of the test suite (a smoke test runs it tiny).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import numpy as np
import torch

import torchbridge as tb
from harness import fmt_ms, read_text, time_calls


def run(cands: dict, repeat: int, gap: float) -> dict[str, float]:
    """Median of one call's wall time per candidate: `repeat` rounds in a
    fixed order, `gap` s of sleep before each call, each output freed just
    after its clock stops."""
    times = time_calls(list(cands.values()), repeat, rotate=False, free="after", gap=gap)
    return {k: statistics.median(v) for k, v in zip(cands, times)}


def table(title: str, cands: dict, tight: dict, idle: dict, gap: float) -> list[str]:
    lines = [f"### {title}", "",
             f"| call | tight loop | after {gap:g} s idle | idle / tight |",
             "|---|---:|---:|---:|"]
    for k in cands:
        lines.append(f"| `{k}` | {fmt_ms(tight[k])} | {fmt_ms(idle[k])} | "
                     f"{idle[k] / tight[k]:.2f} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gap", type=float, default=3.0, help="idle seconds before each call")
    ap.add_argument("--repeat", type=int, default=5, help="calls per candidate and mode")
    ap.add_argument("--elements", type=int, default=27,
                    help="log2 of the float64 elements to coerce (27: 1 GB in, 512 MB out)")
    ap.add_argument("--npy-mb", type=int, default=256, help="size of the .npy file loaded")
    ap.add_argument("--dir", default=None, help="folder for the .npy file (default: a temp dir)")
    args = ap.parse_args(argv)

    a = np.random.default_rng(0).random(1 << args.elements)
    coercion = {
        "tb.to_tensor(a)": lambda: tb.to_tensor(a),
        "torch.as_tensor(a, dtype=torch.float32)": lambda: torch.as_tensor(a, dtype=torch.float32),
        "torch.from_numpy(a.astype(np.float32))": lambda: torch.from_numpy(a.astype(np.float32)),
    }
    thp = read_text("/sys/kernel/mm/transparent_hugepage/enabled").strip()
    out = [f"torch {torch.__version__}, NumPy {np.__version__}, "
           f"torch threads {torch.get_num_threads()}, THP `{thp}`" if thp else "", ""]
    tight = run(coercion, args.repeat, 0.0)
    idle = run(coercion, args.repeat, args.gap)
    out += table(f"float64 -> float32, {a.size:,} elements", coercion, tight, idle, args.gap)
    del a

    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        path = os.path.join(d, "idle.npy")
        np.save(path, np.ones((args.npy_mb << 20) // 4, dtype=np.float32))
        load = {"tb.load(path)": lambda: tb.load(path),
                "torch.from_numpy(np.load(path))": lambda: torch.from_numpy(np.load(path))}
        tight = run(load, args.repeat, 0.0)
        idle = run(load, args.repeat, args.gap)
        out += table(f".npy load, {args.npy_mb} MB float32 (page cache warm)", load, tight,
                     idle, args.gap)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
