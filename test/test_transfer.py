"""The transfer engine: host <-> CUDA moves, cast placement, coalesced trees.

CUDA tests skip without a GPU (CI has none); the packing logic of the
coalesced transfer is also checked on the meta device, which runs anywhere.
"""

from __future__ import annotations

import collections
import dataclasses
import time

import numpy as np
import pytest
import torch

import torchbridge as tb
from conftest import needs_cuda, needs_two_gpus


@pytest.fixture
def small_chunks():
    """Force the chunked pipelines with small arrays, then restore."""
    saved = tb._C._transfer_tuning()
    tb._C._transfer_tuning(chunk_bytes=4096, min_chunked_bytes=8192, ring_slots=2,
                           direct_max_bytes=1024)
    yield
    tb._C._transfer_tuning(**saved)


def _tree():
    return {
        "img": np.random.randint(0, 255, (4, 5, 3), dtype=np.uint8),
        "x": np.random.randn(7).astype(np.float64),
        "ids": [np.arange(3, dtype=np.int64), np.float32(2.5), "label"],
        "empty": np.zeros((0, 4), dtype=np.int16),
        "rev": np.arange(10, dtype=np.float32)[::-3],
        "swapped": np.arange(4, dtype=">f4"),
        "t": torch.arange(6, dtype=torch.float64).reshape(2, 3),
        "none": None,
    }


# --- runs everywhere --------------------------------------------------------

def test_coalesced_tree_packs_every_leaf_with_its_dtype_and_shape_on_meta():
    tree = _tree()
    out = tb.tree_to_tensor(tree, device="meta")
    ref = tb.tree_to_tensor(tree)  # leaf by leaf, on the CPU
    for k in ("img", "x", "empty", "rev", "swapped", "t"):
        assert out[k].device.type == "meta"
        assert out[k].dtype == ref[k].dtype and out[k].shape == ref[k].shape
    assert out["ids"][2] == "label" and out["none"] is None
    # One device buffer: 64-byte aligned slots, in leaf order.
    storages = {out[k].untyped_storage().nbytes() for k in ("img", "x", "rev", "t")}
    assert len(storages) == 1
    for k in ("img", "x", "rev", "t"):
        assert (out[k].storage_offset() * out[k].element_size()) % 64 == 0


def test_coalesced_tree_errors_before_moving_anything():
    tree = {"ok": np.ones(3), "bad": np.array(["a", "b"])}
    with pytest.raises(TypeError, match="dtype <U1"):
        tb.tree_to_tensor(tree, device="meta")


def test_tuning_knobs_round_trip():
    saved = tb._C._transfer_tuning()
    try:
        got = tb._C._transfer_tuning(chunk_bytes=1 << 20)
        assert got["chunk_bytes"] == 1 << 20
        with pytest.raises(ValueError, match="positive"):
            tb._C._transfer_tuning(chunk_bytes=0)
    finally:
        tb._C._transfer_tuning(**saved)
    assert tb._C._transfer_tuning() == saved


# --- CUDA -----------------------------------------------------------------

DTYPES = [np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint16,
          np.uint32, np.uint64, np.float16, np.float32, np.float64, np.complex64,
          np.complex128]


def _rand(shape, dtype, rng):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if dtype.kind in "iu":
        return rng.integers(0, 100, shape).astype(dtype)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@needs_cuda
@pytest.mark.parametrize("chunked", [False, True])
def test_to_tensor_to_cuda_values_for_every_dtype(chunked, request):
    if chunked:
        request.getfixturevalue("small_chunks")
    rng = np.random.default_rng(0)
    for dt in DTYPES:
        a = _rand((64, 33), dt, rng)
        for src in (a, a.T, a[::-2, 1::3], np.ascontiguousarray(a).astype(a.dtype.newbyteorder())):
            t = tb.to_tensor(src, device="cuda")
            want = tb.to_tensor(src)  # the CPU result defines the values
            assert t.device.type == "cuda" and t.dtype == want.dtype
            assert torch.equal(t.cpu(), want), (dt, src.strides)


