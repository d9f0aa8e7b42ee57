"""100k conversions each way, error paths included: no reference or memory growth.

pytorch/pytorch#121138 (from_numpy leaked the array when the dtype check
failed) and #49394, #24200 are the bug class. Marked slow, but part of the
default run.
"""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest
import torch
from conftest import collect

import torchbridge as tb

pytestmark = pytest.mark.slow

N = 100_000
WARMUP = 5_000
# Allocator caches and pymalloc arenas may grow a little; a leak of even one
# small object per call (>= 100 bytes x 100k = 10 MB) or of a 1 KiB buffer
# per call (100 MB) is far above this.
RSS_MARGIN = 6 * 2 ** 20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def swallow(fn, exc):
    def call():
        try:
            fn()
        except exc:
            return
        raise AssertionError(f"expected {exc}")
    return call


SRC = np.arange(256, dtype=np.float32)            # 1 KiB
NEG = np.arange(256, dtype=np.float32)[::-1]       # copied on every call
SWAPPED = np.arange(256).astype(">f4")
F64 = np.arange(256, dtype=np.float64)
DATES = np.zeros(256, "M8[s]")
RAGGED_OBJ = np.array([[1.0], [1.0, 2.0]], dtype=object)
T = torch.arange(256.0)
BF16 = torch.arange(256.0).to(torch.bfloat16)
CONJ = torch.arange(256.0).to(torch.complex64).conj()
SPARSE = torch.eye(16).to_sparse()
RG = torch.arange(256.0, requires_grad=True)

CASES = {
    # to_tensor, success
    "to_tensor-share": (SRC, lambda: tb.to_tensor(SRC)),
    "to_tensor-copy-negative": (NEG, lambda: tb.to_tensor(NEG)),
    "to_tensor-copy-true": (SRC, lambda: tb.to_tensor(SRC, copy=True)),
    "to_tensor-byteswap": (SWAPPED, lambda: tb.to_tensor(SWAPPED)),
    "to_tensor-float-policy": (F64, lambda: tb.to_tensor(F64)),
    "to_tensor-stack": (SRC, lambda: tb.to_tensor([SRC, SRC, NEG])),
    "to_tensor-list": (None, lambda: tb.to_tensor([[1.0, 2.0], [3.0, 4.0]])),
    "to_tensor-scalar": (None, lambda: tb.to_tensor(np.float32(2.0))),
    "to_tensor-tensor-cast": (T, lambda: tb.to_tensor(T, dtype=torch.float64)),
    "to_tensor-requires-grad": (SRC, lambda: tb.to_tensor(SRC, requires_grad=True)),
    # to_tensor, errors
    "to_tensor-err-negative-copy-false": (
        NEG, swallow(lambda: tb.to_tensor(NEG, copy=False), ValueError)),
    "to_tensor-err-policy-copy-false": (
        F64, swallow(lambda: tb.to_tensor(F64, copy=False), ValueError)),
    "to_tensor-err-datetime": (
        DATES, swallow(lambda: tb.to_tensor(DATES), TypeError)),
    "to_tensor-err-ragged-object": (
        RAGGED_OBJ, swallow(lambda: tb.to_tensor(RAGGED_OBJ), TypeError)),
    "to_tensor-err-ragged-list": (
        None, swallow(lambda: tb.to_tensor([[1.0], [2.0, 3.0]]), TypeError)),
    "to_tensor-err-stack-copy-false": (
        SRC, swallow(lambda: tb.to_tensor([SRC, SRC], copy=False), ValueError)),
    "to_tensor-err-dtype-name": (
        SRC, swallow(lambda: tb.to_tensor(SRC, dtype="nope"), TypeError)),
    "to_tensor-err-requires-grad-int": (
        None, swallow(lambda: tb.to_tensor([1, 2], requires_grad=True), ValueError)),
    # to_numpy / to_host, success
    "to_numpy-export": (T, lambda: tb.to_numpy(T)),
    "to_numpy-requires-grad": (RG, lambda: tb.to_numpy(RG)),
    "to_numpy-bfloat16": (BF16, lambda: tb.to_numpy(BF16)),
    "to_numpy-conj": (CONJ, lambda: tb.to_numpy(CONJ)),
    "to_numpy-sparse": (SPARSE, lambda: tb.to_numpy(SPARSE)),
    "to_numpy-cast-byteswap": (T, lambda: tb.to_numpy(T, dtype=">f8")),
    "to_numpy-ndarray-copy": (SRC, lambda: tb.to_numpy(SRC, copy=True)),
    "to_numpy-list": (None, lambda: tb.to_numpy([1.0, 2.0])),
    "to_host-bfloat16": (BF16, lambda: tb.to_host(BF16)),
    "round-trip": (SRC, lambda: tb.to_numpy(tb.to_tensor(SRC))),
    "tree": (SRC, lambda: tb.tree_to_numpy(tb.tree_to_tensor({"a": [SRC, NEG]}))),
    # to_numpy / to_host, errors
    "to_numpy-err-bfloat16-copy-false": (
        BF16, swallow(lambda: tb.to_numpy(BF16, copy=False), ValueError)),
    "to_numpy-err-conj-copy-false": (
        CONJ, swallow(lambda: tb.to_numpy(CONJ, copy=False), ValueError)),
    "to_numpy-err-sparse-copy-false": (
        SPARSE, swallow(lambda: tb.to_numpy(SPARSE, copy=False), ValueError)),
    "to_numpy-err-cast-copy-false": (
        T, swallow(lambda: tb.to_numpy(T, dtype=">f4", copy=False), ValueError)),
    "to_numpy-err-meta": (
        None, swallow(lambda: tb.to_numpy(torch.empty(4, device="meta")), ValueError)),
    "to_numpy-err-list-copy-false": (
        None, swallow(lambda: tb.to_numpy([1, 2], copy=False), ValueError)),
    "to_host-err-qint": (
        T, swallow(lambda: tb.to_host(T, dtype=torch.qint8), TypeError)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_no_growth_over_100k_conversions(case):
    obj, fn = CASES[case]
    for _ in range(WARMUP):
        fn()
    collect()
    refs = sys.getrefcount(obj) if obj is not None else None
    objects = len(gc.get_objects())
    mem = rss()
    for _ in range(N):
        fn()
    collect()
    grown = rss() - mem
    assert grown < RSS_MARGIN, f"RSS grew by {grown / 2 ** 20:.1f} MiB over {N} calls"
    assert len(gc.get_objects()) - objects < 100
    if refs is not None:
        assert sys.getrefcount(obj) == refs
    assert tb._C._pending_releases() == 0
