"""Each example in examples/ runs on the CPU with small data it makes itself
and reports what it checked (its own asserts and its final line)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def importable(name: str) -> bool:
    """Whether `name` imports in a fresh interpreter (Ray and datasets fail
    on NumPy 1.x with errors other than ImportError)."""
    if importlib.util.find_spec(name) is None:
        return False
    r = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True)
    return r.returncode == 0


def run_example(name: str, *args: str, timeout: int = 240) -> str:
    # This checkout first; whatever else the session runs with (a NumPy
    # 1.x overlay) stays.
    path = [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=os.pathsep.join(path))
    r = subprocess.run([sys.executable, str(REPO / "examples" / name), *args],
                       capture_output=True, text=True, timeout=timeout, env=env,
                       cwd=str(REPO))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r.stdout


def test_dataloader_training():
    out = run_example("dataloader_training.py", "--samples", "512", "--epochs", "2",
                      "--workers", "2", "--device", "cpu")
    m = re.search(r"dataloader_training: ok, image dtype torch.float32, device cpu, "
                  r"accuracy ([\d.]+)", out)
    assert m, out
    assert float(m.group(1)) > 0.8  # it learns: batches are right


def test_hf_datasets():
    if not importable("datasets"):
        pytest.skip("datasets does not import here")
    out = run_example("hf_datasets.py", "--rows", "96")
    assert ("hf_datasets: ok, pixels (32, 3, 8, 8) torch.float32, label torch.int64, "
            "caption 'image 64', rows 96") in out, out


def test_lightning_transfer():
    if not importable("lightning"):
        pytest.skip("lightning does not import here")
    out = run_example("lightning_transfer.py", "--samples", "256", "--epochs", "1")
    m = re.search(r"lightning_transfer: ok, steps 4, first loss ([\d.]+), last loss "
                  r"([\d.]+)", out)
    assert m, out


def test_ray_data():
    if not importable("ray.data"):  # imports pandas: not on NumPy 1.x
        pytest.skip("ray.data does not import here")
    out = run_example("ray_data.py", "--rows", "512", "--device", "cpu")
    m = re.search(r"ray_data: ok, x dtype torch.float32, device cpu, rows 512", out)
    assert m, out
    acc = [float(a) for a in re.findall(r"accuracy ([\d.]+)", out)]
    assert acc[-1] > acc[0]  # it learns
