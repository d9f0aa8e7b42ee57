"""DLPack producers (anything with __dlpack__ / __dlpack_device__), the
second front-end of core's ArrayView: same dtype policy and copy= rules as
ndarrays; writable buffers shared, read-only ones (DLPack 1.0's flag)
copied unless copy=False, and the producer's memory kept alive exactly as
long as a tensor or array uses it.

The producers are thin wrappers over ndarrays and tensors (so the ndarray
and tensor fast paths are not taken), plus pyarrow when it is installed.
"""

from __future__ import annotations

import gc
import sys
import time

import numpy as np
import pytest
import torch

import torchbridge as tb

NP_VERSIONED = tuple(int(x) for x in np.__version__.split(".")[:2]) >= (2, 1)
needs_versioned = pytest.mark.skipif(
    not NP_VERSIONED, reason="NumPy < 2.1 exports neither DLPack 1.x nor read-only arrays")


class Producer:
    """Exposes only the DLPack protocol of `x` (an ndarray or a tensor)."""

    def __init__(self, x, legacy=False):
        self.x = x
        self.legacy = legacy
        self.calls = []

    def __dlpack__(self, *, stream=None, max_version=None, **kw):
        self.calls.append({"stream": stream, "max_version": max_version, **kw})
        if self.legacy:
            if max_version is not None:
                raise TypeError("__dlpack__() got an unexpected keyword argument 'max_version'")
            return self.x.__dlpack__()
        if max_version is None:
            return self.x.__dlpack__()
        return self.x.__dlpack__(max_version=max_version)

    def __dlpack_device__(self):
        return self.x.__dlpack_device__()


def test_writable_buffer_is_shared_both_ways():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = Producer(a)
    t = tb.to_tensor(p)
    assert t.data_ptr() == a.ctypes.data and t.dtype == torch.float32
    assert t.shape == (3, 4) and t.stride() == (4, 1)
    t[0, 0] = 100
    assert a[0, 0] == 100
    if NP_VERSIONED:
        assert p.calls[0]["max_version"] == (1, 0)  # DLPack 1.x asked first
    n = tb.to_numpy(Producer(a))
    assert n.ctypes.data == a.ctypes.data and n.flags.writeable
    n[1, 1] = -1
    assert a[1, 1] == -1


def test_legacy_producer_falls_back_to_the_old_protocol():
    a = np.arange(5, dtype=np.int64)
    p = Producer(a, legacy=True)
    t = tb.to_tensor(p)
    assert t.data_ptr() == a.ctypes.data and torch.equal(t, torch.arange(5))
    assert [c["max_version"] for c in p.calls] == [(1, 0), None]


def test_dtype_policy_and_explicit_dtype():
    a = np.linspace(0, 1, 7)
    t = tb.to_tensor(Producer(a))
    assert t.dtype == torch.float32 and t.data_ptr() != a.ctypes.data
    assert np.array_equal(t.numpy(), a.astype(np.float32))
    k = tb.to_tensor(Producer(a), float_dtype=None)
    assert k.dtype == torch.float64 and k.data_ptr() == a.ctypes.data
    h = tb.to_tensor(Producer(a), dtype=torch.float16)
    assert np.array_equal(h.numpy(), a.astype(np.float16))
    with pytest.raises(ValueError, match=r"float64 becomes float32.*float_dtype=None"):
        tb.to_tensor(Producer(a), copy=False)
    assert tb.to_numpy(Producer(a)).dtype == np.float64  # no policy on the way out


@needs_versioned
def test_read_only_buffer_is_copied_unless_copy_false():
    a = np.arange(6.0, dtype=np.float32)
    a.flags.writeable = False
    t = tb.to_tensor(Producer(a))
    assert t.data_ptr() != a.ctypes.data and torch.equal(t, torch.arange(6.0))
    t[0] = 5  # the copy is ours to write
    assert a[0] == 0
    s = tb.to_tensor(Producer(a), copy=False)  # the caller's promise
    assert s.data_ptr() == a.ctypes.data
    n = tb.to_numpy(Producer(a))  # shared, and the array says it is read-only
    assert n.ctypes.data == a.ctypes.data and not n.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        n[0] = 1
    w = tb.to_numpy(Producer(a), copy=True)
    assert w.ctypes.data != a.ctypes.data and w.flags.writeable


