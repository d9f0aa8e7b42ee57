"""tb.to_tensor: when memory is shared, when it is copied, what copy= does."""

from __future__ import annotations

import array
import gc
import warnings

import numpy as np
import pytest
import torch
from conftest import HAS_CUDA

import torchbridge as tb


def shares(t: torch.Tensor, a: np.ndarray) -> bool:
    """Whether `t` views (part of) `a`'s memory, judged by torch's own export."""
    return np.shares_memory(t.detach().numpy(), a)


def copy_false_error(obj, *phrases, **kw) -> str:
    """to_tensor(obj, copy=False) must raise ValueError saying why and how."""
    with pytest.raises(ValueError) as e:
        tb.to_tensor(obj, copy=False, **kw)
    msg = str(e.value)
    assert "copy=False" in msg, msg
    assert "copy=None" in msg, msg  # the suggested fix
    for p in phrases:
        assert p in msg, f"{p!r} not in {msg!r}"
    return msg


def misaligned(n=6, dtype=np.float32) -> np.ndarray:
    """A writable array whose data starts one byte into a uint8 buffer."""
    buf = np.zeros(n * np.dtype(dtype).itemsize + 1, dtype=np.uint8)
    a = np.ndarray((n,), dtype=dtype, buffer=buf, offset=1)
    a[...] = np.arange(n)
    assert not a.flags.aligned and a.flags.writeable
    return a


# ------------------------------------------------- plain, writable arrays

def test_contiguous_array_is_shared_and_writes_go_both_ways():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = tb.to_tensor(a)
    assert t.data_ptr() == a.ctypes.data
    t[0, 1] = 100.0
    assert a[0, 1] == 100.0
    a[1, 2] = -5.0
    assert t[1, 2].item() == -5.0


@pytest.mark.parametrize("copy", [None, False])
def test_contiguous_array_shared_with_copy_none_and_false(copy):
    a = np.arange(6, dtype=np.int32)
    t = tb.to_tensor(a, copy=copy)
    assert t.data_ptr() == a.ctypes.data and t.dtype == torch.int32


def test_copy_true_returns_fresh_memory():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = tb.to_tensor(a, copy=True)
    assert not shares(t, a)
    assert t.tolist() == a.tolist()
    t[0, 0] = 9
    assert a[0, 0] == 0


def test_copy_true_keeps_memory_order_of_dense_arrays():
    a = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    t = tb.to_tensor(a, copy=True)
    assert not shares(t, a)
    assert t.stride() == (1, 3)  # like NumPy's order='K'
    assert t.tolist() == a.tolist()


def test_dtype_change_copies_by_default():
    a = np.arange(4, dtype=np.float64)
    t = tb.to_tensor(a)
    assert t.dtype == torch.float32 and not shares(t, a)
    assert t.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_dtype_change_with_copy_false_raises_naming_the_policy():
    copy_false_error(np.ones(3), "float64", "float32", "float_dtype=None")


def test_explicit_dtype_change_with_copy_false_raises():
    copy_false_error(np.ones(3, np.int32), "int32", "float16", dtype=torch.float16)


def test_explicit_dtype_equal_to_the_array_dtype_shares():
    a = np.ones(3, np.float64)
    t = tb.to_tensor(a, dtype=torch.float64, copy=False)
    assert t.data_ptr() == a.ctypes.data


def test_float_dtype_none_shares_float64():
    a = np.ones(3)
    assert tb.to_tensor(a, float_dtype=None, copy=False).data_ptr() == a.ctypes.data


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_cpu_device_still_shares(device):
    a = np.ones(3, np.float32)
    t = tb.to_tensor(a, device=device, copy=False)
    assert t.data_ptr() == a.ctypes.data and t.device.type == "cpu"


# ------------------------------------------------- strided views

def test_transposed_view_is_shared_with_matching_strides():
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = base.T
    t = tb.to_tensor(a, copy=False)
    assert t.shape == (4, 3) and t.stride() == (1, 4)
    assert t.tolist() == a.tolist()
    t[3, 0] = -1
    assert base[0, 3] == -1


