"""tb.to_numpy: any tensor becomes an ndarray; memory shared when the contract says."""

from __future__ import annotations

import collections
import gc
import types
import warnings

import numpy as np
import pytest
import torch
from conftest import collect

import torchbridge as tb


def views(a: np.ndarray, t: torch.Tensor) -> bool:
    """Whether `a` overlaps the memory of `t`'s storage."""
    if a.size == 0:
        return False
    lo = a.ctypes.data + sum((n - 1) * s for n, s in zip(a.shape, a.strides) if s < 0)
    hi = a.ctypes.data + sum((n - 1) * s for n, s in zip(a.shape, a.strides) if s > 0)
    hi += a.itemsize
    st = t.untyped_storage()
    return lo < st.data_ptr() + st.nbytes() and st.data_ptr() < hi


def copy_false_error(t, *phrases, **kw) -> str:
    with pytest.raises(ValueError) as e:
        tb.to_numpy(t, copy=False, **kw)
    msg = str(e.value)
    assert "copy=False" in msg and "copy=None" in msg, msg
    for p in phrases:
        assert p in msg, f"{p!r} not in {msg!r}"
    return msg


def quantize(x, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated
        return torch.quantize_per_tensor(x, *args)


# ------------------------------------------------- dense CPU tensors

def test_dense_tensor_is_shared_and_writes_go_both_ways():
    t = torch.arange(6.0).reshape(2, 3)
    a = tb.to_numpy(t)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    assert a.ctypes.data == t.data_ptr() and a.flags.writeable
    a[0, 1] = 42
    assert t[0, 1].item() == 42
    t[1, 2] = -1
    assert a[1, 2] == -1


def test_copy_false_shares_a_dense_tensor():
    t = torch.arange(4, dtype=torch.int16)
    a = tb.to_numpy(t, copy=False)
    assert a.ctypes.data == t.data_ptr()


def test_copy_true_returns_fresh_memory():
    t = torch.arange(6.0).reshape(2, 3)
    a = tb.to_numpy(t, copy=True)
    assert not views(a, t) and a.tolist() == t.tolist()
    a[0, 0] = 9
    assert t[0, 0].item() == 0


@pytest.mark.parametrize("make", [
    lambda: torch.arange(12.0).reshape(3, 4).t(),
    lambda: torch.arange(24.0).reshape(4, 6)[1:, ::2],
    lambda: torch.arange(60, dtype=torch.int32).reshape(3, 4, 5).permute(2, 0, 1)[::2],
    lambda: torch.arange(10.0)[3:],
    lambda: torch.arange(4.0).expand(3, 4),
    lambda: torch.arange(3.0).unsqueeze(1).expand(3, 5),
], ids=["transposed", "sliced", "permuted-stepped", "offset", "expanded", "expanded-col"])
def test_non_contiguous_tensors_are_shared_with_matching_strides(make):
    t = make()
    a = tb.to_numpy(t)
    assert a.shape == tuple(t.shape)
    assert a.strides == tuple(s * t.element_size() for s in t.stride())
    assert a.ctypes.data == t.data_ptr()
    assert a.tolist() == t.tolist()


def test_non_contiguous_copy_true_gives_right_values():
    t = torch.arange(24.0).reshape(4, 6)[1:, ::2].t()
    a = tb.to_numpy(t, copy=True)
    assert a.tolist() == t.tolist() and not views(a, t)


def test_zero_d_tensor_gives_zero_d_array():
    t = torch.tensor(3.5)
    a = tb.to_numpy(t)
    assert a.shape == () and a[()] == 3.5 and a.ctypes.data == t.data_ptr()


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0, 2)])
@pytest.mark.parametrize("copy", [None, True, False])
def test_zero_size_tensor_gives_zero_size_array(shape, copy):
    a = tb.to_numpy(torch.zeros(shape, dtype=torch.int64), copy=copy)
    assert a.shape == shape and a.dtype == np.int64


