"""scipy.sparse <-> torch sparse: tb.to_tensor of SciPy matrices and arrays,
tb.to_scipy of torch sparse tensors, tb.to_numpy of both (densified, with a
size check)."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

import torchbridge as tb
from conftest import collect, cpu_and_cuda, optional

# torch warns once per process that sparse CSR is "in beta state".
pytestmark = [
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning"),
    pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning"),
]


@pytest.fixture(scope="module")
def sp():
    return optional("scipy.sparse")


def ptr(a) -> int:
    return a.__array_interface__["data"][0]


def rand(sp, shape=(30, 20), density=0.2, dtype=np.float32, fmt="csr", index=np.int32,
         cls="array"):
    rng = np.random.default_rng(0)
    dense = (rng.random(shape) < density) * rng.standard_normal(shape)
    dense = dense.astype(dtype)
    m = getattr(sp, f"{fmt}_{cls}")(dense)
    if fmt in ("csr", "csc"):
        m.indptr, m.indices = m.indptr.astype(index), m.indices.astype(index)
    return m, dense


def dense_of(t: torch.Tensor) -> np.ndarray:
    return t.to_dense().numpy()


LAYOUT = {"csr": torch.sparse_csr, "csc": torch.sparse_csc, "coo": torch.sparse_coo}


# --- to_tensor: values, layouts, classes ---------------------------------------

@pytest.mark.parametrize("cls", ["array", "matrix"])
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_layout_and_values_match_scipy(sp, fmt, cls):
    m, dense = rand(sp, fmt=fmt, cls=cls)
    t = tb.to_tensor(m)
    assert t.layout == LAYOUT[fmt] and t.dtype == torch.float32
    assert tuple(t.shape) == m.shape
    np.testing.assert_array_equal(dense_of(t), m.toarray())


@pytest.mark.parametrize("cls", ["array", "matrix"])
@pytest.mark.parametrize("fmt", ["bsr", "dia", "lil", "dok"])
def test_other_formats_go_through_csr(sp, fmt, cls):
    m, dense = rand(sp, fmt=fmt, cls=cls)
    t = tb.to_tensor(m)
    assert t.layout == torch.sparse_csr
    np.testing.assert_array_equal(dense_of(t), dense)


@pytest.mark.parametrize("fmt", ["bsr", "dia", "lil", "dok"])
def test_other_formats_refuse_copy_false_naming_why(sp, fmt):
    m, _ = rand(sp, fmt=fmt)
    with pytest.raises(ValueError, match=rf"copy=False\): a scipy.sparse {fmt}_array "
                       rf"\(format '{fmt}'\) has no torch layout of its own, so it "
                       r"converts through m.tocsr\(\), which copies; pass copy=None"):
        tb.to_tensor(m, copy=False)


# --- sharing --------------------------------------------------------------------

def test_float32_int32_csr_shares_all_three_buffers(sp):
    m, _ = rand(sp, dtype=np.float32, index=np.int32)
    t = tb.to_tensor(m)
    assert t.crow_indices().dtype == torch.int32
    assert t.crow_indices().data_ptr() == ptr(m.indptr)
    assert t.col_indices().data_ptr() == ptr(m.indices)
    assert t.values().data_ptr() == ptr(m.data)
    t2 = tb.to_tensor(m, copy=False)  # the same, promised
    assert t2.values().data_ptr() == ptr(m.data)
    m.data[0] = 42.0  # writes show in the tensor
    assert t.values()[0].item() == 42.0


def test_float64_values_copied_by_policy_indices_shared(sp):
    m, dense = rand(sp, dtype=np.float64, index=np.int32)
    t = tb.to_tensor(m)
    assert t.dtype == torch.float32
    assert t.values().data_ptr() != ptr(m.data)
    assert t.crow_indices().data_ptr() == ptr(m.indptr)
    assert t.col_indices().data_ptr() == ptr(m.indices)
    np.testing.assert_allclose(dense_of(t), dense, rtol=1e-6)
    kept = tb.to_tensor(m, float_dtype=None)
    assert kept.dtype == torch.float64 and kept.values().data_ptr() == ptr(m.data)
    as_half = tb.to_tensor(m, dtype=torch.float16)
    assert as_half.dtype == torch.float16


def test_int64_indices_shared(sp):
    m, _ = rand(sp, fmt="csc", index=np.int64)
    t = tb.to_tensor(m)
    assert t.ccol_indices().dtype == torch.int64
    assert t.ccol_indices().data_ptr() == ptr(m.indptr)
    assert t.row_indices().data_ptr() == ptr(m.indices)
    assert t.values().data_ptr() == ptr(m.data)


def test_mixed_index_dtypes_widen_the_int32_one(sp):
    m, dense = rand(sp, index=np.int64)
    m.indices = m.indices.astype(np.int32)
    t = tb.to_tensor(m)
    assert t.crow_indices().dtype == t.col_indices().dtype == torch.int64
    assert t.crow_indices().data_ptr() == ptr(m.indptr)
    assert t.col_indices().data_ptr() != ptr(m.indices)
    np.testing.assert_array_equal(dense_of(t), dense)
    with pytest.raises(ValueError, match=r"copy=False\): the CSR matrix's indices cannot be "
                       r"shared because its dtype int32 becomes int64 \(torch's CSR holds "
                       r"both index arrays in one dtype, int32 or int64\); pass copy=None"):
        tb.to_tensor(m, copy=False)


def test_coo_copies_indices_once_and_shares_values(sp):
    m, dense = rand(sp, fmt="coo")
    t = tb.to_tensor(m)
    assert t.indices().dtype == torch.int64 and t.indices().shape == (2, m.nnz)
    assert t._values().data_ptr() == ptr(m.data)
    assert t.is_coalesced()  # scipy built it sorted and unique
    np.testing.assert_array_equal(dense_of(t), dense)
    with pytest.raises(ValueError, match=r"copy=False\): the COO matrix's indices cannot be "
                       r"shared because torch's sparse_coo holds them as one \(ndim, nnz\) "
                       r"int64 tensor"):
        tb.to_tensor(m, copy=False)


def test_copy_true_copies_every_buffer(sp):
    m, dense = rand(sp)
    t = tb.to_tensor(m, copy=True)
    assert t.crow_indices().data_ptr() != ptr(m.indptr)
    assert t.col_indices().data_ptr() != ptr(m.indices)
    assert t.values().data_ptr() != ptr(m.data)
    np.testing.assert_array_equal(dense_of(t), dense)


def test_read_only_buffers_copied_unless_copy_false(sp):
    m, _ = rand(sp)
    for a in (m.indptr, m.indices, m.data):
        a.flags.writeable = False
    t = tb.to_tensor(m)
    assert t.values().data_ptr() != ptr(m.data)
    assert t.col_indices().data_ptr() != ptr(m.indices)
    t = tb.to_tensor(m, copy=False)
    assert t.values().data_ptr() == ptr(m.data)


def test_strided_and_swapped_buffers_are_copied(sp):
    m, dense = rand(sp)
    m.data = np.repeat(m.data, 2)[::2]  # strided view
    m.indices = m.indices.astype(">i4")  # byte-swapped
    t = tb.to_tensor(m)
    np.testing.assert_array_equal(dense_of(t), dense)
    with pytest.raises(ValueError, match=r"copy=False\): the CSR matrix's indices cannot be "
                       r"shared because it is byte-swapped"):
        tb.to_tensor(m, copy=False)
    m.indices = m.indices.astype(np.int32)
    with pytest.raises(ValueError, match=r"copy=False\): the CSR matrix's data cannot be "
                       r"shared because it is strided \(a step of 8 bytes between 4-byte items\)"):
        tb.to_tensor(m, copy=False)


def test_copy_false_names_the_float_policy(sp):
    m, _ = rand(sp, dtype=np.float64)
    with pytest.raises(ValueError, match=r"copy=False\): the CSR matrix's data cannot be shared "
                       r"because its dtype float64 becomes float32 \(the float policy; pass "
                       r"float_dtype=None to keep float64\)"):
        tb.to_tensor(m, copy=False)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32,
                                   np.uint32, np.int64, np.uint64, np.float32, np.float64,
                                   np.complex64, np.complex128])
def test_every_scipy_value_dtype(sp, dtype):
    dense = (np.arange(12).reshape(3, 4) % 3 == 0).astype(dtype)
    m = sp.csr_array(dense)
    t = tb.to_tensor(m, float_dtype=None)
    assert t.values().data_ptr() == ptr(m.data)
    # Compared part by part: torch's to_dense lacks uint16/32/64 kernels.
    assert t.dtype == getattr(torch, np.dtype(dtype).name)
    np.testing.assert_array_equal(t.values().numpy(), m.data)
    np.testing.assert_array_equal(t.col_indices().numpy(), m.indices)
    np.testing.assert_array_equal(t.crow_indices().numpy(), m.indptr)


# --- empties --------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0), (4, 6)])
def test_empty_and_zero_nnz(sp, fmt, shape):
    m = getattr(sp, f"{fmt}_array")(shape, dtype=np.float32)
    t = tb.to_tensor(m)
    assert t.layout == LAYOUT[fmt] and tuple(t.shape) == shape
    assert t._nnz() == 0
    np.testing.assert_array_equal(dense_of(t), np.zeros(shape, np.float32))
    back = tb.to_scipy(t)
    assert back.shape == shape and back.nnz == 0


# --- malformed matrices ------------------------------------------------------------

def csr(sp, data, indices, indptr, shape):
    m = sp.csr_array(shape, dtype=np.float64)
    m.data, m.indices, m.indptr = (np.asarray(data, np.float64), np.asarray(indices, np.int32),
                                   np.asarray(indptr, np.int32))
    return m


MALFORMED = [
    ([1.0], [0], [1, 1, 1], r"indptr starts at 1, but indptr\[0\] must be 0"),
    ([1.0, 2.0], [0, 1], [0, 2, 1], r"indptr decreases: indptr\[1\] = 2 > indptr\[2\] = 1"),
    ([1.0], [0], [0, 1, 3], r"indptr ends at 3 \(indptr\[-1\], the number of stored entries\), "
                            r"but only 1 indices are stored"),
    ([1.0], [0], [0, 1], r"indptr has 2 entries, but its 2 rows need 3"),
    ([1.0, 2.0], [0], [0, 1, 1], r"has 1 indices but 2 values \(data\)"),
    ([1.0], [7], [0, 1, 1], r"indices\[0\] = 7 is out of range for its 3 columns"),
    ([1.0], [-1], [0, 1, 1], r"indices\[0\] = -1 is out of range for its 3 columns"),
]


@pytest.mark.parametrize("data,indices,indptr,msg", MALFORMED)
def test_malformed_csr_raises_naming_the_check(sp, data, indices, indptr, msg):
    m = csr(sp, data, indices, indptr, (2, 3))
    for copy in (None, True, False):
        with pytest.raises(ValueError, match=r"to_tensor(\(copy=False\))?: the CSR matrix"):
            tb.to_tensor(m, copy=copy, float_dtype=None)
    with pytest.raises(ValueError, match=msg + r".*the matrix is malformed"):
        tb.to_tensor(m)


def test_malformed_coo_raises_naming_the_check(sp):
    m = sp.coo_array((np.ones(2), (np.array([0, 5]), np.array([0, 1]))), shape=(6, 2))
    m.coords = (np.array([0, 6]), m.coords[1])
    with pytest.raises(ValueError, match=r"the COO matrix's row\[1\] = 6 is out of range for "
                       r"dimension 0 of extent 6"):
        tb.to_tensor(m)
    m.coords = (np.array([0, 1, 2]), m.coords[1])
    with pytest.raises(ValueError, match=r"the COO matrix's row has 3 entries but data has 2"):
        tb.to_tensor(m)


def test_float_indices_raise_type_error(sp):
    m = csr(sp, [1.0], [0], [0, 1, 1], (2, 3))
    m.indices = m.indices.astype(np.float64)
    with pytest.raises(TypeError, match=r"the CSR matrix's indices are float64, but indices "
                       r"must be integers"):
        tb.to_tensor(m)


def test_other_integer_index_types_convert(sp):
    m = csr(sp, [1.0, 2.0], [2, 0], [0, 1, 2], (2, 3))
    m.indices = m.indices.astype(np.int16)
    m.indptr = m.indptr.astype(np.uint8)
    t = tb.to_tensor(m)
    assert t.col_indices().dtype == torch.int64
    np.testing.assert_array_equal(dense_of(t), [[0, 0, 1], [2, 0, 0]])


# --- canonical form ----------------------------------------------------------------

def test_non_canonical_csr_is_canonicalised_in_a_copy(sp):
    m = csr(sp, [1.0, 2.0, 3.0, 4.0], [2, 0, 2, 1], [0, 3, 4], (2, 3))
    assert not m.has_canonical_format
    want = m.toarray()  # duplicates summed
    t = tb.to_tensor(m, float_dtype=None)
    np.testing.assert_array_equal(dense_of(t), want)
    assert t.col_indices().tolist() == [0, 2, 1]  # sorted, unique
    assert t.crow_indices().tolist() == [0, 2, 3]
    assert t.values().tolist() == [2.0, 4.0, 4.0]
    assert t.crow_indices().data_ptr() != ptr(m.indptr)
    assert m.indices.tolist() == [2, 0, 2, 1]  # the input is untouched
    with pytest.raises(ValueError, match=r"copy=False\): the CSR matrix is not in canonical "
                       r"form \(within a row its indices are unsorted or repeat; torch's CSR "
                       r"requires them sorted and unique\).*m.sum_duplicates\(\)"):
        tb.to_tensor(m, copy=False, float_dtype=None)
    m.sum_duplicates()
    t = tb.to_tensor(m, copy=False, float_dtype=None)
    assert t.values().data_ptr() == ptr(m.data)


def test_non_canonical_csc_and_stale_flag(sp):
    m = sp.csc_array((np.array([1, 2, 3], np.int64), np.array([1, 0, 1]), np.array([0, 3])),
                     shape=(2, 1))
    t = tb.to_tensor(m)
    np.testing.assert_array_equal(dense_of(t), m.toarray())
    assert t.row_indices().tolist() == [0, 1]
    # SciPy's flag is not trusted: unsorted indices written after it was set.
    m2, dense = rand(sp)
    assert m2.has_canonical_format
    row = slice(m2.indptr[0], m2.indptr[1])
    if m2.indptr[1] - m2.indptr[0] >= 2:
        m2.indices[row] = m2.indices[row][::-1].copy()
        m2.data[row] = m2.data[row][::-1].copy()
        t = tb.to_tensor(m2)
        np.testing.assert_array_equal(dense_of(t), dense)
        assert t.col_indices().data_ptr() != ptr(m2.indices)


def test_uncoalesced_coo_is_not_marked_coalesced(sp):
    m = sp.coo_array((np.array([1.0, 2.0, 3.0]), (np.array([1, 0, 1]), np.array([0, 0, 0]))),
                     shape=(2, 1))
    t = tb.to_tensor(m)
    assert not t.is_coalesced()
    np.testing.assert_array_equal(dense_of(t), m.toarray())
    np.testing.assert_array_equal(dense_of(t.coalesce()), [[2.0], [4.0]])


def test_nd_coo(sp):
    if not hasattr(sp.coo_array((2, 2)), "coords"):
        pytest.skip("this SciPy has no n-D COO")
    dense = np.zeros((3, 4, 5), np.float32)
    dense[0, 1, 2], dense[2, 3, 4] = 1, 2
    m = sp.coo_array(dense)
    t = tb.to_tensor(m)
    assert t.shape == (3, 4, 5) and t.is_coalesced()
    np.testing.assert_array_equal(dense_of(t), dense)
    back = tb.to_scipy(t)
    np.testing.assert_array_equal(back.toarray(), dense)


# --- device, grad ---------------------------------------------------------------------

@pytest.mark.parametrize("device", cpu_and_cuda())
def test_device_and_requires_grad(sp, device):
    m, dense = rand(sp, dtype=np.float64)
    t = tb.to_tensor(m, device=device, requires_grad=True)
    assert t.device.type == device and t.requires_grad and t.is_leaf
    np.testing.assert_allclose(t.detach().to_dense().cpu().numpy(), dense, rtol=1e-6)


def test_copy_false_with_a_device_or_pin_raises(sp):
    m, _ = rand(sp)
    with pytest.raises(ValueError, match=r"copy=False\): the CSR matrix's buffers cannot be "
                       r"shared because the result goes to cuda"):
        tb.to_tensor(m, device="cuda", copy=False)
    with pytest.raises(ValueError, match=r"pin_memory=True needs a copy"):
        tb.to_tensor(m, pin_memory=True, copy=False)


def test_requires_grad_on_integers_raises(sp):
    m, _ = rand(sp, dtype=np.int32)
    with pytest.raises(ValueError, match=r"only floating and complex tensors can require"):
        tb.to_tensor(m, requires_grad=True)


# --- to_scipy ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_to_scipy_shares_and_keeps_the_layout(sp, fmt):
    dense = torch.tensor([[0, 1.5, 0], [2.0, 0, 3.0]])
    t = {"csr": dense.to_sparse_csr, "csc": dense.to_sparse_csc, "coo": dense.to_sparse}[fmt]()
    s = tb.to_scipy(t)
    assert s.format == fmt and isinstance(s, sp.sparray)
    np.testing.assert_array_equal(s.toarray(), dense.numpy())
    vals = t.values() if fmt != "coo" else t._values()
    assert ptr(s.data) == vals.data_ptr()
    if fmt == "csr":
        assert ptr(s.indptr) == t.crow_indices().data_ptr()
        assert ptr(s.indices) == t.col_indices().data_ptr()
    elif fmt == "csc":
        assert ptr(s.indptr) == t.ccol_indices().data_ptr()
        assert ptr(s.indices) == t.row_indices().data_ptr()
    else:
        assert ptr(s.coords[0]) == t._indices().data_ptr()
        assert s.has_canonical_format
    s.data[0] = 9.0  # one memory
    assert vals[0].item() == 9.0


def test_to_scipy_keeps_int32_indices(sp):
    m, _ = rand(sp, index=np.int32)
    s = tb.to_scipy(tb.to_tensor(m))
    assert s.indices.dtype == np.int32 and ptr(s.indices) == ptr(m.indices)


def test_to_scipy_uncoalesced_coo_keeps_duplicates(sp):
    t = torch.sparse_coo_tensor(torch.tensor([[1, 0, 1], [0, 0, 0]]),
                                torch.tensor([1.0, 2.0, 3.0]), (2, 1))
    s = tb.to_scipy(t)
    assert s.nnz == 3 and not s.has_canonical_format
    np.testing.assert_array_equal(s.toarray(), [[2.0], [4.0]])


def test_to_scipy_of_grad_and_device_tensors(sp):
    t = torch.tensor([[0, 1.0], [2.0, 0]]).to_sparse_csr().requires_grad_(True)
    s = tb.to_scipy(t)
    np.testing.assert_array_equal(s.toarray(), [[0, 1.0], [2.0, 0]])
    if torch.cuda.is_available():
        np.testing.assert_array_equal(tb.to_scipy(t.detach().cuda()).toarray(), s.toarray())


def test_to_scipy_errors(sp):
    with pytest.raises(TypeError, match=r"the tensor is dense \(torch.strided\).*"
                       r"torchbridge.to_numpy\(tensor\)"):
        tb.to_scipy(torch.ones(2, 2))
    with pytest.raises(TypeError, match=r"scipy.sparse has no bfloat16 values; convert them "
                       r"first, e.g. tensor.to\(torch.float32\)"):
        tb.to_scipy(torch.eye(2, dtype=torch.bfloat16).to_sparse())
    with pytest.raises(TypeError, match=r"scipy.sparse has no float16"):
        tb.to_scipy(torch.eye(2, dtype=torch.float16).to_sparse_csr())
    with pytest.raises(TypeError, match=r"got list, not a torch sparse tensor"):
        tb.to_scipy([1, 2])
    with pytest.raises(ValueError, match=r"the tensor is hybrid"):
        tb.to_scipy(torch.ones(2, 2).to_sparse(1))
    with pytest.raises(TypeError, match=r"layout torch.sparse_bsr"):
        tb.to_scipy(torch.ones(2, 2).to_sparse_bsr((1, 1)))


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.complex128, np.bool_])
def test_round_trip(sp, fmt, dtype):
    m, dense = rand(sp, fmt=fmt, dtype=dtype)
    back = tb.to_scipy(tb.to_tensor(m, float_dtype=None))
    assert back.format == fmt and back.dtype == m.dtype
    np.testing.assert_array_equal(back.toarray(), dense)
    assert ptr(back.data) == ptr(m.data)  # shared both ways


# --- to_numpy ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "lil"])
def test_to_numpy_of_scipy_densifies(sp, fmt):
    m, dense = rand(sp, fmt=fmt, dtype=np.float64)
    a = tb.to_numpy(m)
    assert a.dtype == np.float64 and a.dtype != object  # no float policy
    np.testing.assert_array_equal(a, dense)
    with pytest.raises(ValueError, match=r"to_numpy\(copy=False\): a scipy.sparse matrix has "
                       r"no dense memory to share"):
        tb.to_numpy(m, copy=False)


def test_to_numpy_size_error_names_the_size_and_to_scipy():
    t = torch.sparse_coo_tensor(torch.tensor([[0], [0]]), torch.tensor([1.0]),
                                (10**7, 10**7))
    with pytest.raises(torch.OutOfMemoryError, match=r"to_numpy: the dense form of this sparse "
                       r"tensor of shape \(10000000, 10000000\) and dtype float32 needs 400.0 TB "
                       r"\(400000000000000 bytes\), more than this machine's .* of memory; keep "
                       r"it sparse: torchbridge.to_scipy\(tensor\)"):
        tb.to_numpy(t)
    # 2**62 float64 elements: the byte count itself overflows 64 bits.
    with pytest.raises(torch.OutOfMemoryError, match=r"to_host: .* needs more than 18 EB"):
        tb.to_host(torch.sparse_coo_tensor(torch.zeros(3, 0, dtype=torch.long),
                                           torch.ones(0, dtype=torch.float64),
                                           (2**30, 2**30, 4)))


def test_to_numpy_of_a_small_sparse_tensor_still_densifies():
    t = torch.eye(3).to_sparse_csr()
    np.testing.assert_array_equal(tb.to_numpy(t), np.eye(3, dtype=np.float32))


# --- lifetimes and threads -------------------------------------------------------------

def test_tensor_outlives_the_scipy_object(sp):
    m, dense = rand(sp)
    t = tb.to_tensor(m)
    assert t.values().data_ptr() == ptr(m.data)
    del m
    collect()
    np.testing.assert_array_equal(dense_of(t), dense)


def test_scipy_array_outlives_the_tensor(sp):
    t = torch.tensor([[0, 1.0], [2.0, 0]]).to_sparse_csr()
    s = tb.to_scipy(t)
    del t
    collect()
    np.testing.assert_array_equal(s.toarray(), [[0, 1.0], [2.0, 0]])


def test_threads_rebinding_and_writing_the_arrays_do_not_crash():
    # In a subprocess: a crash must fail the test, not the session.
    code = r"""