@pytest.mark.parametrize("index", [
    (slice(None), slice(None, None, 2)),
    (slice(1, None, 2), slice(None)),
    (slice(None, None, 3), slice(1, 3)),
], ids=["cols-step2", "rows-step2", "rows-step3-cols"])
def test_strided_slices_are_shared(index):
    base = np.arange(48, dtype=np.int64).reshape(6, 8)
    a = base[index]
    t = tb.to_tensor(a)
    assert shares(t, a)
    assert t.stride() == tuple(s // 8 for s in a.strides)
    assert t.tolist() == a.tolist()
    t.fill_(-7)
    assert (base[index] == -7).all()


def test_sliced_view_of_higher_rank_array_is_shared():
    base = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)
    a = base.transpose(2, 0, 3, 1)[1:, :, ::2]
    t = tb.to_tensor(a, copy=False)
    assert t.tolist() == a.tolist()
    assert shares(t, base)


# ------------------------------------------------- negative strides

def test_negative_strides_copy_by_default_1d():
    a = np.arange(5, dtype=np.float32)[::-1]
    t = tb.to_tensor(a)
    assert t.tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert not shares(t, a)
    assert t.is_contiguous()


@pytest.mark.parametrize("index", [
    (slice(None, None, -1), slice(None)),
    (slice(None), slice(None, None, -1)),
    (slice(None, None, -2), slice(None, None, 3)),
])
def test_negative_strides_copy_by_default_2d(index):
    a = np.arange(30, dtype=np.int32).reshape(5, 6)[index]
    t = tb.to_tensor(a)
    assert t.tolist() == a.tolist()
    assert not shares(t, a)


def test_negative_strides_with_copy_true_gives_c_order():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)[::-1].T
    t = tb.to_tensor(a, copy=True)
    assert t.is_contiguous() and t.tolist() == a.tolist()


def test_negative_strides_with_copy_false_raises():
    copy_false_error(np.arange(5, dtype=np.float32)[::-1], "negative strides",
                     "(-4,)")


def test_negative_strides_2d_with_copy_false_raises():
    a = np.zeros((3, 4), np.float32)[:, ::-1]
    copy_false_error(a, "negative strides")


def test_negative_stride_on_extent_1_axis_is_shared():
    a = np.zeros((1, 4))[::-1]  # the contract's own example
    assert a.strides[0] < 0
    t = tb.to_tensor(a, float_dtype=None, copy=False)
    assert t.data_ptr() == a.ctypes.data
    t[0, 2] = 3.0
    assert a[0, 2] == 3.0


def test_negative_stride_on_extent_1_axis_is_shared_by_default():
    a = np.arange(4, dtype=np.float32).reshape(1, 4)[::-1, ::1]
    t = tb.to_tensor(a)
    assert t.data_ptr() == a.ctypes.data and t.tolist() == [[0, 1, 2, 3]]


# ------------------------------------------------- byte order, alignment

@pytest.mark.parametrize("dtype", [">f4", ">i8", ">u2", ">c8", ">f8"])
def test_byte_swapped_copies_with_right_values(dtype):
    a = np.arange(5).astype(dtype)
    t = tb.to_tensor(a, float_dtype=None)
    assert not shares(t, a)
    assert t.tolist() == np.arange(5).astype(dtype).tolist()
    assert t.dtype == tb.to_tensor(a.astype(np.dtype(dtype).newbyteorder("=")),
                                   float_dtype=None).dtype


def test_byte_swapped_with_copy_false_raises():
    copy_false_error(np.arange(3).astype(">f4"), "byte-swapped", ">f4")


def test_byte_swapped_strided_view_copies_with_right_values():
    a = np.arange(24).astype(">i4").reshape(4, 6)[::-1, ::2]
    assert tb.to_tensor(a).tolist() == a.tolist()


def test_misaligned_copies_with_right_values():
    a = misaligned()
    t = tb.to_tensor(a)
    assert t.tolist() == [0, 1, 2, 3, 4, 5]
    assert t.data_ptr() != a.ctypes.data
    t[0] = 7
    assert a[0] == 0


