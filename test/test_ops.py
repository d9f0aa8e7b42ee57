"""torch.ops.torchbridge.{to_host,coerce}: opcheck, torch.compile, torch.ops calls."""

from __future__ import annotations

import pytest
import torch

import torchbridge as tb
from conftest import HAS_CUDA, cpu_and_cuda, needs_cuda

OPS = torch.ops.torchbridge

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
          torch.uint16, torch.uint32, torch.uint64, torch.float16, torch.bfloat16,
          torch.float32, torch.float64, torch.complex64, torch.complex128]
SHAPES = [(), (0,), (5,), (3, 4), (2, 0, 3)]
_GRAD_OK = {torch.float16, torch.bfloat16, torch.float32, torch.float64,
            torch.complex64, torch.complex128}


def _make(shape, dtype, device, requires_grad=False):
    if dtype == torch.bool:
        t = torch.rand(shape, device=device) > 0.5
    elif dtype.is_floating_point or dtype.is_complex:
        t = torch.randn(shape, dtype=dtype, device=device)
    elif dtype in (torch.uint16, torch.uint32, torch.uint64):
        # randint has no kernels for these; build through int64.
        t = torch.randint(0, 100, shape, device=device).to(dtype)
    else:
        t = torch.randint(0, 100, shape, dtype=dtype, device=device)
    return t.requires_grad_(requires_grad and dtype in _GRAD_OK)


def sample_inputs(device):
    """(args, kwargs, expected dtype) for coerce across dtypes x shapes x layouts."""
    out = []
    for dtype in DTYPES:
        for shape in SHAPES:
            x = _make(shape, dtype, device)
            out.append(((x,), {}))
        out.append(((_make((3, 4), dtype, device, requires_grad=True),), {}))
        out.append(((_make((4, 3), dtype, device).t(),), {}))  # non-contiguous
    out.append(((_make((3,), torch.float64, device),), {"dtype": torch.float16}))
    out.append(((_make((3,), torch.uint8, device),), {"dtype": torch.float32}))
    return out


def _expected_coerce(x, dtype=None, device=None):
    target = dtype or {torch.float64: torch.float32,
                       torch.complex128: torch.complex64}.get(x.dtype, x.dtype)
    return x.detach().to(device or x.device, target)


def _expected_host_dtype(dtype):
    return {torch.bfloat16: torch.float32}.get(dtype, dtype)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_opcheck_coerce_over_dtypes_shapes_layouts(device):
    for args, kwargs in sample_inputs(device):
        torch.library.opcheck(OPS.coerce.default, args, kwargs)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_opcheck_to_host_over_dtypes_shapes_layouts(device):
    for args, kwargs in sample_inputs(device):
        torch.library.opcheck(OPS.to_host.default, args, kwargs)


@needs_cuda
def test_opcheck_coerce_across_devices():
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.library.opcheck(OPS.coerce.default, (x,), {"device": torch.device("cuda")})
    torch.library.opcheck(OPS.coerce.default, (x.cuda(),), {"device": torch.device("cpu")})
    u = torch.randint(0, 255, (64,), dtype=torch.uint8)
    torch.library.opcheck(OPS.coerce.default, (u,),
                          {"dtype": torch.float32, "device": torch.device("cuda")})


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_coerce_values_match_tensor_to_for_every_dtype(device):
    for args, kwargs in sample_inputs(device):
        x = args[0]
        y = OPS.coerce(*args, **kwargs)
        ref = _expected_coerce(x, kwargs.get("dtype"))
        assert y.dtype == ref.dtype and y.device == ref.device and y.shape == x.shape
        assert torch.equal(y.detach(), ref)
        # Functional: never an alias of the input, even when nothing changes.
        if x.numel():
            assert y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_to_host_values_dtype_and_no_grad_for_every_dtype(device):
    for args, kwargs in sample_inputs(device):
        x = args[0]
        h = OPS.to_host(*args, **kwargs)
        assert h.device.type == "cpu" and not h.requires_grad
        assert h.dtype == kwargs.get("dtype", _expected_host_dtype(x.dtype))
        assert torch.equal(h, x.detach().cpu().to(h.dtype))
        if x.numel():
            assert h.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


def test_coerce_passes_gradients_like_tensor_to():
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y = OPS.coerce(x)
    assert y.dtype == torch.float32 and y.requires_grad
    (y * torch.arange(4.0)).sum().backward()
    assert x.grad.dtype == torch.float64
    assert torch.equal(x.grad, torch.arange(4.0, dtype=torch.float64))


def test_coerce_complex_to_real_gradient_is_real():
    z = torch.randn(3, dtype=torch.complex128, requires_grad=True)
    y = OPS.coerce(z, torch.float32)  # drops the imaginary part, as Tensor.to
    y.sum().backward()
    assert z.grad.dtype == torch.complex128
    assert torch.equal(z.grad, torch.ones(3, dtype=torch.complex128))