@needs_cuda
@pytest.mark.parametrize("chunked", [False, True])
def test_to_numpy_of_cuda_tensors_for_every_dtype(chunked, request):
    if chunked:
        request.getfixturevalue("small_chunks")
    for dt in [torch.bool, torch.uint8, torch.int32, torch.int64, torch.float16,
               torch.bfloat16, torch.float32, torch.float64, torch.complex64]:
        t = (torch.randn(96, 50, device="cuda") * 10).to(dt)
        for src in (t, t.t(), t[::3, 1::2]):
            a = tb.to_numpy(src)
            assert isinstance(a, np.ndarray)
            ref = src.cpu()
            ref = ref.float() if dt == torch.bfloat16 else ref
            np.testing.assert_array_equal(a, ref.numpy())


@needs_cuda
def test_narrowing_cast_runs_before_the_upload_widening_after():
    a = np.random.randn(1000)
    t = tb.to_tensor(a, device="cuda")  # float64 -> float32 on the host
    assert t.dtype == torch.float32
    assert torch.equal(t.cpu(), torch.from_numpy(a).float())
    u = np.random.randint(0, 255, 1000, dtype=np.uint8)
    f = tb.to_tensor(u, dtype=torch.float32, device="cuda")  # widened on GPU
    assert torch.equal(f.cpu(), torch.from_numpy(u).float())


@needs_cuda
def test_non_blocking_upload_survives_mutating_the_source_right_away():
    torch.cuda.synchronize()
    a = np.random.randn(4 << 20).astype(np.float32)  # 16 MiB: chunked
    expected = a.copy()
    torch.cuda._sleep(50_000_000)  # keep the stream busy: the DMA must queue
    t = tb.to_tensor(a, device="cuda", non_blocking=True)
    a[:] = -1.0  # the engine staged the data: this must not reach the GPU
    del a
    torch.cuda.synchronize()
    assert torch.equal(t.cpu(), torch.from_numpy(expected))


@needs_cuda
def test_small_non_blocking_upload_survives_mutating_the_source_right_away():
    # Small uploads go through the driver's own pageable staging.
    torch.cuda.synchronize()
    a = np.random.randn(1000).astype(np.float64)
    expected = a.astype(np.float32)
    torch.cuda._sleep(50_000_000)
    t = tb.to_tensor(a, device="cuda", non_blocking=True)  # narrowed on the host
    a[:] = -1.0
    torch.cuda.synchronize()
    assert t.dtype == torch.float32
    assert torch.equal(t.cpu(), torch.from_numpy(expected))


@needs_cuda
def test_non_blocking_returns_before_the_copy_on_a_busy_stream():
    a = np.ones(1 << 20, dtype=np.float32)
    tb.to_tensor(a, device="cuda")  # warm the pinned pool
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)  # ~100 ms of GPU time
    start = time.perf_counter()
    t = tb.to_tensor(a, device="cuda", non_blocking=True)
    returned = time.perf_counter() - start
    torch.cuda.synchronize()
    assert t.sum().item() == a.size
    assert returned < 0.05  # did not wait for the sleeping stream


@needs_cuda
def test_current_stream_is_honoured():
    s = torch.cuda.Stream()
    a = np.arange(1 << 18, dtype=np.float32)
    with torch.cuda.stream(s):
        torch.cuda._sleep(50_000_000)
        t = tb.to_tensor(a, device="cuda", non_blocking=True)
        y = tb.to_tensor(a.astype(np.uint8), dtype=torch.float32, device="cuda",
                         non_blocking=True)
    s.synchronize()
    assert torch.equal(t.cpu(), torch.from_numpy(a))
    assert torch.equal(y.cpu(), torch.from_numpy(a.astype(np.uint8)).float())
    with torch.cuda.stream(s):
        g = torch.arange(1000.0, device="cuda") * 2
        back = tb.to_numpy(g)  # must wait for s, where g is produced
    np.testing.assert_array_equal(back, np.arange(1000.0, dtype=np.float32) * 2)


