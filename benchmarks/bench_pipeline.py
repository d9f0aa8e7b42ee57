"""Data pipelines: tb.collate, a DataLoader, Ray Data and (on a GPU) the
host-to-device path, against what users run today, in one run, as ratios.

    python benchmarks/bench_pipeline.py [--quick] [--no-ray] [--out DIR]

Sections (the batch is 64 samples of {"image": 3x32x32 float64, "label": int}):

1. collate     one batch: tb.collate vs default_collate + .float() on the
               image (what a float32 model needs) and a plain NumPy loop of
               slice assignments into a float32 array (time_candidates:
               balanced orders, each output freed by the next call).
2. dataloader  batches/s through DataLoader(num_workers=2): collate_fn=
               tb.collate vs default_collate + .float() in the loop (whole
               epochs timed, taking turns).
3. ray         batches/s of Dataset.iter_torch_batches on a local Ray
               cluster (num_cpus=2): collate_fn=torchbridge.ray.CollateFn()
               vs Ray's default collate with dtypes=torch.float32.
4. gpu         (only with CUDA) batches/s of DataLoader(pin_memory=True) +
               per-leaf .to(non_blocking=True) + .float() vs tb.collate +
               tb.prefetch, each batch followed by a model step to overlap
               with; host copies per batch are counted by construction.

Ratios are "ours / peer" of time per batch: < 1 means torchbridge is faster
(the tables also give the speed-up, peer / ours). Results go to --out
(default benchmarks/results/): pipeline.md and pipeline.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

import harness
import torchbridge as tb

BATCH = 64


def make_samples(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [{"image": rng.random((3, 32, 32)), "label": int(i % 10)} for i in range(n)]


def default_float(samples):
    b = default_collate(samples)
    b["image"] = b["image"].float()
    return b


def numpy_loop(samples):
    out = np.empty((len(samples), 3, 32, 32), np.float32)
    labels = np.empty(len(samples), np.int64)
    for i, s in enumerate(samples):
        out[i] = s["image"]
        labels[i] = s["label"]
    return {"image": torch.from_numpy(out), "label": torch.from_numpy(labels)}


def section_collate(quick: bool) -> dict:
    samples = make_samples(BATCH)
    ref = default_float(samples)
    for fn in (tb.collate, numpy_loop):
        out = fn(samples)
        assert torch.equal(out["image"], ref["image"]) and torch.equal(out["label"], ref["label"])
    cands = [harness.Cand("tb.collate(samples)", "ours", "tb.collate"),
             harness.Cand("default_float(samples)", "peer", "default_collate + .float()"),
             harness.Cand("numpy_loop(samples)", "peer", "NumPy loop of slice assignments")]
    ns = {"tb": tb, "samples": samples, "default_float": default_float,
          "numpy_loop": numpy_loop}
    stats = harness.time_candidates(cands, ns, number=20 if quick else 100,
                                    samples=6 if quick else 18, warmup=20, keep=True)
    return harness.summarise(cands, stats)


class Images(Dataset):
    def __init__(self, n):
        self.samples = make_samples(n)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def section_dataloader(quick: bool) -> dict:
    ds = Images(BATCH * (16 if quick else 64))
    nb = len(ds) // BATCH
    ours = DataLoader(ds, batch_size=BATCH, num_workers=2, collate_fn=tb.collate,
                      persistent_workers=True, prefetch_factor=4)
    peer = DataLoader(ds, batch_size=BATCH, num_workers=2, persistent_workers=True,
                      prefetch_factor=4)

    def epoch_ours():
        for b in ours:
            x = b["image"]
        return x

    def epoch_peer():
        for b in peer:
            x = b["image"].float()
        return x

    times = harness.time_calls([epoch_ours, epoch_peer], 3 if quick else 8, warmup=1,
                               free="after")
    rows = {}
    for label, ts in (("tb.collate", times[0]), ("default_collate + .float()", times[1])):
        s = harness.call_stats(ts)
        rows[label] = {"batches_per_s": nb / s["median_s"], "epoch_s": s["median_s"],
                       "batches": nb, "epochs": s["calls"]}
    del ours, peer
    return {"rows": rows,
            "ratio": rows["tb.collate"]["epoch_s"] / rows["default_collate + .float()"]["epoch_s"]}


def section_ray(quick: bool) -> dict:
    import ray

    from torchbridge.ray import CollateFn

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        n = BATCH * (16 if quick else 64)
        rng = np.random.default_rng(0)
        ds = ray.data.from_numpy(rng.random((n, 3, 32, 32))).materialize()
        nb = n // BATCH

        def ours():
            for b in ds.iter_torch_batches(batch_size=BATCH, collate_fn=CollateFn()):
                x = b["data"]
            return x

        def peer():
            for b in ds.iter_torch_batches(batch_size=BATCH, dtypes=torch.float32):
                x = b["data"]
            return x

        a, b = ours(), peer()
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
        times = harness.time_calls([ours, peer], 3 if quick else 8, warmup=1, free="after")
    finally:
        ray.shutdown()
    rows = {}
    for label, ts in (("CollateFn()", times[0]), ("Ray default, dtypes=float32", times[1])):
        s = harness.call_stats(ts)
        rows[label] = {"batches_per_s": nb / s["median_s"], "epoch_s": s["median_s"],
                       "batches": nb, "epochs": s["calls"]}
    return {"rows": rows,
            "ratio": rows["CollateFn()"]["epoch_s"] / rows["Ray default, dtypes=float32"]["epoch_s"]}


def section_gpu(quick: bool) -> dict:
    dev = torch.device("cuda")
    ds = Images(BATCH * (16 if quick else 128))
    nb = len(ds) // BATCH
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10)).to(dev)

    def step(x, y):
        return torch.nn.functional.cross_entropy(model(x), y)

    peer_loader = DataLoader(ds, batch_size=BATCH, num_workers=2, pin_memory=True,
                             persistent_workers=True)
    ours_loader = DataLoader(ds, batch_size=BATCH, num_workers=2, collate_fn=tb.collate,
                             persistent_workers=True)
    main_loader = DataLoader(ds, batch_size=BATCH, num_workers=0,
                             collate_fn=lambda s: tb.collate(s, pin_memory=True))

    def peer():
        for b in peer_loader:
            x = b["image"].to(dev, non_blocking=True).float()
            y = b["label"].to(dev, non_blocking=True)
            loss = step(x, y)
        torch.cuda.synchronize()
        return loss

    def ours():
        for b in tb.prefetch(ours_loader, dev):
            loss = step(b["image"], b["label"])
        torch.cuda.synchronize()
        return loss

    def ours_main():
        for b in tb.prefetch(main_loader, dev):
            loss = step(b["image"], b["label"])
        torch.cuda.synchronize()
        return loss

    times = harness.time_calls([ours, ours_main, peer], 3 if quick else 6, warmup=1,
                               free="after")
    img = 3 * 32 * 32
    # Host copies per batch, by construction (bytes of the image leaf):
    copies = {
        "tb.collate (2 workers) + tb.prefetch":
            "stack+cast into shm (4 B/elem), pack into pinned staging (4 B/elem); 1 DMA",
        "tb.collate(pin_memory=True) in the main process + tb.prefetch":
            "stack+cast into pinned (4 B/elem), pack into pinned staging (4 B/elem); 1 DMA",
        "DataLoader(pin_memory=True) + .to(non_blocking=True) + .float()":
            "stack into shm (8 B/elem), pin thread copy (8 B/elem); 1 DMA per leaf",
    }
    rows = {}
    for label, ts in zip(copies, times):
        s = harness.call_stats(ts)
        rows[label] = {"batches_per_s": nb / s["median_s"], "epoch_s": s["median_s"],
                       "host_copies": copies[label], "image_elems": img * BATCH}
    peer_s = rows["DataLoader(pin_memory=True) + .to(non_blocking=True) + .float()"]["epoch_s"]
    return {"rows": rows, "ratio": rows["tb.collate (2 workers) + tb.prefetch"]["epoch_s"] / peer_s}


def report(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Pipeline benchmark ({m['cpu']}, {m['logical_cores']} cores, "
             f"torch {m['torch']}, numpy {m['numpy']})", "",
             f"Other load while measuring: {res['other_load_cores']:.2f} cores.", ""]
    c = res["sections"]["collate"]
    lines += ["## collate: 64 x {3x32x32 float64, label}", ""]
    rows = []
    ours_s = c["ours_s"]
    for cand in c["candidates"]:
        rows.append([cand["label"], harness.fmt_time(cand["median_s"]),
                     harness.fmt_ratio(cand["median_s"] / ours_s)])
    lines += harness.padded_table(["", "per batch (median)", "time / tb.collate"], rows)
    for name, title in (("dataloader", "DataLoader, 2 workers"),
                        ("ray", "Ray iter_torch_batches, local cluster (2 CPUs)"),
                        ("gpu", "GPU: loader + transfer + model step")):
        sec = res["sections"].get(name)
        if not sec:
            continue
        lines += ["", f"## {title}", ""]
        first = next(iter(sec["rows"].values()))["epoch_s"]
        rows = [[label, f"{r['batches_per_s']:.0f}", harness.fmt_ratio(first / r["epoch_s"])]
                + ([r["host_copies"]] if "host_copies" in r else [])
                for label, r in sec["rows"].items()]
        header = ["", "batches/s", "speed / first row"]
        if name == "gpu":
            header.append("host copies per batch")
        lines += harness.padded_table(header, rows)
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--out", default=os.path.join(harness.REPO, "benchmarks", "results"))
    args = p.parse_args()
    res = {"machine": harness.machine_info(sys.argv), "sections": {}}
    load = harness.OtherLoad()
    harness.log("collate ...")
    res["sections"]["collate"] = section_collate(args.quick)
    harness.log("dataloader ...")
    res["sections"]["dataloader"] = section_dataloader(args.quick)
    if not args.no_ray:
        try:
            import ray  # noqa: F401
        except Exception as e:  # noqa: BLE001  (Ray does not import on NumPy 1.x)
            harness.log(f"ray skipped: {e}")
        else:
            harness.log("ray ...")
            res["sections"]["ray"] = section_ray(args.quick)
    if torch.cuda.is_available():
        harness.log("gpu ...")
        res["sections"]["gpu"] = section_gpu(args.quick)
    res["other_load_cores"] = load.cores()
    md = report(res)
    print(md)
    harness.write_results(args.out, "pipeline", md, res)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    harness.log(f"done in {time.perf_counter() - t0:.0f} s")
