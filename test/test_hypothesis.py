"""Property tests: random dtypes x shapes x strided views, both directions.

Every example checks values (NaN-aware, bit-exact where no cast happens), the
dtype the policy gives, and that memory is shared exactly when the README
(Python API, "Sharing") says it may be.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import torchbridge as tb

# Casting float64 -> float32 overflows to inf; NumPy warns when it does the
# cast (byte-swapped or negative-stride inputs go through NumPy's loops).
pytestmark = pytest.mark.filterwarnings(
    "ignore:overflow encountered in cast:RuntimeWarning")

MAP = {
    np.dtype(np.bool_): torch.bool,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.uint16): torch.uint16,
    np.dtype(np.uint32): torch.uint32,
    np.dtype(np.uint64): torch.uint64,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
    np.dtype(np.complex64): torch.complex64,
    np.dtype(np.complex128): torch.complex128,
}
POLICY = {np.dtype(np.float64): np.dtype(np.float32),
          np.dtype(np.complex128): np.dtype(np.complex64)}

dtypes = st.sampled_from(list(MAP))
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@st.composite
def strided_views(draw, byte_orders=False):
    """An array (possibly byte-swapped, read-only) and a random view of it."""
    dtype = draw(dtypes)
    if byte_orders and dtype.itemsize > 1 and draw(st.booleans()):
        dtype = dtype.newbyteorder(">" if dtype.byteorder in "<=" and
                                   np.little_endian else "<")
    base = draw(hnp.arrays(dtype, draw(shapes)))
    view = base
    if view.ndim:
        index = []
        for n in view.shape:
            step = draw(st.sampled_from([1, 1, 2, 3, -1, -2]))
            start = draw(st.integers(0, max(n - 1, 0)))
            stop = draw(st.integers(0, n))
            if step < 0:
                start, stop = (n - 1 - start), (None if stop == n else n - 1 - stop)
            index.append(slice(start, stop, step))
        view = view[tuple(index)]
        if draw(st.booleans()):
            view = view.transpose(draw(st.permutations(range(view.ndim))))
    if draw(st.booleans()):
        view = view.view()
        view.flags.writeable = False
    return view


def shareable_layout(a: np.ndarray) -> bool:
    """The README's sharing rule, written out independently of the code."""
    if a.size == 0:
        return True
    if a.dtype.itemsize > 1 and not a.dtype.isnative:
        return False
    if not a.flags.aligned:
        return False
    return all(s >= 0 and s % a.itemsize == 0
               for n, s in zip(a.shape, a.strides) if n > 1)


def policy_dtype(d: np.dtype, keep: bool) -> np.dtype:
    native = d.newbyteorder("=")
    return native if keep else POLICY.get(native, native)


def same_values(got: np.ndarray, want: np.ndarray, exact: bool) -> bool:
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if exact:
        return np.ascontiguousarray(got).tobytes() == \
            np.ascontiguousarray(want).tobytes()
    return np.array_equal(got, want, equal_nan=True)


@given(a=strided_views(byte_orders=True), keep=st.booleans())
def test_to_tensor_shares_exactly_when_allowed(a, keep):
    kw = {"float_dtype": None} if keep else {}
    target = policy_dtype(a.dtype, keep)
    cast = target != a.dtype.newbyteorder("=")
    may_share = not cast and shareable_layout(a)
    want = a.astype(target)  # NumPy's values, in the target dtype

    t = tb.to_tensor(a, **kw)
    assert t.dtype == MAP[target]
    assert tuple(t.shape) == a.shape
    got = t.numpy()
    assert same_values(got, want, exact=not cast)
    if a.size:
        assert np.shares_memory(got, a) == (may_share and a.flags.writeable)

    fresh = tb.to_tensor(a, copy=True, **kw)
    assert same_values(fresh.numpy(), want, exact=not cast)
    if a.size:
        assert not np.shares_memory(fresh.numpy(), a)

    if may_share:
        shared = tb.to_tensor(a, copy=False, **kw)  # read-only too
        if a.size:
            assert np.shares_memory(shared.numpy(), a)
            for n, s, ts in zip(a.shape, a.strides, shared.stride()):
                if n > 1:
                    assert ts * a.itemsize == s
        assert same_values(shared.numpy(), want, exact=True)
    else:
        with pytest.raises(ValueError, match="copy=None"):
            tb.to_tensor(a, copy=False, **kw)


@given(a=strided_views(), keep=st.booleans())
def test_round_trip_keeps_values(a, keep):
    kw = {"float_dtype": None} if keep else {}
    target = policy_dtype(a.dtype, keep)
    back = tb.to_numpy(tb.to_tensor(a, **kw))
    assert isinstance(back, np.ndarray)
    assert same_values(back, a.astype(target), exact=target == a.dtype)
    if a.size and target == a.dtype and shareable_layout(a) and a.flags.writeable:
        assert np.shares_memory(back, a)


@given(data=st.data(), dtype=dtypes, shape=shapes)
def test_to_numpy_shares_any_strided_view(data, dtype, shape):
    base = data.draw(hnp.arrays(dtype, shape))
    t = torch.from_numpy(base.copy())
    if t.dim():
        index = tuple(slice(data.draw(st.integers(0, max(n - 1, 0))), None,
                            data.draw(st.integers(1, 3))) for n in t.shape)
        t = t[index]
        t = t.permute(*data.draw(st.permutations(range(t.dim()))))
    want = t.numpy()  # torch's own export as the reference
    a = tb.to_numpy(t)
    assert a.dtype == dtype
    assert same_values(a, want, exact=True)
    if t.numel():
        assert a.ctypes.data == t.data_ptr()
        assert a.strides == tuple(s * t.element_size() for s in t.stride())
        assert a.flags.writeable
    c = tb.to_numpy(t, copy=True)
    assert same_values(c, want, exact=True)
    if t.numel():
        assert not np.shares_memory(c, want)


def comparable_cast(a: np.ndarray, to: np.dtype) -> bool:
    """Whether C (and so NumPy and torch alike) defines the cast's result."""
    if a.dtype.kind == "c" and to.kind != "c":
        return False  # NumPy warns and drops the imaginary part
    if a.dtype.kind in "fc" and to.kind in "iu":
        info = np.iinfo(to)
        with np.errstate(all="ignore"):
            # Out-of-range float -> int casts are undefined behaviour.
            return bool((np.isfinite(a) & (a >= info.min) & (a < info.max)).all())
    return True


@given(a=strided_views(byte_orders=True), to=dtypes)
def test_explicit_dtype_matches_numpy_astype(a, to):
    if not comparable_cast(a, to):
        return
    with np.errstate(all="ignore"):
        want = a.astype(to)
    t = tb.to_tensor(a, dtype=MAP[to])
    assert t.dtype == MAP[to] and tuple(t.shape) == a.shape
    assert np.array_equal(t.numpy(), want, equal_nan=to.kind in "fc")


@given(data=st.data(), dtype=dtypes, shape=shapes, to=dtypes)
def test_to_numpy_dtype_matches_numpy_astype(data, dtype, shape, to):
    base = data.draw(hnp.arrays(dtype, shape))
    if not comparable_cast(base, to):
        return
    with np.errstate(all="ignore"):
        want = base.astype(to)
    a = tb.to_numpy(torch.from_numpy(base.copy()), dtype=to)
    assert a.dtype == to
    assert np.array_equal(a, want, equal_nan=to.kind in "fc")