@needs_cuda
def test_to_numpy_of_cuda_tensor_lands_in_pinned_memory_and_shares_it():
    t = torch.arange(100.0, device="cuda")
    h = tb.to_host(t)
    assert h.is_pinned() and h.device.type == "cpu"
    a = tb.to_numpy(t)
    assert a.base.nbytes >= 400
    pinned = tb.to_host(torch.ones(3), pin_memory=True)
    assert pinned.is_pinned()


@needs_cuda
def test_requires_grad_cuda_tensor_to_numpy_and_to_tensor_keeps_graph():
    w = torch.randn(5, device="cuda", requires_grad=True)
    np.testing.assert_array_equal(tb.to_numpy(w), w.detach().cpu().numpy())
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    y = tb.to_tensor(x, device="cuda")  # float32 on cuda, graph kept
    assert y.is_cuda and y.dtype == torch.float32 and y.requires_grad
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(5, dtype=torch.float64))


@needs_cuda
def test_conj_and_neg_cuda_tensors_resolve():
    z = torch.randn(6, dtype=torch.complex64, device="cuda")
    np.testing.assert_array_equal(tb.to_numpy(z.conj()), z.cpu().numpy().conj())
    n = torch.randn(6, device="cuda")._neg_view()
    np.testing.assert_array_equal(tb.to_numpy(n), -n.neg().cpu().numpy())


@needs_cuda
@pytest.mark.parametrize("chunked", [False, True])
def test_coalesced_tree_upload_equals_leaf_by_leaf(chunked, request):
    if chunked:
        request.getfixturevalue("small_chunks")
    tree = _tree()
    for kw in ({}, {"dtype": torch.float32}, {"float_dtype": None}):
        got = tb.tree_to_tensor(tree, device="cuda", **kw)
        for k in ("img", "x", "empty", "rev", "swapped", "t"):
            ref = tb.to_tensor(tree[k], device="cuda", **kw)
            assert got[k].dtype == ref.dtype and got[k].shape == ref.shape
            assert got[k].is_cuda and torch.equal(got[k], ref), (k, kw)
        assert torch.equal(got["ids"][0], tb.to_tensor(tree["ids"][0], device="cuda"))
        assert got["ids"][1].shape == () and got["ids"][1].item() == 2.5
        assert got["ids"][2] == "label" and got["none"] is None


@needs_cuda
def test_coalesced_tree_upload_is_one_transfer():
    leaves = {f"k{i}": np.random.randn(16).astype(np.float32) for i in range(64)}
    out = tb.tree_to_tensor(leaves, device="cuda")
    ptrs = {v.untyped_storage().data_ptr() for v in out.values()}
    assert len(ptrs) == 1  # views of one device buffer
    for k, v in leaves.items():
        assert torch.equal(out[k].cpu(), torch.from_numpy(v))


@needs_cuda
@pytest.mark.parametrize("non_blocking", [False, True])
def test_pinned_leaves_skip_the_pack(non_blocking):
    # A batch tb.collate(pin_memory=True) made: the large pinned leaf is
    # DMA'd from where it is (its own device storage), the small and the
    # unpinned ones share one packed buffer; every value arrives.
    big = torch.randn(64, 3, 32, 32).pin_memory()  # 768 KB, float32
    wide = torch.randn(256, 256, dtype=torch.float64).pin_memory()  # cast: packed
    batch = {"image": big, "label": torch.arange(64).pin_memory(),
             "w": wide, "plain": torch.randn(100_000)}
    out = tb.tree_to_tensor(batch, device="cuda", non_blocking=non_blocking)
    torch.cuda.synchronize()
    assert torch.equal(out["image"].cpu(), big)
    assert torch.equal(out["label"].cpu(), batch["label"])
    assert torch.equal(out["w"].cpu(), wide.float())
    assert torch.equal(out["plain"].cpu(), batch["plain"])
    storage = {k: v.untyped_storage().data_ptr() for k, v in out.items()}
    assert storage["label"] == storage["w"] == storage["plain"]  # one pack
    assert storage["image"] != storage["label"]