import threading, warnings, numpy as np, scipy.sparse as sp, torch, torchbridge as tb
warnings.simplefilter("ignore")
rng = np.random.default_rng(0)
m = sp.random_array((20000, 500), density=0.05, format="csr", dtype=np.float32, rng=rng)
orig = (m.indptr.copy(), m.indices.copy(), m.data.copy())
stop = False
def mutate():
    i = 0
    while not stop:
        i += 1
        k = i % 5
        if k == 4:  # in place, inside the buffer being checked
            j = int(rng.integers(1, m.indptr.size - 1))
            m.indptr[j] += int(rng.integers(-3, 4))
        elif k == 0:
            m.indices = rng.integers(-5, 600, m.indices.size).astype(np.int32)
        elif k == 1:
            m.indptr = orig[0][::-1].copy()
        elif k == 2:
            m.indices[rng.integers(0, m.indices.size, 50)] = 10**6
        else:
            m.indptr, m.indices, m.data = (a.copy() for a in orig)
th = threading.Thread(target=mutate)
th.start()
ok = bad = 0
for _ in range(150):
    try:
        tb.to_tensor(m)  # shared: only the conversion itself must survive
    except ValueError:
        pass
    try:
        t = tb.to_tensor(m, copy=True)
    except ValueError:
        bad += 1
        continue
    # A copied, validated result holds only valid indices: torch can use it.
    t.to_dense().sum()
    ok += 1