def test_misaligned_with_copy_false_raises():
    copy_false_error(misaligned(), "aligned")


def test_misaligned_with_dtype_change_gives_right_values():
    a = misaligned(dtype=np.float64)
    assert tb.to_tensor(a).tolist() == [0, 1, 2, 3, 4, 5]


def test_stride_not_a_multiple_of_item_size_copies():
    # complex64: 8-byte items, 4-byte alignment; a 12-byte stride is aligned
    # but not a whole number of items.
    buf = np.zeros(64, dtype=np.uint8)
    a = np.ndarray((4,), dtype=np.complex64, buffer=buf, strides=(12,))
    a[...] = [1 + 1j, 2, 3j, 4]
    vals = a.tolist()
    t = tb.to_tensor(a)
    assert t.tolist() == vals
    assert not shares(t, buf)
    copy_false_error(a, "(12,)")


# ------------------------------------------------- zero strides, read-only

def test_writable_zero_stride_view_is_shared():
    base = np.arange(3, dtype=np.float32)
    a = np.lib.stride_tricks.as_strided(base, shape=(4, 3), strides=(0, 4))
    assert a.flags.writeable
    t = tb.to_tensor(a)
    assert t.stride() == (0, 1) and t.data_ptr() == base.ctypes.data
    assert t.tolist() == [[0, 1, 2]] * 4
    base[1] = 9
    assert t[3, 1].item() == 9


def test_broadcast_view_is_shared_with_copy_false():
    base = np.arange(3, dtype=np.float32)
    a = np.broadcast_to(base, (5, 3))  # read-only zero-stride view
    t = tb.to_tensor(a, copy=False)
    assert t.stride() == (0, 1) and t.data_ptr() == base.ctypes.data


def test_broadcast_view_copies_by_default_because_it_is_read_only():
    base = np.arange(3, dtype=np.float32)
    t = tb.to_tensor(np.broadcast_to(base, (2, 3)))
    assert t.tolist() == [[0, 1, 2]] * 2 and not shares(t, base)


def test_read_only_array_copies_by_default_without_warning():
    a = np.arange(4, dtype=np.float32)
    a.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = tb.to_tensor(a)
    assert not shares(t, a)
    t[0] = 5  # writing the copy is fine
    assert a[0] == 0


def test_read_only_array_is_shared_with_copy_false():
    a = np.arange(4, dtype=np.float32)
    a.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = tb.to_tensor(a, copy=False)
    assert t.data_ptr() == a.ctypes.data and t.tolist() == [0, 1, 2, 3]


def test_read_only_array_copy_true_copies():
    a = np.arange(4, dtype=np.float32)
    a.flags.writeable = False
    assert not shares(tb.to_tensor(a, copy=True), a)


# ------------------------------------------------- 0-d and zero-size

def test_zero_d_array_is_shared_as_zero_d_tensor():
    a = np.array(2.5, dtype=np.float32)
    t = tb.to_tensor(a, copy=False)
    assert t.dim() == 0 and t.item() == 2.5
    t.fill_(4.0)
    assert a[()] == 4.0


def test_zero_d_float64_array_follows_policy():
    t = tb.to_tensor(np.array(2.5))
    assert t.dim() == 0 and t.dtype == torch.float32


@pytest.mark.parametrize("make", [
    lambda: np.zeros((0, 3), np.float32),
    lambda: np.zeros((3, 0), np.float32)[::-1],
    lambda: np.zeros((0, 4), ">f4"),
    lambda: np.zeros((4, 0), np.int32).T[::-1],
    lambda: np.ndarray((0,), np.float32, buffer=np.zeros(5, np.uint8), offset=1),
], ids=["plain", "negative-stride", "byte-swapped", "transposed-reversed",
        "misaligned"])
@pytest.mark.parametrize("copy", [None, False])
def test_zero_size_arrays_are_always_shareable(make, copy):
    a = make()
    t = tb.to_tensor(a, copy=copy)
    assert tuple(t.shape) == a.shape and t.numel() == 0


