"""python -m torchbridge: the self-check and speed table."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import torch

import torchbridge as tb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROWS = [
    ("ndarray(float32) -> tensor", "torch.from_numpy"),
    ("ndarray(float32) -> tensor", "torch.as_tensor"),
    ("tensor -> ndarray", "Tensor.numpy()"),
    ("tensor -> ndarray", "Tensor.numpy(force=True)"),
    ("requires_grad tensor -> ndarray", "Tensor.detach().numpy()"),
    ("requires_grad tensor -> ndarray", "Tensor.numpy(force=True)"),
]


def run_main(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "torchbridge", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_main_exits_zero_and_prints_the_table():
    r = run_main("--number", "200", "--repeat", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "Traceback" not in r.stderr
    assert f"torchbridge  {tb.__version__}" in out
    assert f"torch        {torch.__version__}" in out
    assert f"numpy        {np.__version__}" in out
    assert "FAIL" not in out and "all checks passed" in out
    assert out.count("  ok    ") == 5
    assert "median of 2 runs x 200 calls" in out
    for what, peer in ROWS:
        row = re.search(re.escape(what) + r"\s+" + re.escape(peer) +
                        r"\s+(\d+) ns\s+(\d+) ns\s+(\d+\.\d\d)\s*$", out, re.M)
        assert row, f"no row for {what} / {peer}:\n{out}"
        mine, theirs, ratio = int(row[1]), int(row[2]), float(row[3])
        assert mine > 0 and theirs > 0 and ratio > 0


def test_main_help_exits_zero():
    r = run_main("--help")
    assert r.returncode == 0 and "--number" in r.stdout and "--repeat" in r.stdout


def test_main_bad_argument_exits_nonzero():
    r = run_main("--number", "many")
    assert r.returncode != 0 and "invalid int value" in r.stderr


def test_main_returns_one_when_a_check_fails(monkeypatch, capsys):
    import torchbridge.__main__ as m

    def broken():
        raise AssertionError("on purpose")

    monkeypatch.setattr(m, "_checks", lambda: [("broken check", broken)])
    assert m.main(["--number", "5", "--repeat", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  broken check: AssertionError: on purpose" in out
    assert "1 check(s) FAILED" in out