stop = True
th.join()
print("done", ok, bad)
"""
    optional("scipy.sparse")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.startswith("done")


def test_import_does_not_import_scipy():
    code = "import sys, torchbridge; print('scipy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]


def test_threads_converting_one_matrix_concurrently(sp):
    m, dense = rand(sp, shape=(400, 300), density=0.1)
    errors = []

    def work():
        try:
            for _ in range(20):
                np.testing.assert_array_equal(dense_of(tb.to_tensor(m)), dense)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        threads = [threading.Thread(target=work) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert not errors


def test_no_reference_leaks_on_success_or_failure(sp):
    m, _ = rand(sp)
    bad = csr(sp, [1.0], [7], [0, 1, 1], (2, 3))
    arrays = (m.data, m.indices, m.indptr, bad.data, bad.indices, bad.indptr)
    before = [sys.getrefcount(a) for a in arrays]
    for _ in range(200):
        t = tb.to_tensor(m)
        del t
        with pytest.raises(ValueError):
            tb.to_tensor(bad)
        with pytest.raises(ValueError):
            tb.to_tensor(m, copy=False, dtype=torch.float64)
    collect()
    assert [sys.getrefcount(a) for a in arrays] == before


def test_bench_sparse_quick_run(tmp_path):
    # The benchmark still runs end to end (timings are never asserted).
    import json
    import os

    optional("scipy.sparse")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run(
        [sys.executable, os.path.join(root, "benchmarks", "bench_sparse.py"), "--quick",
         "--out", str(tmp_path)], cwd=root, env=env, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "sparse.json").read_text())
    assert [r["dtype"] for r in res["rows"]] == ["float64", "float32"]
    for r in res["rows"]:
        assert r["ratio_to_best_peer"] > 0 and r["ratio_to_checked"] > 0
        assert {c["role"] for c in r["candidates"]} == {"ours", "peer", "ref"}
    assert res["rows"][1]["shared"] == {"indptr": True, "indices": True, "data": True}
