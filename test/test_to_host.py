"""tb.to_host: the tensor-side half of to_numpy (detached, CPU, dense, resolved)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import HAS_CUDA

import torchbridge as tb

pytestmark = pytest.mark.filterwarnings(
    "ignore:ComplexHalf support is experimental:UserWarning")


def check_host_form(h: torch.Tensor):
    """What every to_host result is, checked independently with torch itself."""
    assert h.device.type == "cpu" and h.layout == torch.strided
    assert not h.requires_grad and not h.is_conj() and not h.is_neg()
    assert not h.is_quantized
    h.numpy()  # torch's own export accepts it as is


def copy_false_error(t, *phrases, **kw):
    with pytest.raises(ValueError) as e:
        tb.to_host(t, copy=False, **kw)
    msg = str(e.value)
    assert msg.startswith("to_host") and "copy=None" in msg, msg
    for p in phrases:
        assert p in msg, f"{p!r} not in {msg!r}"


@pytest.mark.parametrize("make", [
    lambda: torch.arange(6.0),
    lambda: torch.arange(12.0).reshape(3, 4).t(),
    lambda: torch.arange(10, dtype=torch.int16)[::3],
    lambda: torch.tensor(1.5),
    lambda: torch.zeros(0, 3),
    lambda: torch.ones(3, dtype=torch.uint64),
], ids=["contiguous", "transposed", "strided", "0-d", "empty", "uint64"])
def test_returns_its_input_when_nothing_changes(make):
    t = make()
    assert tb.to_host(t) is t
    assert tb.to_host(t, copy=False) is t
    assert tb.to_host(t, dtype=t.dtype) is t


def test_requires_grad_result_is_detached_and_shared():
    w = torch.arange(3.0, requires_grad=True)
    h = tb.to_host(w)
    check_host_form(h)
    assert h.data_ptr() == w.data_ptr()
    h[0] = 10
    assert w[0].item() == 10
    assert w.requires_grad


def test_non_leaf_result_is_detached():
    x = torch.ones(2, requires_grad=True)
    h = tb.to_host(x * 3)
    check_host_form(h)
    assert h.grad_fn is None and h.tolist() == [3, 3]


def test_copy_true_returns_fresh_memory():
    t = torch.arange(6.0).reshape(2, 3).t()
    h = tb.to_host(t, copy=True)
    assert h is not t and h.data_ptr() != t.data_ptr()
    assert torch.equal(h, t) and h.stride() == t.stride()


def test_copy_true_on_requires_grad_tensor_copies_and_detaches():
    w = torch.ones(2, requires_grad=True)
    h = tb.to_host(w, copy=True)
    check_host_form(h)
    assert h.data_ptr() != w.data_ptr()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float8_e4m3fn,
                                   torch.float8_e5m2])
def test_dtypes_numpy_lacks_become_float32(dtype):
    t = torch.tensor([1.0, -2.0, 0.5]).to(dtype)
    h = tb.to_host(t)
    check_host_form(h)
    assert h.dtype == torch.float32 and h.tolist() == [1.0, -2.0, 0.5]


def test_complex32_becomes_complex64():
    t = torch.tensor([1 + 2j]).to(torch.complex32)
    h = tb.to_host(t)
    assert h.dtype == torch.complex64 and h.tolist() == [1 + 2j]


def test_explicit_dtype_is_honoured_even_without_numpy_equivalent():
    h = tb.to_host(torch.tensor([1.0, 1 / 3]), dtype=torch.bfloat16)
    assert h.dtype == torch.bfloat16
    assert torch.equal(h, torch.tensor([1.0, 1 / 3]).to(torch.bfloat16))


@pytest.mark.parametrize("spec", [torch.float64, np.float64, "float64", float])
def test_dtype_forms(spec):
    t = torch.tensor([1.5, 2.5])
    h = tb.to_host(t, dtype=spec)
    assert h.dtype == torch.float64 and h.tolist() == [1.5, 2.5]


def test_dtype_cast_with_copy_false_raises():
    copy_false_error(torch.ones(2), "float32", "float64", dtype=torch.float64)


def test_bfloat16_with_copy_false_raises():
    copy_false_error(torch.ones(2, dtype=torch.bfloat16), "bfloat16")


def test_quantized_target_dtype_is_a_type_error():
    with pytest.raises(TypeError, match="quantized"):
        tb.to_host(torch.ones(2), dtype=torch.qint8)


def test_conj_bit_is_resolved():
    base = torch.tensor([1 + 2j, 3 - 1j])
    h = tb.to_host(base.conj())
    check_host_form(h)
    assert h.tolist() == [1 - 2j, 3 + 1j]
    assert base.tolist() == [1 + 2j, 3 - 1j]


def test_neg_bit_is_resolved():
    t = torch.tensor([1 + 2j]).conj().imag
    assert t.is_neg()
    h = tb.to_host(t)
    check_host_form(h)
    assert h.tolist() == [-2.0]


def test_conj_and_neg_with_copy_false_raise():
    copy_false_error(torch.tensor([1j]).conj(), "conjugate")
    copy_false_error(torch.tensor([1j]).conj().imag, "negative")


@pytest.mark.parametrize("to_sparse", [lambda d: d.to_sparse(),
                                       lambda d: d.to_sparse_csr()],
                         ids=["coo", "csr"])
def test_sparse_is_densified(to_sparse):
    dense = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = tb.to_host(to_sparse(dense))
    check_host_form(h)
    assert torch.equal(h, dense)


def test_sparse_with_copy_false_raises():
    copy_false_error(torch.eye(2).to_sparse(), "sparse_coo")


def test_quantized_is_dequantized():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor(torch.tensor([0.5, 1.0, -1.5]), 0.5, 0,
                                      torch.qint8)
    h = tb.to_host(q)
    check_host_form(h)
    assert h.dtype == torch.float32 and h.tolist() == [0.5, 1.0, -1.5]


def test_meta_tensor_raises_value_error():
    with pytest.raises(ValueError, match="meta"):
        tb.to_host(torch.empty(2, device="meta"))


def test_nested_tensor_raises_value_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nt = torch.nested.nested_tensor([torch.zeros(1), torch.zeros(2)])
    with pytest.raises(ValueError, match="nested"):
        tb.to_host(nt)


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-CUDA error")
def test_pin_memory_without_cuda_raises_a_useful_message():
    with pytest.raises(RuntimeError) as e:
        tb.to_host(torch.ones(2), pin_memory=True)
    msg = str(e.value)
    assert "pin_memory" in msg and "CUDA" in msg and "pin_memory=False" in msg


def test_non_tensor_is_a_type_error_pointing_to_to_tensor():
    with pytest.raises(TypeError, match="to_tensor"):
        tb.to_host(np.ones(2))


def test_to_host_then_numpy_shares_with_to_numpy():
    t = torch.arange(4.0).reshape(2, 2).t()
    assert tb.to_numpy(tb.to_host(t)).ctypes.data == tb.to_numpy(t).ctypes.data