def test_zero_size_read_only_shares_with_copy_false():
    a = np.zeros((0, 2), np.float32)
    a.flags.writeable = False
    assert tb.to_tensor(a, copy=False).shape == (0, 2)


# ------------------------------------------------- NumPy scalars, Python objects

@pytest.mark.parametrize("scalar,dtype", [
    (np.float32(2.5), torch.float32),
    (np.float64(2.5), torch.float32),
    (np.int16(-3), torch.int16),
    (np.uint64(2 ** 64 - 1), torch.uint64),
    (np.bool_(True), torch.bool),
    (np.complex64(1 + 2j), torch.complex64),
])
def test_numpy_scalar_becomes_zero_d_tensor(scalar, dtype):
    t = tb.to_tensor(scalar)
    assert t.dim() == 0 and t.dtype == dtype
    assert t.numpy()[()] == scalar.astype(t.numpy().dtype)


def test_numpy_scalar_with_copy_false_raises():
    copy_false_error(np.float32(1.0), "no memory to share")


@pytest.mark.parametrize("obj,dtype,values", [
    (3, torch.int64, 3),
    (2.5, torch.float32, 2.5),
    (True, torch.bool, True),
    (1 + 1j, torch.complex64, 1 + 1j),
    ([1, 2, 3], torch.int64, [1, 2, 3]),
    ([[1.5, 2.0], [3.0, 4.0]], torch.float32, [[1.5, 2.0], [3.0, 4.0]]),
    ((1, 2), torch.int64, [1, 2]),
    ([[[True], [False]]], torch.bool, [[[True], [False]]]),
    ([], torch.float32, []),
    ([np.float32(1), np.float32(2)], torch.float32, [1, 2]),
])
def test_python_objects_convert_via_numpy(obj, dtype, values):
    t = tb.to_tensor(obj)
    assert t.dtype == dtype and t.tolist() == values


@pytest.mark.parametrize("obj", [3, 2.5, [1, 2], [[1.0], [2.0]], (1, 2)])
def test_python_objects_with_copy_false_raise(obj):
    copy_false_error(obj, "no memory to share")


def test_object_with_array_method_is_shared():
    class Wrapper:
        def __init__(self):
            self.a = np.arange(4, dtype=np.float32)

        def __array__(self, dtype=None, copy=None):
            return self.a

    w = Wrapper()
    t = tb.to_tensor(w, copy=False)
    t[0] = 11
    assert w.a[0] == 11


def test_object_with_array_interface_is_shared():
    class Iface:
        def __init__(self):
            self.a = np.arange(4, dtype=np.int32)
            self.__array_interface__ = self.a.__array_interface__

    obj = Iface()
    t = tb.to_tensor(obj)
    assert t.data_ptr() == obj.a.ctypes.data
    t[1] = 42
    assert obj.a[1] == 42


def test_bytearray_is_shared_as_uint8():
    b = bytearray(b"abcd")
    t = tb.to_tensor(b, copy=False)
    assert t.dtype == torch.uint8 and t.tolist() == [97, 98, 99, 100]
    t[0] = 65
    assert b == bytearray(b"Abcd")


def test_writable_memoryview_is_shared():
    b = bytearray(8)
    t = tb.to_tensor(memoryview(b).cast("f"))
    assert t.dtype == torch.float32 and t.shape == (2,)
    t[1] = 1.0
    assert np.frombuffer(b, np.float32)[1] == 1.0


def test_read_only_memoryview_copies_by_default_and_shares_with_copy_false():
    data = bytes(range(4))
    t = tb.to_tensor(memoryview(data))
    assert t.tolist() == [0, 1, 2, 3]
    t2 = tb.to_tensor(memoryview(data), copy=False)
    assert t2.tolist() == [0, 1, 2, 3]
    addr = np.frombuffer(data, np.uint8).ctypes.data
    assert t2.data_ptr() == addr and t.data_ptr() != addr


