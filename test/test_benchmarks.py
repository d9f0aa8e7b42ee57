"""The speed benchmarks still run end to end.

Smoke tests: each benchmark's --quick (or tiny) run in a subprocess, then
its outputs exist and hold every section with numeric figures. Timings are never
asserted (they belong to the machine, not to the code).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from conftest import optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("per_call", "size", "coercion", "tree")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_bench_bridge_quick_run_writes_every_section(tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ)
    # The torchbridge this test session imported, whatever put it on the path.
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_bridge.py"), "--quick",
         "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("bridge.md", "bridge.json", "bridge.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    res = json.loads((out / "bridge.json").read_text())
    assert set(SECTIONS) <= set(res["sections"])
    for name in SECTIONS:
        rows = res["sections"][name]["rows"]
        assert rows, name
        # size rows hold one comparison per direction; the others are comparisons.
        comparisons = ([r[k] for r in rows for k in ("to_tensor", "to_numpy")]
                       if name == "size" else rows)
        for comp in comparisons:
            assert _positive(comp["ratio_to_best_peer"]), (name, comp)
            assert {c["role"] for c in comp["candidates"]} >= {"ours", "peer"}
            for c in comp["candidates"]:
                for key in ("median_s", "p25_s", "p75_s", "min_s"):
                    assert _positive(c[key]), (name, c["label"], key)
                assert c["samples"] >= 5 and c["calls_per_sample"] >= 1
    for row in res["sections"]["coercion"]["rows"]:
        assert _positive(row["ratio_to_best_ref"])
        assert all(_positive(c["output_GBps"]) for c in row["candidates"])
    machine = res["machine"]
    for key in ("cpu", "logical_cores", "torch_threads", "ram_gib", "python", "torch",
                "numpy", "torchbridge", "command"):
        assert machine[key] not in (None, ""), key
    assert "bench_bridge.py" in machine["command"]
    md = (out / "bridge.md").read_text()
    for heading in ("## 1.", "## 2.", "## 3.", "## 4."):
        assert heading in md


def test_candidate_orders_are_balanced_for_carry_over():
    # Each candidate must run first, and right after each other one, equally
    # often: a sample inherits the state its predecessor left (freed memory,
    # caches), and a plain rotation kept the same neighbours in every sample.
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from harness import balanced_orders
    finally:
        sys.path.pop(0)
    from collections import Counter

    for m in range(1, 9):
        orders = balanced_orders(m)
        assert all(sorted(o) == list(range(m)) for o in orders), m
        firsts = Counter(o[0] for o in orders)
        pairs = Counter((o[i], o[i + 1]) for o in orders for i in range(m - 1))
        assert len(firsts) == m and len(set(firsts.values())) == 1, m
        if m > 1:
            assert len(pairs) == m * (m - 1) and len(set(pairs.values())) == 1, m


def test_bench_idle_tiny_run_prints_both_tables():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_idle.py"), "--elements", "12",
         "--npy-mb", "1", "--repeat", "1", "--gap", "0.01"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [
        "tb.to_tensor(a)", "torch.as_tensor(a, dtype=torch.float32)",
        "torch.from_numpy(a.astype(np.float32))", "tb.load(path)",
        "torch.from_numpy(np.load(path))"]
    for r in rows:  # tight ms, idle ms, ratio: all positive numbers
        cells = [c.strip() for c in r.split("|")[2:5]]
        assert all(float(c.split()[0]) > 0 for c in cells), r


def test_bench_busy_quick_run_measures_both_phases(tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_busy.py"), "--quick",
         "--seconds", "0.2", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "busy.json").read_text())
    assert res["problems"] == [] and res["spinners"] >= 1
    phases = {}
    for row in res["rows"]:
        phases.setdefault(row["phase"], []).append(row["case"])
        assert _positive(row["ratio_mean"]) and _positive(row["ratio_p99"])
        assert [c["role"] for c in row["candidates"]][0] == "ours"
        for c in row["candidates"]:
            assert c["calls"] >= 20
            for key in ("mean_s", "p99_s", "median_s"):
                assert _positive(c[key]), (row["case"], c["expr"], key)
    assert set(phases) == {"quiet", "busy"} and phases["quiet"] == phases["busy"]
    assert "| busy |" in (out / "busy.md").read_text()
    # The spinners are gone: no python child of ours still runs "while True".
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "while True: pass" not in ps


def _run_bench(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_bench_pipeline_quick_run_compares_collate_and_dataloader(tmp_path):
    # Ray's section has its own tests (test_ray.py); a Ray cluster would
    # double this smoke run's time.
    _run_bench("bench_pipeline.py", "--quick", "--no-ray", "--out", str(tmp_path))
    res = json.loads((tmp_path / "pipeline.json").read_text())
    sections = res["sections"]
    assert {"collate", "dataloader"} <= set(sections)
    assert "ray" not in sections
    md = (tmp_path / "pipeline.md").read_text()
    assert "tb.collate" in md

    def numbers(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from numbers(v)
        elif isinstance(x, list):
            for v in x:
                yield from numbers(v)
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            yield x

    for name in ("collate", "dataloader"):
        figures = list(numbers(sections[name]))
        assert figures and all(math.isfinite(v) and v >= 0 for v in figures), name
        assert any(v > 0 for v in figures), name


def test_bench_tabular_quick_run_checks_every_case():
    optional("pandas")  # pandas 3 raises on NumPy 1.26 (not only ImportError)
    optional("pyarrow")
    out = _run_bench("bench_tabular.py", "--quick").stdout
    # Each case's candidates were checked equal before timing (an assert in
    # the script), and every row has a positive ratio.
    rows = [r for r in out.splitlines() if r.startswith("| ") and "candidate" not in r]
    cases = {r.split("|")[1].strip() for r in rows}
    assert len(cases) == 4, out[-2000:]  # --quick: one Arrow size
    assert sum("**ours**" in r for r in rows) == 4
    for r in rows:
        assert float(r.split("|")[4].strip()) > 0, r