def test_exported_array_base_is_a_storage_ref():
    t = torch.arange(10.0)[2:8:2]
    a = tb.to_numpy(t)
    ref = a.base
    assert isinstance(ref, tb._C.StorageRef)
    assert ref.data_ptr == t.untyped_storage().data_ptr()
    assert ref.nbytes == t.untyped_storage().nbytes() == 40


def test_array_stays_valid_after_tensor_set_():
    t = torch.arange(4.0)
    a = tb.to_numpy(t)
    t.set_(torch.full((100,), 7.0))  # t no longer owns the old storage
    for _ in range(3):
        torch.ones(1000)  # let the allocator reuse freed memory
    collect()
    assert a.tolist() == [0.0, 1.0, 2.0, 3.0]
    a[0] = 5  # still writable memory of our own
    assert a[0] == 5 and t[0].item() == 7.0


def test_exported_storage_cannot_grow():
    t = torch.arange(4.0)
    a = tb.to_numpy(t)
    ptr = a.ctypes.data
    with pytest.raises(RuntimeError, match="resiz"):
        t.resize_(1000)
    assert t.data_ptr() == ptr and a.tolist() == [0, 1, 2, 3]


def test_exported_storage_cannot_be_resized_directly():
    t = torch.arange(4.0)
    a = tb.to_numpy(t)
    with pytest.raises(RuntimeError):
        t.untyped_storage().resize_(1 << 20)
    assert a.tolist() == [0, 1, 2, 3]


def test_exported_storage_of_a_view_cannot_grow():
    base = torch.arange(8.0)
    tb.to_numpy(base[2:4])
    with pytest.raises(RuntimeError):
        base.resize_(10000)


def test_round_trip_shares_the_original_array():
    src = np.arange(5, dtype=np.float32)
    back = tb.to_numpy(tb.to_tensor(src))
    assert np.shares_memory(back, src)
    back[2] = 9
    assert src[2] == 9


# ------------------------------------------------- autograd

def test_requires_grad_tensor_is_detached_and_shared():
    w = torch.zeros(3, requires_grad=True)
    a = tb.to_numpy(w)
    assert isinstance(a, np.ndarray) and a.ctypes.data == w.data_ptr()
    with torch.no_grad():
        w.add_(2)
    assert a.tolist() == [2, 2, 2]
    a[1] = -1
    assert w[1].item() == -1
    assert w.requires_grad  # the input is untouched


def test_requires_grad_tensor_copy_false_shares():
    w = torch.ones(2, requires_grad=True)
    assert tb.to_numpy(w, copy=False).ctypes.data == w.data_ptr()


def test_non_leaf_tensor_converts():
    x = torch.ones(3, requires_grad=True)
    y = x * 2
    a = tb.to_numpy(y)
    assert a.tolist() == [2, 2, 2] and a.ctypes.data == y.data_ptr()


def test_requires_grad_tensor_copy_true_copies():
    w = torch.ones(2, requires_grad=True)
    a = tb.to_numpy(w, copy=True)
    assert not views(a, w) and a.tolist() == [1, 1]


def test_requires_grad_bfloat16_converts():
    w = torch.ones(2, dtype=torch.bfloat16, requires_grad=True)
    a = tb.to_numpy(w)
    assert a.dtype == np.float32 and a.tolist() == [1, 1]


# ------------------------------------------------- conj / neg bits

def test_conj_bit_is_resolved():
    base = torch.tensor([1 + 2j, -3 - 4j])
    t = base.conj()
    assert t.is_conj()
    a = tb.to_numpy(t)
    assert a.tolist() == [1 - 2j, -3 + 4j]
    assert base.tolist() == [1 + 2j, -3 - 4j]  # input untouched
    a[0] = 0
    assert base[0].item() == 1 + 2j  # resolving needs a copy


def test_conj_bit_with_copy_false_raises():
    copy_false_error(torch.tensor([1 + 2j]).conj(), "conjugate")


def test_neg_bit_is_resolved():
    t = torch.tensor([1 + 2j, 3 - 4j]).conj().imag  # a negative-bit view
    assert t.is_neg()
    a = tb.to_numpy(t)
    assert a.dtype == np.float32 and a.tolist() == [-2, 4]