@pytest.mark.parametrize("code,dtype", [("f", torch.float32), ("i", torch.int32),
                                        ("h", torch.int16), ("B", torch.uint8)])
def test_array_array_is_shared(code, dtype):
    arr = array.array(code, [1, 2, 3])
    t = tb.to_tensor(arr, copy=False)
    assert t.dtype == dtype and t.tolist() == [1, 2, 3]
    t[2] = 7
    assert arr[2] == 7


def test_array_array_double_follows_policy():
    t = tb.to_tensor(array.array("d", [0.5, 1.5]))
    assert t.dtype == torch.float32 and t.tolist() == [0.5, 1.5]


# ------------------------------------------------- lists of arrays

def test_list_of_equal_shape_arrays_is_stacked():
    arrays = [np.full((2, 3), i, dtype=np.float32) for i in range(4)]
    t = tb.to_tensor(arrays)
    assert t.shape == (4, 2, 3) and t.dtype == torch.float32
    assert t.tolist() == np.stack(arrays).tolist()
    for a in arrays:
        assert not shares(t, a)


def test_tuple_of_arrays_is_stacked():
    t = tb.to_tensor((np.arange(3, dtype=np.int16), np.arange(3, 6, dtype=np.int16)))
    assert t.dtype == torch.int16 and t.tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("dtypes,expected", [
    ((np.uint8, np.int8), torch.int16),
    ((np.int32, np.float32), torch.float32),  # result float64, then policy
    ((np.int64, np.float64), torch.float32),
    ((np.float16, np.float32), torch.float32),
    ((np.bool_, np.uint8), torch.uint8),
    ((np.float32, np.complex64), torch.complex64),
])
def test_list_of_mixed_dtype_arrays_promotes_like_numpy(dtypes, expected):
    arrays = [np.arange(1, 4).astype(d) for d in dtypes]
    t = tb.to_tensor(arrays)
    assert t.dtype == expected
    assert t.tolist() == np.stack(arrays).astype(t.numpy().dtype).tolist()


def test_list_of_mixed_arrays_keeps_float64_with_float_dtype_none():
    t = tb.to_tensor([np.ones(2, np.int32), np.ones(2, np.float32)],
                     float_dtype=None)
    assert t.dtype == torch.float64  # NumPy's result type


def test_list_of_awkward_arrays_is_stacked_with_right_values():
    base = np.arange(12, dtype=np.float32)
    arrays = [base[:6][::-1].copy(), base[::2][::-1], base[6:].astype(">f4"),
              misaligned(6, np.float32)]
    t = tb.to_tensor(arrays)
    assert t.tolist() == [a.tolist() for a in arrays]


def test_list_of_arrays_with_explicit_dtype():
    t = tb.to_tensor([np.arange(2), np.arange(2)], dtype=torch.float16)
    assert t.dtype == torch.float16 and t.tolist() == [[0, 1], [0, 1]]


def test_list_of_arrays_with_copy_false_raises():
    copy_false_error([np.ones(2, np.float32), np.ones(2, np.float32)], "stack")


def test_list_of_unequal_shape_arrays_names_the_element():
    with pytest.raises(TypeError) as e:
        tb.to_tensor([np.ones(3), np.ones(3), np.ones(4)])
    msg = str(e.value)
    assert "[2]" in msg and "(4,)" in msg and "(3,)" in msg


def test_list_of_zero_d_arrays_is_stacked():
    t = tb.to_tensor([np.array(1.0, np.float32), np.array(2.0, np.float32)])
    assert t.shape == (2,) and t.tolist() == [1, 2]


def test_list_of_unsupported_dtype_arrays_is_a_type_error():
    with pytest.raises(TypeError, match="datetime64"):
        tb.to_tensor([np.zeros(2, "M8[s]"), np.zeros(2, "M8[s]")])


# ------------------------------------------------- lists of tensors
# Stacked by torch (at::stack), never through NumPy: NumPy would call
# .numpy() on each item, which fails for tensors that require grad and for
# bfloat16.