def test_to_host_result_never_requires_grad():
    x = torch.randn(3, requires_grad=True)
    h = OPS.to_host(x)
    assert not h.requires_grad and h.grad_fn is None


def test_ops_errors_are_the_core_errors():
    with pytest.raises(TypeError, match=r"torchbridge::coerce: dtype=torch.qint8 is a quantized dtype"):
        OPS.coerce(torch.ones(2), torch.qint8)
    with pytest.raises(TypeError, match="has no NumPy equivalent"):
        OPS.to_host(torch.ones(2, dtype=torch.uint8).view(torch.bits8))


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-CUDA message")
def test_coerce_to_missing_cuda_says_so():
    with pytest.raises(RuntimeError, match="pass device='cpu'"):
        OPS.coerce(torch.ones(2), device=torch.device("cuda"))


def test_fakes_use_the_compiled_rules():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(3, 5, dtype=torch.float64).t()
        y = OPS.coerce(x)
        h = OPS.to_host(torch.empty(2, dtype=torch.bfloat16))
        c = OPS.coerce(torch.empty(2, dtype=torch.complex128))
    assert y.dtype == torch.float32 and y.shape == (5, 3) and y.stride() == x.stride()
    assert h.dtype == torch.float32 and h.device.type == "cpu"
    assert c.dtype == torch.complex64
    assert tb._C._policy_dtype(torch.float64) == torch.float32
    assert tb._C._policy_dtype(torch.float64, None, None) == torch.float64
    assert tb._C._host_dtype(torch.float8_e4m3fn) == torch.float32


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_torch_compile_fullgraph_traces_both_ops(device):
    def f(x, w):
        y = OPS.coerce(x * 2, None)          # float64 -> float32 inside the graph
        h = OPS.to_host(y + w, torch.bfloat16)
        return y.sum(), h

    compiled = torch.compile(f, fullgraph=True, backend="inductor")
    x = torch.randn(8, dtype=torch.float64, device=device)
    w = torch.randn(8, device=device)
    got_sum, got_h = compiled(x, w)
    ref_sum, ref_h = f(x, w)
    assert got_sum.dtype == torch.float32 and torch.allclose(got_sum, ref_sum)
    assert got_h.dtype == torch.bfloat16 and got_h.device.type == "cpu"
    assert torch.equal(got_h, ref_h)


def test_torch_compile_backward_through_coerce():
    def f(x):
        return (OPS.coerce(x) ** 2).sum()

    compiled = torch.compile(f, fullgraph=True)
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    compiled(x).backward()
    assert x.grad.dtype == torch.float64
    assert torch.allclose(x.grad, 2 * x.detach().float().double())


# ------------------------------------------------- genuine meta tensors in eager mode
# register_fake also serves the Meta key: a real meta tensor used to get the
# fake result (uninitialised CPU memory from to_host). It gets the rules of
# the C++ Meta kernels now; fake tensors keep the shape-only path.

def test_to_host_of_a_meta_tensor_raises_like_tb_to_host():
    m = torch.empty(2, 3, device="meta", dtype=torch.float64)
    with pytest.raises(ValueError, match="torchbridge::to_host: meta tensors"):
        OPS.to_host(m)
    with pytest.raises(ValueError, match="meta"):
        OPS.to_host(m, torch.float32, False)
    with pytest.raises(ValueError, match="meta"):
        tb.to_host(m)


def test_coerce_of_a_meta_tensor_to_a_real_device_raises():
    m = torch.empty(4, device="meta", dtype=torch.float64)
    with pytest.raises(ValueError, match="torchbridge::coerce: meta tensors.*cpu"):
        OPS.coerce(m, None, torch.device("cpu"))


def test_coerce_of_a_meta_tensor_on_meta_is_shape_only():
    m = torch.empty(5, 3, device="meta", dtype=torch.float64).t()
    for y in (OPS.coerce(m), OPS.coerce(m, None, torch.device("meta")),
              OPS.coerce(m, torch.float16)):
        assert y.is_meta and y.shape == (3, 5) and y.stride() == m.stride()
    assert OPS.coerce(m).dtype == torch.float32
    assert OPS.coerce(m, torch.float16).dtype == torch.float16


def test_fake_tensors_of_meta_and_cpu_tensors_keep_the_shape_only_path():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.empty(3, dtype=torch.float64))
        h = OPS.to_host(x)
        c = OPS.coerce(torch.empty(2, dtype=torch.float64), None, torch.device("cpu"))
    assert h.dtype == torch.float64 and h.shape == (3,) and h.device.type == "cpu"
    assert c.dtype == torch.float32 and c.device.type == "cpu"
