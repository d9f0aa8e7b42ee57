"""scipy.sparse CSR -> torch sparse tensor: tb.to_tensor against the usual recipes.

    python benchmarks/bench_sparse.py                 # 10M non-zeros
    python benchmarks/bench_sparse.py --quick         # 100k non-zeros, a smoke run
    python benchmarks/bench_sparse.py --out results   # also writes sparse.md / sparse.json

A CSR matrix of --nnz non-zeros (10 per row, int32 indices) with float64
values (the float policy casts them to float32) and with float32 values
(nothing to cast: every buffer is shared). Candidates, in one run, taking
turns call by call (harness.time_calls, balanced orders), each result freed
after its clock stops:

  ours          tb.to_tensor(m): validates indptr/indices (what torch would
                trust), shares the buffers it can, casts the values by the policy
  coo recipe    m.tocoo() + torch.sparse_coo_tensor(np.vstack((row, col)), data)
                (+ .float() where the policy casts): the common answer online
  csr recipe    torch.sparse_csr_tensor(from_numpy(indptr), from_numpy(indices),
                from_numpy(data), size) (+ .float()): shares, checks nothing
  csr checked   the csr recipe with check_invariants=True (a reference: it
                validates, as ours does)

Ratios are ours / the best peer (the recipes) and ours / the checked recipe.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
import torch

import torchbridge as tb
from harness import (call_stats, fmt_ratio, fmt_time, log, machine_info, padded_table,
                     time_calls, write_results)

warnings.filterwarnings("ignore", "Sparse CSR tensor support")
warnings.filterwarnings("ignore", "Sparse invariant checks")


def make_csr(nnz: int, dtype, per_row: int = 10):
    import scipy.sparse as sp

    rows = max(1, nnz // per_row)
    cols = max(per_row * 10, rows)
    rng = np.random.default_rng(0)
    start = rng.integers(0, cols - per_row * 10, rows, dtype=np.int64)
    # Sorted, unique within each row: what SciPy builds (canonical form).
    indices = (start[:, None] + np.arange(per_row) * 10).astype(np.int32).ravel()
    indptr = np.arange(0, rows * per_row + 1, per_row, dtype=np.int32)
    data = rng.standard_normal(rows * per_row).astype(dtype)
    m = sp.csr_array((data, indices, indptr), shape=(rows, cols), copy=False)
    return m


def candidates(m, cast: bool):
    def ours():
        return tb.to_tensor(m)

    def coo_recipe():
        c = m.tocoo()
        t = torch.sparse_coo_tensor(np.vstack((c.row, c.col)), c.data, c.shape)
        return t.float() if cast else t

    def csr_recipe():
        t = torch.sparse_csr_tensor(torch.from_numpy(m.indptr), torch.from_numpy(m.indices),
                                    torch.from_numpy(m.data), m.shape)
        return t.float() if cast else t

    def csr_checked():
        t = torch.sparse_csr_tensor(torch.from_numpy(m.indptr), torch.from_numpy(m.indices),
                                    torch.from_numpy(m.data), m.shape, check_invariants=True)
        return t.float() if cast else t

    cast_note = " + .float()" if cast else ""
    return [
        ("ours", "tb.to_tensor(m)", ours),
        ("peer", "m.tocoo() + torch.sparse_coo_tensor(vstack(row, col), data)" + cast_note,
         coo_recipe),
        ("peer", "torch.sparse_csr_tensor(from_numpy(indptr, indices, data))" + cast_note,
         csr_recipe),
        ("ref", "the same with check_invariants=True" + cast_note, csr_checked),
    ]


def check(m, cands) -> None:
    """Every candidate gives the same matrix; ours shares what it should."""
    want = m.toarray() if m.shape[0] * m.shape[1] <= 1 << 24 else None
    ref = None
    for role, label, fn in cands:
        t = fn()
        if t.layout == torch.sparse_coo:
            t = t.coalesce().to_sparse_csr()
        parts = (t.crow_indices().long(), t.col_indices().long(), t.values())
        if ref is None:
            ref = parts
        else:
            for a, b in zip(parts, ref):
                assert torch.equal(a, b), label
        if want is not None:
            np.testing.assert_allclose(t.to_dense().numpy(), want, rtol=1e-6)
    ours = tb.to_tensor(m)
    shared = {
        "indptr": ours.crow_indices().data_ptr() == m.indptr.ctypes.data,
        "indices": ours.col_indices().data_ptr() == m.indices.ctypes.data,
        "data": ours.values().data_ptr() == m.data.ctypes.data,
    }
    if m.dtype == np.float32:
        assert all(shared.values()), shared
    else:
        assert shared["indptr"] and shared["indices"] and not shared["data"], shared
    return shared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nnz", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="100k non-zeros, 3 rounds")
    parser.add_argument("--out", default=None, help="folder for sparse.md / sparse.json")
    args = parser.parse_args()
    if args.quick:
        args.nnz, args.rounds = 100_000, 3

    machine = machine_info(sys.argv)
    rows, res_rows = [], []
    for dtype in (np.float64, np.float32):
        m = make_csr(args.nnz, dtype)
        cast = dtype == np.float64
        cands = candidates(m, cast)
        shared = check(m, cands)
        log(f"timing {np.dtype(dtype).name} values, {m.nnz:,} non-zeros")
        times = time_calls([fn for _, _, fn in cands], args.rounds, warmup=1, free="after")
        stats = [call_stats(ts) for ts in times]
        peers = [s["median_s"] for (role, _, _), s in zip(cands, stats) if role == "peer"]
        refs = [s["median_s"] for (role, _, _), s in zip(cands, stats) if role == "ref"]
        ours = stats[0]["median_s"]
        case = f"{m.nnz:,} nnz, {np.dtype(dtype).name} values, int32 indices"
        for (role, label, _), s in zip(cands, stats):
            rows.append([case, role, label, fmt_time(s["median_s"]),
                         fmt_ratio(s["median_s"] / min(peers))])
        res_rows.append({
            "case": case, "nnz": int(m.nnz), "dtype": np.dtype(dtype).name, "shared": shared,
            "candidates": [{"role": r, "label": lab, **s}
                           for (r, lab, _), s in zip(cands, stats)],
            "ratio_to_best_peer": ours / min(peers), "ratio_to_checked": ours / min(refs),
        })
    header = ["case", "role", "candidate", "median", "vs best peer"]
    table = padded_table(header, rows)
    summary = [f"- {r['case']}: ours / best recipe = {r['ratio_to_best_peer']:.2f}x, "
               f"ours / checked recipe = {r['ratio_to_checked']:.2f}x; shared: "
               + ", ".join(k for k, v in r["shared"].items() if v) for r in res_rows]
    md = "\n".join([
        "# scipy.sparse CSR -> torch (benchmarks/bench_sparse.py)", "",
        f"median of {args.rounds} calls each, taking turns; {machine['cpu']}, "
        f"{machine['logical_cores']} logical cores, torch {machine['torch']}, "
        f"numpy {machine['numpy']}", "", *table, "", *summary, ""])
    print(md)
    if args.out:
        write_results(args.out, "sparse", md, {"machine": machine, "rows": res_rows})


if __name__ == "__main__":
    main()