def test_neg_bit_with_copy_false_raises():
    copy_false_error(torch.tensor([1 + 2j]).conj().imag, "negative")


def test_conj_of_real_tensor_is_shared():
    t = torch.arange(3.0)
    assert tb.to_numpy(t.conj()).ctypes.data == t.data_ptr()


# ------------------------------------------------- sparse, quantized

def _dense():
    return torch.tensor([[0.0, 1.5, 0.0], [2.0, 0.0, -3.0]])


@pytest.mark.parametrize("to_sparse", [
    lambda d: d.to_sparse(),
    lambda d: d.to_sparse_csr(),
    lambda d: d.to_sparse_csc(),
    lambda d: d.to_sparse_bsr((1, 1)),
], ids=["coo", "csr", "csc", "bsr"])
def test_sparse_tensors_are_densified(to_sparse):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse CSR/BSR are "beta"
        s = to_sparse(_dense())
    a = tb.to_numpy(s)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    assert a.tolist() == _dense().tolist()


def test_uncoalesced_sparse_coo_sums_duplicates():
    s = torch.sparse_coo_tensor([[0, 0, 1]], [1.0, 2.0, 5.0], (3,),
                                check_invariants=True)
    assert tb.to_numpy(s).tolist() == [3.0, 5.0, 0.0]


@pytest.mark.parametrize("to_sparse", [lambda d: d.to_sparse(),
                                       lambda d: d.to_sparse_csr()],
                         ids=["coo", "csr"])
def test_sparse_with_copy_false_raises(to_sparse):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = to_sparse(_dense())
    copy_false_error(s, "layout", "sparse")


def test_sparse_requires_grad_converts():
    s = _dense().to_sparse().requires_grad_()
    assert tb.to_numpy(s).tolist() == _dense().tolist()


def test_quantized_tensor_is_dequantized():
    q = quantize(torch.tensor([1.0, 2.5, -1.0, 0.26]), 0.5, 0, torch.qint8)
    a = tb.to_numpy(q)
    assert a.dtype == np.float32
    assert a.tolist() == q.dequantize().tolist() == [1.0, 2.5, -1.0, 0.5]


def test_per_channel_quantized_tensor_is_dequantized():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
                                       torch.tensor([0.5, 1.0]),
                                       torch.tensor([0, 0]), 0, torch.quint8)
    assert tb.to_numpy(q).tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_quantized_with_copy_false_raises():
    q = quantize(torch.tensor([1.0]), 0.5, 0, torch.quint8)
    copy_false_error(q, "quantized")


# ------------------------------------------------- tensors without data

def test_meta_tensor_raises_value_error():
    with pytest.raises(ValueError, match="meta"):
        tb.to_numpy(torch.empty(3, device="meta"))


def test_zero_size_meta_tensor_raises_value_error():
    with pytest.raises(ValueError, match="meta"):
        tb.to_numpy(torch.empty(0, device="meta"))


@pytest.mark.parametrize("layout", [torch.strided, torch.jagged])
def test_nested_tensor_raises_value_error(layout):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nt = torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)],
                                        layout=layout)
    with pytest.raises(ValueError, match="nested"):
        tb.to_numpy(nt)


class _Wrapper(torch.Tensor):
    """A storage-less wrapper subclass (the DTensor pattern)."""

    @staticmethod
    def __new__(cls, elem):
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, dtype=elem.dtype)

    def __init__(self, elem):
        self.elem = elem

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise NotImplementedError(f"_Wrapper does not implement {func}")


def test_storage_less_wrapper_subclass_raises_value_error():
    with pytest.raises(ValueError, match="storage"):
        tb.to_numpy(_Wrapper(torch.ones(3)))


def test_fake_tensor_raises_value_error():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = torch.ones(3)
    with pytest.raises(ValueError, match="storage"):
        tb.to_numpy(fake)


# ------------------------------------------------- dtype=

