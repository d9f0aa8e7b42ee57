"""Host <-> GPU transfer benchmark: torchbridge against the naive forms and the
bus limit, measured in one run.

    python benchmarks/bench_transfer.py [--max-mb 1024] [--sweep] [--out DIR]

Rows (each a median of several timed runs, after warm-up, synchronised):
- upload float32:   bus limit (pinned tensor .to(cuda, non_blocking) =
                    cudaMemcpyAsync from pinned memory), naive
                    torch.from_numpy(a).cuda(), ours tb.to_tensor(a, device=)
- upload uint8 -> float32: naive torch.from_numpy(a).float().cuda() vs ours
- upload float64 -> float32: naive torch.from_numpy(a).float().cuda() vs ours
- download float32: bus limit (copy into a preallocated pinned buffer),
                    naive t.detach().cpu().numpy(), ours tb.to_numpy(t)
- tree of 64 small arrays: leaf-by-leaf .cuda() / .cpu().numpy() vs ours
Bandwidth is bytes of the source array per second. With --sweep, the
engine's knobs (chunk size, thresholds) are swept too.
Writes transfer.json and transfer.md to --out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np
import torch

import torchbridge as tb
from harness import MB, time_calls, write_results
from harness import fmt_bytes as _fmt_bytes


def timeit(fn, *, repeat: int, min_time: float = 0.2, warmup: int = 4) -> float:
    """Median seconds per call; each sample syncs the device.

    At least `repeat` samples, then more until `min_time` has passed (at
    most 200 in all unless repeat asks for more); each result is dropped
    inside its timed call.
    """
    samples = time_calls([fn], max(repeat, 200), min_rounds=repeat, seconds=min_time,
                         warmup=warmup, free="now", sync=torch.cuda.synchronize)[0]
    return statistics.median(samples)


def fmt_bytes(n: int) -> str:
    """Up to MB: 1 GB is written 1024 MB, as in the reference tables."""
    return _fmt_bytes(n, top=MB)


def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def upload_rows(sizes, repeat):
    rows = []
    for nbytes in sizes:
        n = nbytes // 4
        a = np.random.rand(n).astype(np.float32)
        pinned = torch.from_numpy(a).pin_memory()
        bus = timeit(lambda: pinned.to("cuda", non_blocking=True), repeat=repeat)
        naive = timeit(lambda: torch.from_numpy(a).cuda(), repeat=repeat)
        ours = timeit(lambda: tb.to_tensor(a, device="cuda"), repeat=repeat)
        ours_nb = timeit(lambda: tb.to_tensor(a, device="cuda", non_blocking=True), repeat=repeat)
        rows.append({"what": "upload float32", "size": nbytes, "bus_GBps": gbps(nbytes, bus),
                     "naive_GBps": gbps(nbytes, naive), "ours_GBps": gbps(nbytes, ours),
                     "ours_nonblocking_GBps": gbps(nbytes, ours_nb),
                     "ours_vs_bus": bus / ours, "ours_vs_naive": naive / ours})
        del a, pinned
    return rows


def cast_upload_rows(sizes, repeat):
    rows = []
    for nbytes in sizes:
        u = np.random.randint(0, 255, nbytes, dtype=np.uint8)  # nbytes elements
        naive = timeit(lambda: torch.from_numpy(u).float().cuda(), repeat=repeat)
        ours = timeit(lambda: tb.to_tensor(u, dtype=torch.float32, device="cuda"), repeat=repeat)
        rows.append({"what": "upload uint8->float32", "size": nbytes,
                     "naive_ms": naive * 1e3, "ours_ms": ours * 1e3,
                     "ours_vs_naive": naive / ours})
        d = np.random.rand(nbytes // 8)  # float64, nbytes bytes
        naive = timeit(lambda: torch.from_numpy(d).float().cuda(), repeat=repeat)
        ours = timeit(lambda: tb.to_tensor(d, device="cuda"), repeat=repeat)
        rows.append({"what": "upload float64->float32", "size": nbytes,
                     "naive_ms": naive * 1e3, "ours_ms": ours * 1e3,
                     "ours_vs_naive": naive / ours})
        del u, d
    return rows


def download_rows(sizes, repeat):
    rows = []
    for nbytes in sizes:
        t = torch.rand(nbytes // 4, device="cuda")
        dst = torch.empty(t.shape, pin_memory=True)
        bus = timeit(lambda: dst.copy_(t, non_blocking=True), repeat=repeat)
        naive = timeit(lambda: t.detach().cpu().numpy(), repeat=repeat)
        ours = timeit(lambda: tb.to_numpy(t), repeat=repeat)
        rows.append({"what": "download float32", "size": nbytes, "bus_GBps": gbps(nbytes, bus),
                     "naive_GBps": gbps(nbytes, naive), "ours_GBps": gbps(nbytes, ours),
                     "ours_vs_bus": bus / ours, "ours_vs_naive": naive / ours})
        del t, dst
    return rows


def tree_rows(repeat):
    rng = np.random.default_rng(0)
    tree = {f"leaf{i}": rng.standard_normal(256).astype(np.float32) for i in range(64)}
    naive_up = timeit(lambda: {k: torch.from_numpy(v).cuda() for k, v in tree.items()},
                      repeat=repeat, min_time=0.5)
    ours_up = timeit(lambda: tb.tree_to_tensor(tree, device="cuda"), repeat=repeat, min_time=0.5)
    on_gpu = {k: torch.from_numpy(v).cuda() for k, v in tree.items()}
    naive_down = timeit(lambda: {k: v.detach().cpu().numpy() for k, v in on_gpu.items()},
                        repeat=repeat, min_time=0.5)
    ours_down = timeit(lambda: tb.tree_to_numpy(on_gpu), repeat=repeat, min_time=0.5)
    return [
        {"what": "tree of 64 x 1 KB, upload", "naive_us": naive_up * 1e6,
         "ours_us": ours_up * 1e6, "ours_vs_naive": naive_up / ours_up},
        {"what": "tree of 64 x 1 KB, download", "naive_us": naive_down * 1e6,
         "ours_us": ours_down * 1e6, "ours_vs_naive": naive_down / ours_down},
    ]


def sweep_rows(sizes, repeat):
    saved = tb._C._transfer_tuning()
    rows = []
    try:
        for nbytes in sizes:
            a = np.random.rand(nbytes // 4).astype(np.float32)
            for chunk in (8 * MB, 16 * MB, 32 * MB):
                for slots in (3, 4):
                    tb._C._transfer_tuning(chunk_bytes=chunk, min_chunked_bytes=chunk,
                                           ring_slots=slots)
                    up = timeit(lambda: tb.to_tensor(a, device="cuda"), repeat=repeat)
                    rows.append({"size": nbytes, "chunk": chunk, "slots": slots,
                                 "up_GBps": gbps(nbytes, up)})
            tb._C._transfer_tuning(min_chunked_bytes=1 << 62)
            up = timeit(lambda: tb.to_tensor(a, device="cuda"), repeat=repeat)
            rows.append({"size": nbytes, "chunk": "unchunked", "slots": 1,
                         "up_GBps": gbps(nbytes, up)})
            tb._C._transfer_tuning(**saved)
            del a
    finally:
        tb._C._transfer_tuning(**saved)
    return rows


def host_copy_rows(sizes, repeat):
    """The host-side ceiling: pageable -> pinned copies, no GPU involved."""
    rows = []
    for nbytes in sizes:
        a = np.random.rand(nbytes // 4).astype(np.float32)
        src = torch.from_numpy(a)
        dst = torch.empty(src.shape, pin_memory=True)
        torch_copy = timeit(lambda: dst.copy_(src), repeat=repeat)
        np_copy = timeit(lambda: np.copyto(dst.numpy(), a), repeat=repeat)
        rows.append({"size": nbytes, "torch_copy_GBps": gbps(nbytes, torch_copy),
                     "numpy_copyto_GBps": gbps(nbytes, np_copy)})
    return rows


def to_markdown(res) -> str:
    out = [f"GPU: {res['gpu']}; torch {res['torch']}; {res['threads']} CPU threads\n"]
    out.append("| transfer | size | bus limit GB/s | naive GB/s | torchbridge GB/s | ours / bus | ours vs naive |")
    out.append("|---|---|---|---|---|---|---|")
    for r in res["upload"] + res["download"]:
        out.append(f"| {r['what']} | {fmt_bytes(r['size'])} | {r['bus_GBps']:.1f} | "
                   f"{r['naive_GBps']:.1f} | {r['ours_GBps']:.1f} | {r['ours_vs_bus']:.0%} | "
                   f"{r['ours_vs_naive']:.2f}x |")
    out.append("\n| cast upload | size | naive ms | torchbridge ms | speed-up |")
    out.append("|---|---|---|---|---|")
    for r in res["cast_upload"]:
        out.append(f"| {r['what']} | {fmt_bytes(r['size'])} | {r['naive_ms']:.3f} | "
                   f"{r['ours_ms']:.3f} | {r['ours_vs_naive']:.2f}x |")
    out.append("\n| tree | leaf by leaf us | torchbridge us | speed-up |")
    out.append("|---|---|---|---|")
    for r in res["tree"]:
        out.append(f"| {r['what']} | {r['naive_us']:.0f} | {r['ours_us']:.0f} | {r['ours_vs_naive']:.1f}x |")
    if res.get("host_copy"):
        out.append("\n| host copy pageable -> pinned | torch copy_ GB/s | np.copyto GB/s |")
        out.append("|---|---|---|")
        for r in res["host_copy"]:
            out.append(f"| {fmt_bytes(r['size'])} | {r['torch_copy_GBps']:.1f} | "
                       f"{r['numpy_copyto_GBps']:.1f} |")
    if res.get("sweep"):
        out.append("\n| sweep size | chunk | ring slots | upload GB/s |")
        out.append("|---|---|---|---|")
        for r in res["sweep"]:
            c = r["chunk"] if isinstance(r["chunk"], str) else fmt_bytes(r["chunk"])
            out.append(f"| {fmt_bytes(r['size'])} | {c} | {r['slots']} | {r['up_GBps']:.1f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-mb", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 0
    sizes = [s for s in (4 * 1024, 64 * 1024, MB, 16 * MB, 256 * MB, 1024 * MB)
             if s <= args.max_mb * MB]
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "tuning": tb._C._transfer_tuning()}
    res["upload"] = upload_rows(sizes, args.repeat)
    res["cast_upload"] = cast_upload_rows([s for s in sizes if s >= MB], args.repeat)
    res["download"] = download_rows(sizes, args.repeat)
    res["tree"] = tree_rows(max(args.repeat, 20))
    res["host_copy"] = host_copy_rows([s for s in sizes if s >= 16 * MB], args.repeat)
    if args.sweep:
        res["sweep"] = sweep_rows([s for s in sizes if s >= 16 * MB], args.repeat)
    md = to_markdown(res)
    print(md)
    write_results(args.out, "transfer", md + "\n", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