def test_list_of_tensors_keeps_the_autograd_graph():
    w = torch.arange(3.0, requires_grad=True)
    t = tb.to_tensor([w * 2, w * 3])
    assert t.shape == (2, 3) and t.requires_grad and t.grad_fn is not None
    assert t.tolist() == [[0, 2, 4], [0, 3, 6]]
    (t * torch.tensor([[1.0], [10.0]])).sum().backward()
    assert w.grad.tolist() == [32.0, 32.0, 32.0]  # 2 * 1 + 3 * 10


def test_list_of_float64_tensors_follows_the_policy_and_keeps_the_graph():
    w = torch.ones(2, dtype=torch.float64, requires_grad=True)
    t = tb.to_tensor([w, w * 4])
    assert t.dtype == torch.float32 and t.tolist() == [[1, 1], [4, 4]]
    t.sum().backward()
    assert w.grad.dtype == torch.float64 and w.grad.tolist() == [5.0, 5.0]
    assert tb.to_tensor([w, w], float_dtype=None).dtype == torch.float64


def test_list_of_bfloat16_tensors_stays_bfloat16():
    items = [torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
             torch.tensor([3.0, 0.25], dtype=torch.bfloat16)]
    t = tb.to_tensor(items)
    assert t.dtype == torch.bfloat16 and torch.equal(t, torch.stack(items))


def test_tuple_and_nested_lists_of_tensors_are_stacked():
    a, b = torch.arange(2), torch.arange(2, 4)
    assert tb.to_tensor((a, b)).tolist() == [[0, 1], [2, 3]]
    t = tb.to_tensor([[a, b], [b, a]])
    assert t.shape == (2, 2, 2) and t.dtype == torch.int64
    assert t.tolist() == [[[0, 1], [2, 3]], [[2, 3], [0, 1]]]


def test_list_of_tensors_honours_dtype_and_is_fresh_memory():
    a = torch.arange(3, dtype=torch.int32)
    t = tb.to_tensor([a, a], dtype=torch.float16)
    assert t.dtype == torch.float16 and t.tolist() == [[0, 1, 2], [0, 1, 2]]
    t = tb.to_tensor([a, a], copy=True)
    assert t.dtype == torch.int32 and t.untyped_storage().data_ptr() != a.data_ptr()
    t[0, 0] = 9
    assert a[0] == 0


def test_list_of_tensors_with_copy_false_raises():
    copy_false_error([torch.ones(2), torch.ones(2)], "stacking them is a copy")


def test_list_of_tensors_requires_grad_gives_a_new_leaf():
    w = torch.ones(2, requires_grad=True)
    t = tb.to_tensor([w, w], requires_grad=True)
    assert t.is_leaf and t.requires_grad and t.grad_fn is None
    with pytest.raises(ValueError, match="requires_grad"):
        tb.to_tensor([torch.ones(2, dtype=torch.int64)], requires_grad=True)


def test_list_of_tensors_with_different_shapes_names_the_element():
    with pytest.raises(ValueError) as e:
        tb.to_tensor([torch.ones(3), torch.ones(3), torch.ones(2, 2)])
    msg = str(e.value)
    assert "[2]" in msg and "(2, 2)" in msg and "(3,)" in msg, msg


def test_list_of_tensors_on_meta_stays_shape_only_and_refuses_a_real_device():
    t = tb.to_tensor([torch.empty(2, device="meta", dtype=torch.float64)] * 3)
    assert t.device.type == "meta" and t.shape == (3, 2) and t.dtype == torch.float32
    with pytest.raises(ValueError, match="meta"):
        tb.to_tensor([torch.empty(2, device="meta")] * 2, device="cpu")


def test_mixed_list_of_tensors_arrays_and_numbers_is_stacked_once():
    w = torch.ones(2, requires_grad=True)
    t = tb.to_tensor([w, np.array([2.0, 3.0]), [4, 5]])
    assert t.dtype == torch.float32  # float64 from the array, then the policy
    assert t.tolist() == [[1, 1], [2, 3], [4, 5]]
    t.sum().backward()
    assert w.grad.tolist() == [1.0, 1.0]
    t = tb.to_tensor([torch.tensor(1, dtype=torch.int32), 2, np.int16(3)])
    assert t.dtype == torch.int64 and t.tolist() == [1, 2, 3]


