"""The dtype map and the float policy, both directions (README, Python API:
"dtypes")."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import NUMPY2, needs_ml_dtypes

import torchbridge as tb

pytestmark = pytest.mark.filterwarnings(
    "ignore:ComplexHalf support is experimental:UserWarning")

# NumPy dtype -> the torch dtype of the same name (README "dtypes": the map).
DTYPE_MAP = [
    (np.bool_, torch.bool),
    (np.int8, torch.int8),
    (np.int16, torch.int16),
    (np.int32, torch.int32),
    (np.int64, torch.int64),
    (np.uint8, torch.uint8),
    (np.uint16, torch.uint16),
    (np.uint32, torch.uint32),
    (np.uint64, torch.uint64),
    (np.float16, torch.float16),
    (np.float32, torch.float32),
    (np.float64, torch.float64),
    (np.complex64, torch.complex64),
    (np.complex128, torch.complex128),
]
DTYPE_IDS = [np.dtype(n).name for n, _ in DTYPE_MAP]


def extremes(np_dtype) -> np.ndarray:
    """Every edge value of a dtype: min/max, zero, nan/inf, subnormals."""
    d = np.dtype(np_dtype)
    if d.kind == "b":
        return np.array([True, False, True], dtype=d)
    if d.kind in "iu":
        info = np.iinfo(d)
        vals = [info.min, info.max, 0, 1, info.max - 1]
        if d.kind == "i":
            vals += [-1, info.min + 1]
        return np.array(vals, dtype=d)
    if d.kind == "f":
        info = np.finfo(d)
        return np.array([info.min, info.max, info.tiny, info.smallest_subnormal,
                         -info.smallest_subnormal, 0.0, -0.0, 1.0, info.eps,
                         np.nan, np.inf, -np.inf], dtype=d)
    parts = extremes(np.finfo(d).dtype)
    re, im = np.meshgrid(parts, parts[::-1])
    out = np.empty(re.size, dtype=d)
    out.real, out.imag = re.ravel(), im.ravel()
    return out


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------- the map

@pytest.mark.parametrize("np_dtype,torch_dtype", DTYPE_MAP, ids=DTYPE_IDS)
def test_every_map_dtype_to_tensor_keeps_values_bit_exact(np_dtype, torch_dtype):
    a = extremes(np_dtype)
    t = tb.to_tensor(a, float_dtype=None)
    assert t.dtype == torch_dtype
    assert t.shape == a.shape
    # torch's own export is the independent reference for the bits.
    assert same_bits(t.numpy(), a)


@pytest.mark.parametrize("np_dtype,torch_dtype", DTYPE_MAP, ids=DTYPE_IDS)
def test_every_map_dtype_to_numpy_keeps_values_bit_exact(np_dtype, torch_dtype):
    a = extremes(np_dtype)
    t = torch.from_numpy(a.copy())
    assert t.dtype == torch_dtype
    out = tb.to_numpy(t)
    assert out.dtype == np.dtype(np_dtype)
    assert same_bits(out, a)


@pytest.mark.parametrize("np_dtype,torch_dtype", DTYPE_MAP, ids=DTYPE_IDS)
def test_every_map_dtype_round_trips(np_dtype, torch_dtype):
    a = extremes(np_dtype).reshape(-1, 1)
    back = tb.to_numpy(tb.to_tensor(a, float_dtype=None))
    assert same_bits(back, a)


@pytest.mark.parametrize("np_dtype,torch_dtype", DTYPE_MAP, ids=DTYPE_IDS)
def test_every_map_dtype_except_float64_complex128_is_kept_by_default(
        np_dtype, torch_dtype):
    a = extremes(np_dtype)
    t = tb.to_tensor(a)
    if np_dtype is np.float64:
        assert t.dtype == torch.float32
    elif np_dtype is np.complex128:
        assert t.dtype == torch.complex64
    else:
        assert t.dtype == torch_dtype
        # Kept dtype: shared, not copied.
        assert t.data_ptr() == a.ctypes.data


@pytest.mark.parametrize("np_dtype", [np.intc, np.int_, np.longlong, np.uintc,
                                      np.uint, np.ulonglong, np.short, np.byte])
def test_platform_integer_aliases_map_by_width(np_dtype):
    a = np.arange(3).astype(np_dtype)
    t = tb.to_tensor(a)
    assert t.element_size() == a.itemsize
    assert t.dtype.is_signed == (np.dtype(np_dtype).kind == "i")
    assert t.tolist() == a.tolist()


# ---------------------------------------------------------------- float policy

def test_float64_becomes_float32_by_default():
    a = extremes(np.float64)
    t = tb.to_tensor(a)
    assert t.dtype == torch.float32
    with np.errstate(over="ignore"):
        ref = a.astype(np.float32)
    np.testing.assert_array_equal(t.numpy(), ref)


def test_complex128_becomes_complex64_by_default():
    a = extremes(np.complex128)
    t = tb.to_tensor(a)
    assert t.dtype == torch.complex64
    with np.errstate(over="ignore", invalid="ignore"):
        ref = a.astype(np.complex64)
    np.testing.assert_array_equal(t.numpy(), ref)


# The policy cast runs our own loop: in the calling thread up to 128 KB of
# output, on torch's thread pool up to 1 MB and from 32 MB (prefaulting the
# output in 1 MB blocks), ATen's copy_ in between (csrc/core/
# host_memory.cpp). Sizes on both sides of those lines, of the pool's
# 32768-element chunks and of the prefault blocks.
POLICY_CAST_SIZES = [1, 31, 32767, 32768, 32769, 49153, 1 << 18, (1 << 18) + 5,
                     (1 << 23) - 1, (1 << 23) + 262149]


def _policy_cast_input(np_dtype, n: int) -> np.ndarray:
    """n values mixing every edge value with ones that must round."""
    rng = np.random.default_rng(n)
    edge = extremes(np.float64)
    real = rng.standard_normal(n) * 10.0 ** rng.integers(-45, 45, n)
    real[rng.integers(0, n, min(n, 64))] = rng.choice(edge, min(n, 64))
    real[: min(n, edge.size)] = edge[: min(n, edge.size)]
    if np.dtype(np_dtype).kind == "f":
        return real
    out = np.empty(n, dtype=np_dtype)
    out.real, out.imag = real, real[::-1]  # (1j * inf would make nan)
    return out


def _bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint32 if x.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("n", POLICY_CAST_SIZES)
@pytest.mark.parametrize("np_dtype", [np.float64, np.complex128])
def test_policy_cast_is_bit_exact_on_both_sides_of_the_thread_pool_line(np_dtype, n):
    a = _policy_cast_input(np_dtype, n)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = a.astype(np.complex64 if a.dtype.kind == "c" else np.float32)
    t = tb.to_tensor(a)
    assert t.dtype == (torch.complex64 if a.dtype.kind == "c" else torch.float32)
    np.testing.assert_array_equal(_bits(t.numpy()), _bits(ref))
    # The core's path (to_host / torch.ops) shares the same loop.
    h = tb.to_host(torch.from_numpy(a), dtype=t.dtype)
    np.testing.assert_array_equal(_bits(h.numpy()), _bits(ref))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_policy_cast_of_2d_arrays_in_both_orders_with_any_thread_count(threads):
    a = _policy_cast_input(np.float64, 300 * 401).reshape(300, 401)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for src in (a, np.asfortranarray(a)):
            t = tb.to_tensor(src)
            assert t.stride() == tuple(s // 8 for s in src.strides)  # order kept
            with np.errstate(over="ignore"):
                ref = src.astype(np.float32)
            np.testing.assert_array_equal(_bits(t.numpy()), _bits(ref))
    finally:
        torch.set_num_threads(old)


def test_float_dtype_none_keeps_float64_and_complex128():
    a = np.array([1 / 3, 1e300])
    c = a + 1j * a[::-1]
    t, tc = tb.to_tensor(a, float_dtype=None), tb.to_tensor(c, float_dtype=None)
    assert t.dtype == torch.float64 and tc.dtype == torch.complex128
    assert same_bits(t.numpy(), a) and same_bits(tc.numpy(), c)


@pytest.mark.parametrize("float_dtype,complex_dtype", [
    (torch.float16, torch.complex32),
    (torch.float32, torch.complex64),
    (torch.float64, torch.complex128),
])
def test_float_dtype_sets_float64_and_complex128_targets(float_dtype, complex_dtype):
    a = np.array([0.5, -2.0, 1 / 3])
    assert tb.to_tensor(a, float_dtype=float_dtype).dtype == float_dtype
    assert tb.to_tensor(a.astype(np.complex128),
                        float_dtype=float_dtype).dtype == complex_dtype


def test_float_dtype_bfloat16_rounds_float64():
    a = np.array([1.0, 1 / 3, -1e4])
    t = tb.to_tensor(a, float_dtype=torch.bfloat16)
    assert t.dtype == torch.bfloat16
    ref = torch.from_numpy(a).to(torch.bfloat16)
    assert torch.equal(t, ref)


@pytest.mark.parametrize("np_dtype", [np.float16, np.float32, np.int64, np.uint8,
                                      np.complex64, np.bool_])
def test_float_dtype_does_not_touch_other_dtypes(np_dtype):
    a = np.ones(3, dtype=np_dtype)
    assert tb.to_tensor(a, float_dtype=torch.float16).dtype == \
        tb.to_tensor(a, float_dtype=None).dtype


def test_complex128_with_bfloat16_float_dtype_is_a_type_error():
    with pytest.raises(TypeError, match="bfloat16") as e:
        tb.to_tensor(np.ones(2, np.complex128), float_dtype=torch.bfloat16)
    assert "complex64" in str(e.value)  # names the fix


@pytest.mark.parametrize("bad", [torch.int32, torch.bool, torch.complex64])
def test_non_floating_float_dtype_is_a_type_error(bad):
    with pytest.raises(TypeError, match="float_dtype"):
        tb.to_tensor(np.ones(2), float_dtype=bad)


def test_float_policy_applies_to_tensor_inputs():
    t = torch.tensor([1.5, 2.5], dtype=torch.float64)
    assert tb.to_tensor(t).dtype == torch.float32
    assert tb.to_tensor(t, float_dtype=None) is t
    assert tb.to_tensor(t.to(torch.complex128)).dtype == torch.complex64


def test_float_policy_applies_to_python_floats_and_lists():
    assert tb.to_tensor(1.5).dtype == torch.float32
    assert tb.to_tensor([1.5, 2.0]).dtype == torch.float32
    assert tb.to_tensor([1.5, 2.0], float_dtype=None).dtype == torch.float64
    assert tb.to_tensor([1 + 2j]).dtype == torch.complex64
    assert tb.to_tensor([1, 2]).dtype == torch.int64
    assert tb.to_tensor([True]).dtype == torch.bool


# ---------------------------------------------------------------- explicit dtype

@pytest.mark.parametrize("spec,expected", [
    (torch.float16, torch.float16),
    (torch.int32, torch.int32),
    (torch.float64, torch.float64),
    (np.dtype(np.int16), torch.int16),
    (np.dtype(">f8"), torch.float64),
    (np.float32, torch.float32),
    (np.uint16, torch.uint16),
    (float, torch.float64),
    (int, torch.int64),
    (bool, torch.bool),
    (complex, torch.complex128),
    ("float32", torch.float32),
    ("int8", torch.int8),
    ("uint64", torch.uint64),
    ("float", torch.float64),  # NumPy's name: 'float' is float64
    ("f4", torch.float32),
    ("bfloat16", torch.bfloat16),
    ("complex64", torch.complex64),
])
def test_explicit_dtype_forms_all_win(spec, expected):
    a = np.array([1.0, 2.0, 3.0])
    t = tb.to_tensor(a, spec)  # positional
    assert t.dtype == expected
    assert tb.to_tensor(a, dtype=spec).dtype == expected
    assert torch.equal(t, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
                       .to(expected))


def test_explicit_dtype_beats_float_dtype():
    a = np.ones(2)
    assert tb.to_tensor(a, dtype=torch.float64, float_dtype=torch.float16).dtype \
        == torch.float64


def test_explicit_dtype_casts_like_numpy():
    a = np.array([1.7, -2.2, 300.0])
    t = tb.to_tensor(a, dtype=torch.int16)
    assert t.tolist() == [1, -2, 300]


def test_unknown_dtype_name_is_a_type_error():
    with pytest.raises(TypeError, match="not a dtype name"):
        tb.to_tensor(np.ones(2), dtype="floaty32")


def test_dtype_of_wrong_kind_is_a_type_error():
    with pytest.raises(TypeError, match="dtype"):
        tb.to_tensor(np.ones(2), dtype=object())


# ---------------------------------------------------------------- unsupported dtypes

def _raises_type_error(arr, *phrases):
    with pytest.raises(TypeError) as e:
        tb.to_tensor(arr)
    msg = str(e.value)
    for p in phrases:
        assert p in msg, f"{p!r} not in {msg!r}"
    return msg


def test_object_array_of_numbers_says_astype():
    _raises_type_error(np.array([1, 2.5], dtype=object), "dtype object", "astype")


def test_object_array_of_arbitrary_objects_names_the_type():
    _raises_type_error(np.array([1, "x"], dtype=object), "dtype object", "str")


def test_object_array_from_ragged_lists_names_the_element():
    arr = np.array([[1, 2], [3, 4, 5]], dtype=object)
    msg = _raises_type_error(arr, "dtype object", "ragged", "[1]", "(3,)", "(2,)")
    assert "pad" in msg


def test_ragged_python_list_names_the_element():
    with pytest.raises(TypeError) as e:
        tb.to_tensor([[1.0, 2.0], [3.0, 4.0], [5.0]])
    msg = str(e.value)
    assert "ragged" in msg and "[2]" in msg and "(1,)" in msg and "(2,)" in msg


def test_ragged_nested_list_names_the_deep_element():
    with pytest.raises(TypeError) as e:
        tb.to_tensor([[[1, 2], [3, 4]], [[1, 2], [3]]])
    assert "[1][1]" in str(e.value)


@pytest.mark.parametrize("arr,phrases", [
    (np.array(["a", "bc"]), ["<U2", "string", "numbers"]),
    (np.array([b"a", b"bc"]), ["S2", "frombuffer"]),
    (np.zeros(2, "V4"), ["V4", "view(np.uint8)"]),
    (np.zeros(2, [("x", "f4"), ("y", "i4")]), ["'x'", "field"]),
    (np.zeros(2, "M8[s]"), ["datetime64[s]", "view(np.int64)"]),
    (np.zeros(2, "m8[ms]"), ["timedelta64[ms]", "view(np.int64)"]),
    (np.zeros(2, np.longdouble), [str(np.dtype(np.longdouble)), "dtype="]),
    (np.zeros(2, np.clongdouble), [str(np.dtype(np.clongdouble)), "dtype="]),
], ids=["str", "bytes", "void", "structured", "datetime64", "timedelta64",
        "longdouble", "clongdouble"])
def test_unsupported_dtype_names_dtype_and_fix(arr, phrases):
    msg = _raises_type_error(arr, *phrases)
    assert msg.startswith("to_tensor")


@pytest.mark.parametrize("target", [torch.float64, torch.float32, torch.bfloat16,
                                    "float64"])
def test_longdouble_converts_when_dtype_given(target):
    a = np.array([1.5, -2.25, 1e10], dtype=np.longdouble)
    t = tb.to_tensor(a, dtype=target)
    assert t.dtype == (torch.float64 if target == "float64" else target)
    assert torch.equal(t, torch.tensor([1.5, -2.25, 1e10], dtype=torch.float64)
                       .to(t.dtype))


def test_clongdouble_converts_when_dtype_given():
    a = np.array([1 + 2j], dtype=np.clongdouble)
    assert tb.to_tensor(a, dtype=torch.complex64).tolist() == [1 + 2j]


def test_unsupported_dtype_with_copy_false_is_still_a_type_error():
    with pytest.raises(TypeError, match="datetime64"):
        tb.to_tensor(np.zeros(2, "M8[s]"), copy=False)


def test_longdouble_dtype_argument_is_a_type_error():
    with pytest.raises(TypeError, match="no torch equivalent"):
        tb.to_tensor(np.ones(2), dtype=np.longdouble)


# ---------------------------------------------------------------- ml_dtypes

ML_FLOATS = ["bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
             "float8_e5m2fnuz", "float8_e8m0fnu"]


def _ml(name):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    if not hasattr(ml_dtypes, name):
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} has no {name}")
    return np.dtype(getattr(ml_dtypes, name))


def _all_bit_patterns(name):
    d = _ml(name)
    bits = np.arange(2 ** (8 * d.itemsize), dtype=np.uint16 if d.itemsize == 2
                     else np.uint8)
    return bits.view(d)


@needs_ml_dtypes
@pytest.mark.parametrize("name", ML_FLOATS)
def test_ml_dtypes_arrays_become_torch_dtype_bit_exact_and_zero_copy(name):
    a = _all_bit_patterns(name)
    t = tb.to_tensor(a)
    assert t.dtype == getattr(torch, name)
    assert t.data_ptr() == a.ctypes.data
    int_t, int_np = (torch.int16, np.int16) if a.itemsize == 2 else (torch.uint8, np.uint8)
    assert same_bits(t.view(int_t).numpy(), a.view(int_np))
    shared = tb.to_tensor(a, copy=False)
    assert shared.data_ptr() == a.ctypes.data


@needs_ml_dtypes
@pytest.mark.parametrize("name", ML_FLOATS)
def test_ml_dtypes_arrays_keep_their_dtype_under_the_float_policy(name):
    a = np.ones(3, dtype=_ml(name))
    assert tb.to_tensor(a, float_dtype=torch.float16).dtype == getattr(torch, name)


@needs_ml_dtypes
def test_ml_dtypes_bfloat16_copy_true_copies_bits():
    a = _all_bit_patterns("bfloat16")
    t = tb.to_tensor(a, copy=True)
    assert t.data_ptr() != a.ctypes.data
    assert same_bits(t.view(torch.int16).numpy(), a.view(np.int16))


@needs_ml_dtypes
def test_ml_dtypes_bfloat16_array_cast_by_dtype():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16)
    t = tb.to_tensor(a, dtype=torch.float32)
    assert t.tolist() == [1.5, -2.0, 3.25]


@needs_ml_dtypes
def test_ml_dtypes_without_torch_equivalent_is_a_type_error():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with pytest.raises(TypeError, match="int4"):
        tb.to_tensor(np.zeros(3, dtype=ml_dtypes.int4))


@needs_ml_dtypes
def test_ml_dtype_object_as_dtype_argument():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    t = tb.to_tensor(np.array([1.0, 2.0]), dtype=ml_dtypes.bfloat16)
    assert t.dtype == torch.bfloat16 and t.tolist() == [1.0, 2.0]


# ------------------------------------------ to_numpy of dtypes NumPy lacks

@pytest.mark.parametrize("torch_dtype", [
    torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.float8_e4m3fnuz, torch.float8_e5m2fnuz])
def test_to_numpy_of_dtypes_numpy_lacks_gives_float32(torch_dtype):
    src = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]).to(torch_dtype)
    a = tb.to_numpy(src)
    assert a.dtype == np.float32
    assert a.tolist() == src.to(torch.float32).tolist()


def test_to_numpy_of_float8_e8m0fnu_gives_float32():
    src = torch.tensor([1.0, 2.0, 0.25]).to(torch.float8_e8m0fnu)
    a = tb.to_numpy(src)
    assert a.dtype == np.float32 and a.tolist() == [1.0, 2.0, 0.25]


def test_to_numpy_of_bfloat16_is_exact_for_every_bit_pattern():
    src = torch.arange(-(2 ** 15), 2 ** 15, dtype=torch.int32).to(torch.int16) \
        .view(torch.bfloat16)
    a = tb.to_numpy(src)
    ref = src.to(torch.float32).numpy()
    assert same_bits(a, ref)


def test_to_numpy_of_complex32_gives_complex64():
    src = torch.tensor([1 + 2j, -0.5j], dtype=torch.complex64).to(torch.complex32)
    a = tb.to_numpy(src)
    assert a.dtype == np.complex64
    assert a.tolist() == [1 + 2j, -0.5j]


@needs_ml_dtypes
@pytest.mark.parametrize("name", ML_FLOATS)
def test_to_numpy_with_ml_dtype_is_bit_exact_and_zero_copy(name):
    d = _ml(name)
    int_t = torch.int16 if d.itemsize == 2 else torch.uint8
    bits = torch.arange(2 ** (8 * d.itemsize), dtype=torch.int32).to(int_t)
    src = bits.view(getattr(torch, name))
    for spec in (name, d, getattr(__import__("ml_dtypes"), name), src.dtype):
        a = tb.to_numpy(src, dtype=spec)
        assert a.dtype == d
        assert a.ctypes.data == src.data_ptr()
        assert same_bits(a.view(bits.numpy().dtype), bits.numpy())
    a = tb.to_numpy(src, dtype=name, copy=False)
    assert a.ctypes.data == src.data_ptr()


@needs_ml_dtypes
def test_to_numpy_bfloat16_array_writes_show_in_tensor():
    src = torch.zeros(3, dtype=torch.bfloat16)
    a = tb.to_numpy(src, dtype="bfloat16")
    a[1] = 2.5
    assert src[1].item() == 2.5


@needs_ml_dtypes
def test_to_numpy_casts_to_bfloat16_when_asked():
    a = tb.to_numpy(torch.tensor([1.0, 1 / 3]), dtype="bfloat16")
    assert a.dtype.name == "bfloat16"
    assert a.astype(np.float32).tolist() == \
        torch.tensor([1.0, 1 / 3]).to(torch.bfloat16).float().tolist()


def test_to_numpy_bfloat16_copy_false_raises():
    with pytest.raises(ValueError, match="bfloat16") as e:
        tb.to_numpy(torch.ones(2, dtype=torch.bfloat16), copy=False)
    assert "copy=None" in str(e.value)


@pytest.mark.parametrize("spec,expected", [
    (np.float64, np.float64),
    ("int32", np.int32),
    (np.dtype("<f2"), np.float16),
    (torch.int16, np.int16),
    (torch.complex128, np.complex128),
    (float, np.float64),
])
def test_to_numpy_dtype_forms(spec, expected):
    a = tb.to_numpy(torch.tensor([1.0, 2.0, 3.0]), dtype=spec)
    assert a.dtype == np.dtype(expected)
    assert a.tolist() == [1, 2, 3]


def test_to_numpy_unknown_dtype_is_a_type_error():
    with pytest.raises(TypeError, match="dtype"):
        tb.to_numpy(torch.ones(2), dtype="floaty32")


# ------------------------------------------------- explicit targets, every path

@pytest.mark.parametrize("np_dtype,torch_dtype", DTYPE_MAP, ids=DTYPE_IDS)
def test_every_map_dtype_is_an_explicit_target_on_every_path(np_dtype, torch_dtype):
    vals = [0, 1, 2]
    src = np.array(vals, dtype=np.float32)
    assert tb.to_tensor(src, dtype=torch_dtype).dtype == torch_dtype
    assert tb.to_tensor(torch.from_numpy(src), dtype=torch_dtype).dtype == torch_dtype
    assert tb.to_tensor(src.astype(np.longdouble), dtype=torch_dtype).dtype == \
        torch_dtype
    assert tb.to_tensor([src, src], dtype=torch_dtype).dtype == torch_dtype
    assert tb.to_host(torch.from_numpy(src), dtype=torch_dtype).dtype == torch_dtype
    out = tb.to_numpy(torch.from_numpy(src), dtype=np_dtype)
    assert out.dtype == np.dtype(np_dtype)
    assert out.tolist() == src.astype(np_dtype).tolist()


@pytest.mark.parametrize("target", [torch.int4, torch.uint4, torch.uint1,
                                    torch.bits8, torch.float4_e2m1fn_x2,
                                    torch.qint8, torch.quint8])
def test_uncastable_target_dtypes_are_type_errors(target):
    src = np.ones(2, np.float32)
    for call in (lambda: tb.to_tensor(src, dtype=target),
                 lambda: tb.to_tensor([src, src], dtype=target),
                 lambda: tb.to_tensor(torch.ones(2), dtype=target),
                 lambda: tb.to_host(torch.ones(2), dtype=target)):
        with pytest.raises(TypeError, match=str(target).split(".")[1]):
            call()


@pytest.mark.parametrize("scalar,phrase", [
    (np.datetime64(1, "s"), "datetime64[s]"),
    (np.timedelta64(3, "D"), "timedelta64[D]"),
    (np.str_("a"), "<U1"),
    (np.bytes_(b"ab"), "S2"),
    (np.void(b"\x00\x01"), "V2"),
])
def test_unsupported_numpy_scalars_are_type_errors(scalar, phrase):
    with pytest.raises(TypeError, match=re.escape(phrase)):
        tb.to_tensor(scalar)


def test_longdouble_scalar_converts_when_dtype_given():
    t = tb.to_tensor(np.longdouble(1.5), dtype=torch.float64)
    assert t.dim() == 0 and t.item() == 1.5


@pytest.mark.skipif(not NUMPY2, reason="StringDType is new in NumPy 2")
def test_numpy2_string_dtype_is_a_type_error():
    arr = np.array(["a", "bc"], dtype=np.dtypes.StringDType())
    with pytest.raises(TypeError, match="string"):
        tb.to_tensor(arr)


@needs_ml_dtypes
@pytest.mark.parametrize("name", ML_FLOATS)
def test_ml_dtypes_strided_views_copy_bit_exact(name):
    a = _all_bit_patterns(name)
    view = a[::-3]  # negative strides: copied, bits kept
    t = tb.to_tensor(view)
    int_t, int_np = (torch.int16, np.int16) if a.itemsize == 2 else (torch.uint8, np.uint8)
    assert t.dtype == getattr(torch, name)
    assert same_bits(t.view(int_t).numpy(), view.copy().view(int_np))
    with pytest.raises(ValueError, match="negative strides"):
        tb.to_tensor(view, copy=False)


@needs_ml_dtypes
def test_ml_dtypes_bfloat16_list_is_stacked_bit_exact():
    a = _all_bit_patterns("bfloat16")[:256]
    t = tb.to_tensor([a, a[::-1]])
    assert t.dtype == torch.bfloat16
    assert same_bits(t.view(torch.int16).numpy(),
                     np.stack([a, a[::-1]]).view(np.int16))


def test_to_numpy_bfloat16_name_works_without_importing_ml_dtypes_first():
    pytest.importorskip("ml_dtypes")
    script = ("import sys, torch, torchbridge as tb\n"
              "assert 'ml_dtypes' not in sys.modules\n"
              "t = torch.tensor([1.5, -2.0]).to(torch.bfloat16)\n"
              "a = tb.to_numpy(t, dtype='bfloat16')\n"
              "assert a.dtype.name == 'bfloat16' and a.ctypes.data == t.data_ptr()\n"
              "assert a.astype('float32').tolist() == [1.5, -2.0]\n"
              "print('ok')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    r = subprocess.run([sys.executable, "-c", script], cwd=root, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# ------------------------------------------------- the suggested fixes work

@pytest.mark.parametrize("arr,fix", [
    (np.array([1, 2.5], dtype=object), lambda a: a.astype(np.float64)),
    (np.zeros(3, "M8[s]"), lambda a: a.view(np.int64)),
    (np.arange(3).astype("m8[s]"), lambda a: a / np.timedelta64(1, "s")),
    (np.zeros(3, "V4"), lambda a: a.view(np.uint8)),
    (np.zeros(3, [("x", "f4"), ("y", "i4")]), lambda a: a["x"]),
    (np.array([b"ab"]), lambda a: np.frombuffer(a.tobytes(), dtype=np.uint8)),
    (np.array(["1.5", "2"]), lambda a: a.astype(np.float32)),
], ids=["object", "datetime64", "timedelta64", "void", "structured", "bytes", "str"])
def test_the_fix_each_dtype_error_suggests_works(arr, fix):
    with pytest.raises(TypeError):
        tb.to_tensor(arr)
    fixed = fix(arr)
    t = tb.to_tensor(fixed)
    assert tuple(t.shape) == fixed.shape


def test_structured_field_suggestion_shares_memory():
    arr = np.zeros(3, [("x", "f4"), ("y", "i4")])
    t = tb.to_tensor(arr["x"], copy=False)
    t[1] = 2.5
    assert arr["x"][1] == 2.5 and arr["y"][1] == 0
