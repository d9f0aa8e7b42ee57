"""Load time of .npy files: torchbridge.load against np.load + torch.from_numpy.

    python benchmarks/bench_npy.py              # 1 MB .. 1 GB float32 files
    python benchmarks/bench_npy.py --max-mb 64  # quicker

Each file is written once (so it sits in the page cache: this measures the
loaders, not the disk) and loaded --repeat times per method; the table shows
the best time in milliseconds. "mmap" rows only map the file: their time is
independent of the file size, and the data is read on first touch.

  np.load + from_numpy             copies into a new array
  np.load(mmap_mode='r') + from_   read-only map: torch warns (not writable)
  np.load(mmap_mode='c') + from_   NumPy's copy-on-write map
  tb.load                          copies into a new tensor
  tb.load(mmap=True)               private copy-on-write map, writable
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings

import numpy as np
import torch

import torchbridge as tb
from harness import padded_table, time_calls

SIZES_MB = [1, 16, 256, 1024]


def best_ms(fn, repeat: int) -> float:
    """Fastest of `repeat` calls, in ms; each output freed after its clock stops."""
    return min(time_calls([fn], repeat, free="after")[0], default=float("inf")) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-mb", type=int, default=1024,
                        help="largest file, in MB (default 1024)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to write the files")
    args = parser.parse_args()
    sizes = [s for s in SIZES_MB if s <= args.max_mb] or [args.max_mb]

    def np_copy(p):
        return torch.from_numpy(np.load(p))

    def np_mmap_r(p):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "The given NumPy array is not writable"
            return torch.from_numpy(np.load(p, mmap_mode="r"))

    def np_mmap_c(p):
        return torch.from_numpy(np.load(p, mmap_mode="c"))

    methods = [
        ("np.load + from_numpy", np_copy),
        ("np.load(mmap_mode='r') + from_numpy", np_mmap_r),
        ("np.load(mmap_mode='c') + from_numpy", np_mmap_c),
        ("tb.load", lambda p: tb.load(p)),
        ("tb.load(mmap=True)", lambda p: tb.load(p, mmap=True)),
    ]
    results: dict[str, list[float]] = {name: [] for name, _ in methods}
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        for mb in sizes:
            path = os.path.join(d, f"{mb}mb.npy")
            np.save(path, np.full(mb * (1 << 20) // 4, 1.5, dtype=np.float32))
            for name, fn in methods:
                results[name].append(best_ms(lambda: fn(path), args.repeat))
            os.remove(path)

    header = ["loader"] + [f"{mb} MB" for mb in sizes]
    rows = [[name] + [f"{ms:.3f}" for ms in results[name]] for name, _ in methods]
    print(f"best of {args.repeat}, ms (torch {torch.__version__}, "
          f"numpy {np.__version__}, {torch.get_num_threads()} threads)")
    print("\n".join(padded_table(header, rows)))
    ours = results["tb.load(mmap=True)"]
    if len(ours) > 1:
        print(f"tb.load(mmap=True): {sizes[-1]} MB / {sizes[0]} MB load time = "
              f"{ours[-1] / ours[0]:.2f}x")
    copy_np, copy_tb = results["np.load + from_numpy"], results["tb.load"]
    print("tb.load vs np.load + from_numpy (copy): " + ", ".join(
        f"{mb} MB {a / b:.2f}x" for mb, a, b in zip(sizes, copy_np, copy_tb)))


if __name__ == "__main__":
    main()