def test_mixed_list_with_a_mismatched_shape_names_the_element():
    with pytest.raises(ValueError, match=r"\[1\].*\(3,\)"):
        tb.to_tensor([torch.ones(2), np.ones(3)])


def test_dict_input_points_to_tree_to_tensor():
    with pytest.raises(TypeError) as e:
        tb.to_tensor({"a": np.ones(2)})
    msg = str(e.value)
    assert "dict" in msg and "tree_to_tensor" in msg and "dtype object" not in msg


def test_none_input_names_its_type():
    with pytest.raises(TypeError, match="NoneType.*not an array-like"):
        tb.to_tensor(None)


# ------------------------------------------------- tensor inputs

def test_tensor_with_nothing_to_change_is_returned_as_is():
    t = torch.arange(3.0)
    assert tb.to_tensor(t) is t
    assert tb.to_tensor(t, copy=False) is t
    assert tb.to_tensor(t, dtype=torch.float32) is t
    assert tb.to_tensor(t, device="cpu") is t


def test_tensor_float64_follows_the_policy():
    t = torch.arange(3.0, dtype=torch.float64)
    out = tb.to_tensor(t)
    assert out.dtype == torch.float32 and out.tolist() == [0, 1, 2]
    assert tb.to_tensor(t, float_dtype=None) is t


def test_tensor_copy_true_clones():
    t = torch.arange(3.0)
    out = tb.to_tensor(t, copy=True)
    assert out is not t and out.data_ptr() != t.data_ptr()
    assert torch.equal(out, t)


def test_tensor_copy_true_keeps_strides_of_dense_tensor():
    t = torch.arange(6.0).reshape(2, 3).t()
    out = tb.to_tensor(t, copy=True)
    assert out.data_ptr() != t.data_ptr() and torch.equal(out, t)


def test_tensor_cast_with_copy_false_raises():
    with pytest.raises(ValueError) as e:
        tb.to_tensor(torch.ones(2, dtype=torch.float64), copy=False)
    msg = str(e.value)
    assert "copy=False" in msg and "float64" in msg and "copy=None" in msg


def test_tensor_explicit_cast_with_copy_false_raises():
    with pytest.raises(ValueError, match="copy=None"):
        tb.to_tensor(torch.ones(2), dtype=torch.int32, copy=False)


def test_tensor_autograd_graph_is_kept_through_a_cast():
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    y = tb.to_tensor(x)
    assert y.dtype == torch.float32 and y.requires_grad and y.grad_fn is not None
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0]


def test_tensor_autograd_graph_is_kept_without_a_cast():
    x = torch.ones(2, requires_grad=True)
    h = x * 3
    assert tb.to_tensor(h) is h


def test_tensor_copy_true_keeps_the_graph():
    x = torch.ones(2, requires_grad=True)
    y = tb.to_tensor(x, copy=True)
    assert y.requires_grad
    (y * 2).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


# ------------------------------------------------- requires_grad=True

def test_requires_grad_makes_a_leaf_from_an_array():
    a = np.arange(3, dtype=np.float32)
    t = tb.to_tensor(a, requires_grad=True)
    assert t.requires_grad and t.is_leaf and t.grad_fn is None
    (t * 2).sum().backward()
    assert t.grad.tolist() == [2, 2, 2]


def test_requires_grad_with_float64_follows_the_policy():
    t = tb.to_tensor(np.ones(2), requires_grad=True)
    assert t.dtype == torch.float32 and t.is_leaf and t.requires_grad


def test_requires_grad_on_a_tensor_makes_a_detached_leaf():
    x = torch.ones(2, requires_grad=True)
    h = x * 2
    t = tb.to_tensor(h, requires_grad=True)
    assert t is not h and t.is_leaf and t.requires_grad
    t.sum().backward()
    assert x.grad is None  # detached from h's graph
    assert t.grad.tolist() == [1.0, 1.0]


