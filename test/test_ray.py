"""torchbridge.ray.CollateFn on a real local Ray cluster (2 CPUs), plus its
rules called directly. Skipped where Ray does not import (NumPy 1.x)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

try:
    import ray
    from ray.data.collate_fn import NumpyBatchCollateFn

    from torchbridge.ray import CollateFn
except Exception as e:  # noqa: BLE001  (Ray fails to import on NumPy 1.x)
    pytest.skip(f"ray unavailable: {type(e).__name__}: {e}", allow_module_level=True)

from conftest import needs_cuda


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def test_import_torchbridge_does_not_import_ray():
    code = "import sys, torchbridge; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_is_the_class_ray_expects():
    assert isinstance(CollateFn(), NumpyBatchCollateFn)
    assert repr(CollateFn("cpu", float_dtype=None)) == (
        "CollateFn(device=device(type='cpu'), float_dtype=None)")
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) dtypes"):
        CollateFn(dtypes=torch.float32)


def test_iter_torch_batches_values_policy_and_no_warning(cluster):
    data = np.arange(40 * 3, dtype=np.float64).reshape(40, 3)
    ds = ray.data.from_numpy(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation, no read-only warning
        batches = list(ds.iter_torch_batches(collate_fn=CollateFn(), batch_size=16))
    assert [b["data"].shape[0] for b in batches] == [16, 16, 8]
    got = torch.cat([b["data"] for b in batches])
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.from_numpy(data).float())


def test_object_store_columns_are_copied_never_aliased(cluster):
    # float32 needs no cast: the read-only object-store buffer is copied
    # once; writing into the batch must not change the dataset.
    data = np.arange(32, dtype=np.float32).reshape(8, 4)
    ds = ray.data.from_numpy(data).materialize()
    for b in ds.iter_torch_batches(collate_fn=CollateFn(), batch_size=8):
        b["data"].add_(1000)
    again = next(iter(ds.iter_torch_batches(collate_fn=CollateFn(), batch_size=8)))
    assert torch.equal(again["data"], torch.from_numpy(data))


def test_read_only_column_is_copied_once_directly():
    a = np.arange(6, dtype=np.float32)
    a.flags.writeable = False
    out = CollateFn()({"a": a})["a"]
    assert out.data_ptr() != a.ctypes.data
    out += 1
    assert a.tolist() == [0, 1, 2, 3, 4, 5]
    # copy=False: the caller's promise; then it is shared.
    shared = CollateFn(copy=False)({"a": a})["a"]
    assert shared.data_ptr() == a.ctypes.data
    # A writable column is shared (no copy at all).
    w = np.arange(3, dtype=np.int64)
    assert CollateFn()({"w": w})["w"].data_ptr() == w.ctypes.data


def test_object_columns(cluster):
    rows = [{"img": np.full((2, 2), float(i)), "y": i} for i in range(6)]
    ds = ray.data.from_items(rows)
    b = next(iter(ds.iter_torch_batches(collate_fn=CollateFn(), batch_size=6)))
    assert b["img"].shape == (6, 2, 2) and b["img"].dtype == torch.float32
    assert torch.equal(b["img"][5], torch.full((2, 2), 5.0))
    assert torch.equal(b["y"], torch.arange(6))


def test_ragged_and_text_columns_name_the_column():
    col = np.empty(2, dtype=object)
    col[0], col[1] = np.zeros((2, 2)), np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"column 'img' holds arrays of different shapes: "
                       r"row 1 has shape \(2, 3\), but row 0 has shape \(2, 2\)"):
        CollateFn()({"img": col, "y": np.arange(2)})
    text = np.array(["a", "b"], dtype=object)
    with pytest.raises(TypeError, match=r"column 'text' holds str values"):
        CollateFn()({"text": text})
    with pytest.raises(TypeError, match=r"column 'u': to_tensor: .*<U1"):
        CollateFn()({"ok": np.zeros(2), "u": np.array(["a", "b"])})
    with pytest.raises(TypeError, match="expects Ray's NumPy batch"):
        CollateFn()(np.zeros(3))


@needs_cuda
def test_cuda_device_moves_all_columns(cluster):
    ds = ray.data.from_items([{"x": np.ones(4) * i, "y": i} for i in range(8)])
    b = next(iter(ds.iter_torch_batches(collate_fn=CollateFn(device="cuda"),
                                        device="cuda", batch_size=8)))
    assert b["x"].is_cuda and b["y"].is_cuda and b["x"].dtype == torch.float32
    assert torch.equal(b["y"].cpu(), torch.arange(8))