def test_copy_true_and_layouts_torch_cannot_view():
    a = np.arange(10, dtype=np.float32)
    c = tb.to_tensor(Producer(a), copy=True)
    assert c.data_ptr() != a.ctypes.data and torch.equal(c, torch.arange(10.0))
    r = a[::-2]  # negative element strides: copied, in C order
    t = tb.to_tensor(Producer(r))
    assert np.array_equal(t.numpy(), r) and t.is_contiguous()
    with pytest.raises(ValueError, match="negative strides"):
        tb.to_tensor(Producer(r), copy=False)
    assert np.array_equal(tb.to_numpy(Producer(r)), r)
    with pytest.raises(ValueError, match="negative strides"):
        tb.to_numpy(Producer(r), copy=False)
    m = np.arange(12, dtype=np.int16).reshape(3, 4)[:, 1:3]  # strided: shared
    s = tb.to_tensor(Producer(m))
    assert s.data_ptr() == m.ctypes.data and s.stride() == (4, 1)


def test_tensor_producers_keep_torch_dtypes():
    b = torch.arange(4, dtype=torch.bfloat16)
    t = tb.to_tensor(Producer(b))
    assert t.dtype == torch.bfloat16 and t.data_ptr() == b.data_ptr()
    f8 = torch.zeros(3, dtype=torch.float8_e4m3fn)
    try:
        f8.__dlpack__()
    except Exception:  # noqa: BLE001 - this torch cannot export float8
        return
    assert tb.to_tensor(Producer(f8)).dtype == torch.float8_e4m3fn


def test_the_producers_memory_lives_exactly_as_long_as_the_tensor():
    a = np.arange(1000, dtype=np.float32)
    base = sys.getrefcount(a)
    t = tb.to_tensor(Producer(a))
    assert sys.getrefcount(a) > base  # the capsule holds the array
    n = tb.to_numpy(Producer(a))
    del t
    gc.collect()
    assert sys.getrefcount(a) > base  # the array `n` still needs it
    del n
    gc.collect()
    assert sys.getrefcount(a) == base  # released exactly once, not leaked
    c = tb.to_tensor(Producer(a), copy=True)
    assert sys.getrefcount(a) == base  # a copy does not hold the producer
    del c


def test_release_on_a_thread_without_the_gil():
    a = np.arange(100, dtype=np.float32)
    base = sys.getrefcount(a)
    t = tb.to_tensor(Producer(a))
    tb._C._release_in_native_thread(t, 20)
    del t  # the native thread drops the last reference, without the GIL
    deadline = time.monotonic() + 10
    while sys.getrefcount(a) != base and time.monotonic() < deadline:
        tb._C._drain_releases()  # runs the queued decref (the deleter), once
        time.sleep(0.005)
    gc.collect()
    assert sys.getrefcount(a) == base and tb._C._pending_releases() == 0


def test_producers_that_refuse_fall_back_or_raise():
    class Refuses:
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kw):
            raise BufferError("cannot export this buffer")

        def __dlpack_device__(self):
            return (1, 0)

    class RefusesWithArray(Refuses):
        def __array__(self, dtype=None, copy=None):
            return self.a

    a = np.arange(3, dtype=np.int32)
    assert torch.equal(tb.to_tensor(RefusesWithArray(a)), torch.arange(3, dtype=torch.int32))
    with pytest.raises(BufferError, match="cannot export"):
        tb.to_tensor(Refuses(a))

    class BadDevice(Producer):
        def __dlpack_device__(self):
            return "cpu"

    with pytest.raises(TypeError, match="not a .device_type, device_id. tuple"):
        tb.to_tensor(BadDevice(a))

    class NotACapsule(Producer):
        def __dlpack__(self, **kw):
            return 42

    with pytest.raises(TypeError, match="not a DLPack capsule"):
        tb.to_tensor(NotACapsule(a))


def test_pyarrow_arrays_convert_though_they_speak_dlpack():
    # pyarrow arrays have __dlpack__ (read-only flag set), but the Arrow C
    # data interface wins (it knows nulls and dictionaries): test_arrow.py.
    # exc_type: a pyarrow built for NumPy 2 fails to import under NumPy 1.x.
    pa = pytest.importorskip("pyarrow", exc_type=ImportError)
    arr = pa.array(np.arange(5, dtype=np.int64))
    if not hasattr(arr, "__dlpack__"):
        pytest.skip("this pyarrow has no __dlpack__")
    t = tb.to_tensor(arr)
    assert torch.equal(t, torch.arange(5))


@pytest.mark.parametrize("dtype", [
    torch.bool, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
    torch.float16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    torch.bfloat16])
def test_every_dlpack_dtype_code_maps_to_the_same_torch_dtype(dtype):
    x = torch.arange(3).to(dtype)
    t = tb.to_tensor(Producer(x), float_dtype=None)
    assert t.dtype == dtype and t.data_ptr() == x.data_ptr() and torch.equal(t, x)