@pytest.mark.parametrize("src,spec,expected", [
    (torch.tensor([1.5, -2.0]), np.float64, np.float64),
    (torch.tensor([1.5, -2.0]), "float16", np.float16),
    (torch.tensor([1, 2], dtype=torch.int64), torch.float32, np.float32),
    (torch.tensor([1.9, -2.9]), np.int32, np.int32),
    (torch.tensor([1 + 1j]), np.complex128, np.complex128),
    (torch.tensor([1.0, 0.0]), np.bool_, np.bool_),
])
def test_dtype_casts_values(src, spec, expected):
    a = tb.to_numpy(src, dtype=spec)
    assert a.dtype == np.dtype(expected)
    assert a.tolist() == src.to(torch.from_numpy(np.zeros(1, expected)).dtype).tolist()
    assert not views(a, src)


def test_dtype_equal_to_tensor_dtype_shares():
    t = torch.arange(3.0)
    for spec in (np.float32, "float32", torch.float32, np.dtype("=f4")):
        assert tb.to_numpy(t, dtype=spec, copy=False).ctypes.data == t.data_ptr()


def test_dtype_cast_with_copy_false_raises():
    copy_false_error(torch.ones(2), "float64", dtype=np.float64)


def test_byte_swapped_dtype_is_honoured():
    t = torch.tensor([1.0, -2.5, 3e20])
    a = tb.to_numpy(t, dtype=">f4")
    assert a.dtype == np.dtype(">f4") and a.dtype.byteorder == ">"
    assert a.tolist() == t.tolist()


def test_byte_swapped_dtype_with_copy_false_raises():
    copy_false_error(torch.ones(2), ">f4", dtype=">f4")


def test_byte_swapped_dtype_from_bfloat16():
    t = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    a = tb.to_numpy(t, dtype=">f8")
    assert a.dtype == np.dtype(">f8") and a.tolist() == [1.5, -2.0]


def test_longdouble_dtype_goes_through_numpy():
    t = torch.tensor([1.5, -2.25], dtype=torch.float64)
    a = tb.to_numpy(t, dtype=np.longdouble)
    assert a.dtype == np.longdouble and a.tolist() == [1.5, -2.25]


def test_dtype_with_conj_bit():
    a = tb.to_numpy(torch.tensor([1 + 2j]).conj(), dtype=np.complex128)
    assert a.dtype == np.complex128 and a.tolist() == [1 - 2j]


def test_dtype_with_copy_true_on_same_dtype_copies():
    t = torch.ones(3)
    a = tb.to_numpy(t, dtype=np.float32, copy=True)
    assert not views(a, t)


def test_to_numpy_object_dtype_gives_python_numbers():
    a = tb.to_numpy(torch.tensor([1, 2]), dtype=object)
    assert a.dtype == object and a.tolist() == [1, 2]


# ------------------------------------------------- ndarray and other inputs

def test_ndarray_is_returned_as_is():
    x = np.arange(3.0)
    assert tb.to_numpy(x) is x
    assert tb.to_numpy(x, copy=False) is x
    assert tb.to_numpy(x, dtype=np.float64) is x


def test_ndarray_copy_true_copies_keeping_order():
    x = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    a = tb.to_numpy(x, copy=True)
    assert a is not x and not np.shares_memory(a, x)
    assert a.tolist() == x.tolist() and a.flags.f_contiguous


def test_ndarray_is_cast_when_asked():
    x = np.arange(3.0)
    a = tb.to_numpy(x, dtype=np.float32)
    assert a.dtype == np.float32 and a.tolist() == [0, 1, 2]
    assert x.dtype == np.float64


def test_ndarray_cast_with_copy_false_raises():
    with pytest.raises(ValueError) as e:
        tb.to_numpy(np.arange(3.0), dtype=np.float32, copy=False)
    assert "copy=False" in str(e.value) and "copy=None" in str(e.value)


def test_ndarray_of_any_dtype_is_returned_as_is():
    for x in (np.array(["a"]), np.zeros(2, "M8[s]"), np.array([1, "x"], dtype=object)):
        assert tb.to_numpy(x) is x


@pytest.mark.parametrize("scalar", [np.float32(1.5), np.int8(-3), np.bool_(True),
                                    np.complex128(1j), np.datetime64(1, "s")])