def test_requires_grad_on_a_leaf_tensor_returns_a_new_leaf():
    x = torch.ones(2, requires_grad=True)
    t = tb.to_tensor(x, requires_grad=True)
    assert t is not x and t.is_leaf and t.requires_grad


@pytest.mark.parametrize("obj", [np.arange(3), np.ones(2, np.bool_),
                                 torch.arange(3), [1, 2]])
def test_requires_grad_on_integer_result_is_a_value_error(obj):
    with pytest.raises(ValueError) as e:
        tb.to_tensor(obj, requires_grad=True)
    assert "requires_grad" in str(e.value) and "dtype=" in str(e.value)


def test_requires_grad_with_float_dtype_on_integers_works():
    t = tb.to_tensor(np.arange(3), dtype=torch.float32, requires_grad=True)
    assert t.requires_grad and t.tolist() == [0, 1, 2]


def test_requires_grad_on_complex_works():
    t = tb.to_tensor(np.ones(2, np.complex64), requires_grad=True)
    assert t.requires_grad and t.dtype == torch.complex64


# ------------------------------------------------- devices and pinning (no GPU)

@pytest.mark.skipif(HAS_CUDA, reason="checks the no-CUDA error")
@pytest.mark.parametrize("obj", [np.ones(3, np.float32), torch.ones(3), [1.0]])
def test_pin_memory_without_cuda_raises_saying_why(obj):
    with pytest.raises(RuntimeError) as e:
        tb.to_tensor(obj, pin_memory=True)
    msg = str(e.value)
    assert "pin_memory" in msg and "CUDA" in msg


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-CUDA error")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda"), 0])
def test_cuda_device_without_cuda_raises_naming_the_problem(device):
    with pytest.raises(RuntimeError) as e:
        tb.to_tensor(np.ones(3, np.float32), device=device)
    assert "cuda" in str(e.value).lower()


def test_bad_device_string_is_a_value_error():
    with pytest.raises(ValueError, match="device"):
        tb.to_tensor(np.ones(3), device="gpu7")


# ------------------------------------------------- argument handling

def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword"):
        tb.to_tensor(np.ones(2), cpoy=False)


def test_too_many_positional_arguments_is_a_type_error():
    with pytest.raises(TypeError):
        tb.to_tensor(np.ones(2), None, torch.float32)


def test_missing_argument_is_a_type_error():
    with pytest.raises(TypeError):
        tb.to_tensor()


# ------------------------------------------------- ndarray subclasses

def test_writable_memmap_is_shared_and_kept_alive(tmp_path):
    mm = np.memmap(tmp_path / "m.dat", dtype=np.float32, mode="w+", shape=(16,))
    mm[:] = np.arange(16)
    t = tb.to_tensor(mm)
    assert t.data_ptr() == mm.ctypes.data
    t[0] = 50
    mm.flush()
    del mm
    gc.collect()
    assert t.sum().item() == 170
    assert np.fromfile(tmp_path / "m.dat", dtype=np.float32)[0] == 50


def test_read_only_memmap_copies_by_default(tmp_path):
    np.arange(8, dtype=np.float32).tofile(tmp_path / "r.dat")
    mm = np.memmap(tmp_path / "r.dat", dtype=np.float32, mode="r", shape=(8,))
    t = tb.to_tensor(mm)
    assert t.data_ptr() != mm.ctypes.data and t.tolist() == list(range(8))
    assert tb.to_tensor(mm, copy=False).data_ptr() == mm.ctypes.data


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_matrix_and_masked_array_convert_their_data():
    m = np.matrix([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    t = tb.to_tensor(m)
    assert t.shape == (2, 2) and t.tolist() == [[1, 2], [3, 4]]
    ma = np.ma.masked_array(np.arange(3, dtype=np.float32), mask=[0, 1, 0])
    assert tb.to_tensor(ma).tolist() == [0, 1, 2]


def test_parameter_input_is_returned_as_is():
    p = torch.nn.Parameter(torch.ones(2))
    assert tb.to_tensor(p) is p