@needs_cuda
def test_coalesced_tree_download_equals_leaf_by_leaf():
    tree = {
        "a": torch.randn(3, 4, device="cuda"),
        "b": [torch.arange(5, device="cuda", dtype=torch.int64), "keep"],
        "c": torch.randn(2, device="cuda", dtype=torch.bfloat16),
        "d": torch.randn(4, 2, device="cuda").t(),
        "e": torch.empty(0, 3, device="cuda"),
        "f": torch.randn(3, requires_grad=True, device="cuda"),
        "g": torch.randn(2, dtype=torch.complex64, device="cuda").conj(),
        "cpu": torch.ones(2),
        "np": np.ones(2),
    }
    got = tb.tree_to_numpy(tree)
    for k in ("a", "c", "d", "e", "f", "g", "cpu", "np"):
        ref = tb.to_numpy(tree[k])
        assert got[k].dtype == ref.dtype and got[k].shape == ref.shape
        np.testing.assert_array_equal(got[k], ref)
    np.testing.assert_array_equal(got["b"][0], np.arange(5))
    assert got["b"][1] == "keep"
    # The CUDA leaves that need no host-side cast share one pinned buffer.
    assert got["a"].base.data_ptr == got["b"][0].base.data_ptr


@needs_cuda
def test_tree_types_are_kept_on_the_coalesced_path():
    @dataclasses.dataclass(frozen=True)
    class Batch:
        x: np.ndarray
        y: list

    Point = collections.namedtuple("Point", "u v")
    tree = Batch(x=np.ones(2), y=[Point(np.zeros(1), np.int32(3))])
    out = tb.tree_to_tensor(tree, device="cuda")
    assert type(out) is Batch and type(out.y[0]) is Point
    assert out.x.is_cuda and out.y[0].v.item() == 3
    back = tb.tree_to_numpy(out)
    assert type(back) is Batch and isinstance(back.y[0].u, np.ndarray)


@needs_cuda
def test_error_mid_tree_leaves_nothing_behind():
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    tree = {"big": np.ones(1 << 20, np.float32), "bad": np.array([object()])}
    with pytest.raises(TypeError, match="object arrays"):
        tb.tree_to_tensor(tree, device="cuda")
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before


@needs_cuda
def test_zero_size_and_zero_dim_to_and_from_cuda():
    for a in (np.zeros((0, 3), np.float32), np.float64(1.5), np.array(7, np.int16)):
        t = tb.to_tensor(a, device="cuda")
        assert t.is_cuda and t.shape == np.shape(a)
        np.testing.assert_array_equal(tb.to_numpy(t), tb.to_numpy(tb.to_tensor(a)))


@needs_cuda
def test_list_of_arrays_stacks_straight_to_cuda():
    arrays = [np.full((2, 3), i, dtype=np.float64) for i in range(4)]
    t = tb.to_tensor(arrays, device="cuda")
    assert t.is_cuda and t.dtype == torch.float32 and t.shape == (4, 2, 3)
    assert torch.equal(t.cpu(), torch.from_numpy(np.stack(arrays)).float())


@needs_cuda
def test_cuda_tensor_to_other_dtype_and_cpu_via_to_tensor():
    t = torch.randn(10, device="cuda", dtype=torch.float64)
    c = tb.to_tensor(t, device="cpu")
    assert c.device.type == "cpu" and c.dtype == torch.float32
    assert torch.equal(c, t.cpu().float())


@needs_two_gpus
def test_second_gpu_is_honoured():
    a = np.random.randn(1000).astype(np.float32)
    t = tb.to_tensor(a, device="cuda:1")
    assert t.device == torch.device("cuda:1")
    assert torch.equal(t.cpu(), torch.from_numpy(a))
    out = tb.tree_to_tensor({"a": a, "b": a * 2}, device="cuda:1")
    assert out["b"].device == torch.device("cuda:1")
    back = tb.tree_to_numpy({"x": torch.ones(3, device="cuda:0"),
                             "y": torch.full((3,), 2.0, device="cuda:1")})
    assert back["y"].tolist() == [2.0, 2.0, 2.0] and back["x"].tolist() == [1.0] * 3