def test_numpy_scalar_gives_zero_d_array(scalar):
    a = tb.to_numpy(scalar)
    assert isinstance(a, np.ndarray) and a.shape == ()
    assert a.dtype == scalar.dtype and a[()] == scalar


@pytest.mark.parametrize("obj,expected", [
    ([1, 2, 3], np.array([1, 2, 3])),
    ([[1.5], [2.5]], np.array([[1.5], [2.5]])),
    (3.0, np.array(3.0)),
    ((True, False), np.array([True, False])),
])
def test_array_likes_go_through_asarray(obj, expected):
    a = tb.to_numpy(obj)
    assert a.dtype == expected.dtype and a.tolist() == expected.tolist()


def test_list_with_copy_false_raises():
    with pytest.raises(ValueError, match="copy=None"):
        tb.to_numpy([1, 2], copy=False)


def test_buffer_input_is_shared():
    b = bytearray(4)
    a = tb.to_numpy(b)
    a[0] = 7
    assert b[0] == 7


def test_ragged_list_is_a_type_error_naming_the_element():
    with pytest.raises(TypeError, match=r"\[1\]"):
        tb.to_numpy([[1, 2], [3]])


def test_array_likes_with_dtype():
    a = tb.to_numpy([1, 2], dtype=np.float32)
    assert a.dtype == np.float32 and a.tolist() == [1, 2]


def test_dtype_none_argument_forms():
    t = torch.ones(2)
    assert tb.to_numpy(t, None).dtype == np.float32
    assert tb.to_numpy(t, dtype=None, copy=None).dtype == np.float32


def test_exported_array_survives_gc_of_everything_else():
    a = tb.to_numpy(torch.arange(1000.0) * 2)
    gc.collect()
    assert a[999] == 1998.0


# ------------------------------------------------- non-array inputs


class _Plain:
    pass


@pytest.mark.parametrize("obj", [None, object(), _Plain()])
def test_non_array_input_raises_type_error_naming_it(obj):
    with pytest.raises(TypeError) as e:
        tb.to_numpy(obj)
    msg = str(e.value)
    assert type(obj).__name__ in msg and "not a tensor or an array-like" in msg, msg


@pytest.mark.parametrize("obj", [{"a": 1}, collections.OrderedDict(a=torch.ones(2)),
                                 types.MappingProxyType({"a": 1})])
def test_mapping_input_points_to_tree_to_numpy(obj):
    with pytest.raises(TypeError) as e:
        tb.to_numpy(obj)
    assert "tree_to_numpy" in str(e.value) and type(obj).__name__ in str(e.value)


def test_list_of_objects_is_refused_unless_dtype_object():
    with pytest.raises(TypeError, match="NoneType"):
        tb.to_numpy([1, None])
    a = tb.to_numpy([1, None], dtype=object)
    assert a.dtype == object and a.tolist() == [1, None]


def test_list_of_numbers_and_strings_still_convert():
    assert tb.to_numpy([1, 2.5]).tolist() == [1.0, 2.5]
    assert tb.to_numpy(["a", "bc"]).dtype.kind == "U"


# ------------------------------------------------- lists of tensors


def test_list_of_tensors_is_stacked_by_torch():
    w = torch.arange(3.0, requires_grad=True)
    bf = torch.tensor([1.5, 2.0, -1.0], dtype=torch.bfloat16)
    a = tb.to_numpy([w * 2, bf])
    assert a.dtype == np.float32 and a.tolist() == [[0, 2, 4], [1.5, 2, -1]]
    a = tb.to_numpy([torch.ones(2, dtype=torch.float64)] * 2)
    assert a.dtype == np.float64  # to_numpy keeps dtypes: no float policy
    assert tb.to_numpy([bf, bf], dtype="float16").dtype == np.float16


def test_list_of_tensors_with_copy_false_or_ragged_raises():
    with pytest.raises(ValueError, match="copy=None"):
        tb.to_numpy([torch.ones(2)] * 2, copy=False)
    with pytest.raises(ValueError, match=r"\[1\]"):
        tb.to_numpy([torch.ones(2), torch.ones(3)])
