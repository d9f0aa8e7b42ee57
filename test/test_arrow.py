"""Arrow producers (pyarrow Array/ChunkedArray/Table/RecordBatch, polars, any
__arrow_c_array__ / __arrow_c_stream__ object) through the columns core."""

import ctypes
import gc
import subprocess
import sys

import numpy as np
import pytest
import torch

import torchbridge as tb
from conftest import optional


@pytest.fixture(scope="module")
def pa():
    return optional("pyarrow")


def data_address(arr):
    return arr.buffers()[1].address + arr.offset * arr.type.bit_width // 8


PRIMITIVES = [
    ("int8", torch.int8), ("int16", torch.int16), ("int32", torch.int32),
    ("int64", torch.int64), ("uint8", torch.uint8), ("uint16", torch.uint16),
    ("uint32", torch.uint32), ("uint64", torch.uint64), ("float16", torch.float16),
    ("float32", torch.float32), ("float64", torch.float64),
]


@pytest.mark.parametrize("name,dtype", PRIMITIVES)
def test_every_primitive_type_shares_with_copy_false_and_copies_by_default(pa, name, dtype):
    values = np.arange(7).astype(name)
    arr = pa.array(values)
    t = tb.to_tensor(arr, copy=False, float_dtype=None)
    assert t.dtype == dtype
    assert t.data_ptr() == data_address(arr)
    assert np.array_equal(t.numpy(), values)
    c = tb.to_tensor(arr, float_dtype=None)  # Arrow buffers are read-only: one copy
    assert c.data_ptr() != data_address(arr) and torch.equal(c, t)
    assert tb.to_tensor(arr, copy=True, float_dtype=None).data_ptr() != data_address(arr)


def test_float_policy_and_its_copy_false_error(pa):
    arr = pa.array([0.5, 1.5, 2.5])
    t = tb.to_tensor(arr)
    assert t.dtype == torch.float32 and torch.equal(t, torch.tensor([0.5, 1.5, 2.5]))
    with pytest.raises(ValueError, match="float64 becomes float32 .the float policy"):
        tb.to_tensor(arr, copy=False)


def test_sliced_arrays_share_from_their_offset(pa):
    arr = pa.array(np.arange(10, dtype=np.int64)).slice(3, 4)
    t = tb.to_tensor(arr, copy=False)
    assert t.tolist() == [3, 4, 5, 6] and t.data_ptr() == data_address(arr)


def test_nulls_become_nan_for_floating_targets(pa):
    t = tb.to_tensor(pa.array([1.0, None, 3.0]))
    assert t.dtype == torch.float32 and t[0] == 1 and torch.isnan(t[1]) and t[2] == 3
    t = tb.to_tensor(pa.array([1, None, 3, None]), dtype=torch.float64)
    assert t.dtype == torch.float64 and torch.isnan(t[[1, 3]]).all() and t[2] == 3


def test_nulls_in_integer_columns_raise_naming_the_count_and_the_fix(pa):
    with pytest.raises(ValueError, match=r"the Int64Array has 2 missing values \(of 4\), "
                       r"and the target dtype int64 has no NaN.*dtype=torch.float32"):
        tb.to_tensor(pa.array([1, None, 3, None]))
    table = pa.table({"ok": [1, 2], "qty": pa.array([1, None], pa.int32())})
    with pytest.raises(ValueError, match=r"column 'qty' of the Table has 1 missing value "
                       r"\(of 2\).*fill_null"):
        tb.to_tensor(table)


def test_copy_false_with_nulls_says_nan_needs_a_copy(pa):
    with pytest.raises(ValueError, match=r"copy=False.*1 of its values are missing, and "
                       r"writing NaN there is a copy"):
        tb.to_tensor(pa.array([1.0, None], pa.float32()), copy=False)


@pytest.mark.parametrize("start", [0, 1, 3, 7, 8, 9])
def test_bool_bitmaps_unpack_at_any_offset(pa, start):
    values = [bool((i * 7) % 3) for i in range(40)]
    arr = pa.array(values).slice(start, 25)
    t = tb.to_tensor(arr)
    assert t.dtype == torch.bool and t.tolist() == values[start:start + 25]
    with pytest.raises(ValueError, match="booleans as bits"):
        tb.to_tensor(arr, copy=False)


def test_bools_with_nulls_and_offsets(pa):
    arr = pa.array([True, None, False, True, None, True, False, None, True, True]).slice(1)
    t = tb.to_tensor(arr, dtype=torch.float32)
    expect = [np.nan, 0, 1, np.nan, 1, 0, np.nan, 1, 1]
    np.testing.assert_array_equal(t.numpy(), np.array(expect, np.float32))


def test_chunked_arrays_gather_chunk_by_chunk(pa):
    ch = pa.chunked_array([[1, 2], [], [3, None, 5]], pa.int16())
    t = tb.to_tensor(ch, dtype=torch.float32)
    np.testing.assert_array_equal(t.numpy(), np.array([1, 2, 3, np.nan, 5], np.float32))
    ch = pa.chunked_array([[1, 2], [3]])
    assert tb.to_tensor(ch).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="in 2 chunks"):
        tb.to_tensor(ch, copy=False)
    one = pa.chunked_array([np.arange(4, dtype=np.int64)])
    assert tb.to_tensor(one, copy=False).data_ptr() == data_address(one.chunk(0))


def test_dictionary_arrays_give_their_indices(pa):
    arr = pa.array(["b", "a", "b", None]).dictionary_encode()
    with pytest.raises(ValueError, match="1 missing value"):
        tb.to_tensor(arr)
    t = tb.to_tensor(arr.slice(0, 3))
    assert t.dtype == torch.int32 and t.tolist() == arr.indices.to_pylist()[:3]


@pytest.mark.parametrize("make,what", [
    (lambda pa: pa.array(["x", "y"]), "strings"),
    (lambda pa: pa.array([b"x"]), "binary values"),
    (lambda pa: pa.array([[1], [2, 3]]), "lists"),
    (lambda pa: pa.array([1, 2], pa.timestamp("s")), "dates or times"),
    (lambda pa: pa.array([1, 2], pa.date32()), "dates or times"),
    (lambda pa: pa.array([None, None]), "only nulls"),
])
def test_types_without_a_tensor_form_raise_type_error_with_the_fix(pa, make, what):
    with pytest.raises(TypeError, match=what + r".*\(Arrow format .*no tensor dtype holds; "):
        tb.to_tensor(make(pa))


def test_decimal_says_cast_to_float64(pa):
    import decimal
    with pytest.raises(TypeError, match=r"decimals.*arr.cast\(pa.float64\(\)\)"):
        tb.to_tensor(pa.array([decimal.Decimal("1.5")]))


def test_tables_and_record_batches_are_2d_in_column_order(pa):
    table = pa.table({"a": pa.array([1, 2, 3], pa.int32()), "b": [0.5, 1.5, None],
                      "c": [True, False, True]})
    expect = np.stack([np.array([1, 2, 3.]), np.array([0.5, 1.5, np.nan]),
                       np.array([1, 0, 1.])], axis=1)
    for obj in (table, table.to_batches()[0], pa.concat_tables([table.slice(0, 1),
                                                                table.slice(1)])):
        t = tb.to_tensor(obj, float_dtype=None)
        # Column-major: each column one run (as pandas' to_numpy gives frames).
        assert t.dtype == torch.float64 and t.shape == (3, 3) and t.stride() == (1, 3)
        np.testing.assert_array_equal(t.numpy(), expect)
    with pytest.raises(ValueError, match=r"3 columns are separate buffers"):
        tb.to_tensor(table, copy=False)
    with pytest.raises(TypeError, match="column 's' of the Table holds strings"):
        tb.to_tensor(table.append_column("s", pa.array(["x", "y", "z"])))


def test_numpy_result_type_decides_the_common_dtype(pa):
    table = pa.table({"i": pa.array([1], pa.int64()), "u": pa.array([2], pa.uint64())})
    assert tb.to_tensor(table, float_dtype=None).dtype == torch.float64
    table = pa.table({"i": pa.array([1], pa.int16()), "h": pa.array([2], pa.float16())})
    assert tb.to_tensor(table).dtype == torch.float32
    table = pa.table({"u": pa.array([1], pa.uint8()), "i": pa.array([-2], pa.int8())})
    t = tb.to_tensor(table)
    assert t.dtype == torch.int16 and t.tolist() == [[1, -2]]


def test_one_column_table_shares_as_n_by_1(pa):
    table = pa.table({"x": np.arange(5, dtype=np.int64)})
    t = tb.to_tensor(table, copy=False)
    assert t.shape == (5, 1) and t.data_ptr() == data_address(table.column(0).chunk(0))


def test_empty_arrays_and_tables(pa):
    assert tb.to_tensor(pa.array([], pa.int32())).shape == (0,)
    t = tb.to_tensor(pa.table({"a": pa.array([], pa.int8()), "b": pa.array([], pa.float32())}))
    assert t.shape == (0, 2) and t.dtype == torch.float32
    assert tb.to_tensor(pa.table({})).shape == (0, 0)


def test_struct_arrays_with_null_rows_say_flatten(pa):
    arr = pa.array([{"x": 1, "y": 2.0}, None])
    with pytest.raises(ValueError, match=r"1 null rows; flatten it first"):
        tb.to_tensor(arr)
    assert tb.to_tensor(arr.slice(0, 1), float_dtype=None).tolist() == [[1.0, 2.0]]


def test_the_producer_can_die_while_the_tensor_lives(pa):
    arr = pa.array(np.arange(1000, dtype=np.float32))
    t = tb.to_tensor(arr, copy=False)
    del arr
    gc.collect()
    assert torch.equal(t, torch.arange(1000, dtype=torch.float32))


def test_requires_grad_and_dtype(pa):
    t = tb.to_tensor(pa.array([1, 2]), dtype=torch.float32, requires_grad=True)
    assert t.requires_grad and t.is_leaf and t.tolist() == [1.0, 2.0]


# ---- a ctypes producer that counts its release calls -----------------------

class _ArrowArray(ctypes.Structure):
    pass


_RELEASE = ctypes.CFUNCTYPE(None, ctypes.POINTER(_ArrowArray))
_ArrowArray._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)), ("children", ctypes.c_void_p),
    ("dictionary", ctypes.c_void_p), ("release", _RELEASE), ("private_data", ctypes.c_void_p),
]
_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class CountingProducer:
    """__arrow_c_array__ over a NumPy buffer; counts release() calls."""

    def __init__(self, pa, values, validity=None, null_count=0):
        self.pa = pa
        self.values = values
        self.validity = validity
        self.null_count = null_count
        self.releases = 0
        self._keep = []

    def __arrow_c_array__(self, requested_schema=None):
        schema = self.pa.from_numpy_dtype(self.values.dtype).__arrow_c_schema__()
        bufs = (ctypes.c_void_p * 2)(
            None if self.validity is None else self.validity.ctypes.data,
            self.values.ctypes.data)

        def release(p):
            self.releases += 1
            p.contents.release = _RELEASE()

        cb = _RELEASE(release)
        arr = _ArrowArray(len(self.values), self.null_count, 0, 2, 0, bufs, None, None, cb, None)
        self._keep += [bufs, cb, arr]
        return schema, _capsule_new(ctypes.addressof(arr), b"arrow_array", None)


def test_release_runs_once_when_the_sharing_tensor_dies(pa):
    p = CountingProducer(pa, np.arange(6, dtype=np.int64))
    t = tb.to_tensor(p, copy=False)
    assert t.data_ptr() == p.values.ctypes.data and p.releases == 0
    del t
    gc.collect()
    assert p.releases == 1
    t = tb.to_tensor(p)  # a copy: released before the call returns
    assert p.releases == 2 and t.tolist() == list(range(6))
    gc.collect()
    assert p.releases == 2


def test_release_runs_once_on_errors(pa):
    validity = np.array([0b101], np.uint8)
    p = CountingProducer(pa, np.arange(3, dtype=np.int64), validity, null_count=1)
    with pytest.raises(ValueError, match="1 missing value"):
        tb.to_tensor(p)
    assert p.releases == 1
    t = tb.to_tensor(p, dtype=torch.float64)
    assert p.releases == 2 and torch.isnan(t[1]) and t[2] == 2
    bad = CountingProducer(pa, np.arange(3, dtype=np.int64), None, null_count=7)
    with pytest.raises(ValueError, match="null_count 7 for length 3"):
        tb.to_tensor(bad)
    assert bad.releases == 1


# ---- to_numpy ----------------------------------------------------------------

def test_to_numpy_shares_read_only_and_never_gives_object_arrays(pa):
    arr = pa.array(np.arange(5, dtype=np.float64))
    a = tb.to_numpy(arr)
    assert a.dtype == np.float64 and not a.flags.writeable
    assert a.ctypes.data == data_address(arr)
    c = tb.to_numpy(arr, copy=True)
    assert c.flags.writeable and c.ctypes.data != data_address(arr)
    table = pa.table({"a": [1, 2], "b": [0.5, None]})
    np.testing.assert_array_equal(tb.to_numpy(table), np.array([[1, 0.5], [2, np.nan]]))
    with pytest.raises(ValueError, match="1 missing value"):
        tb.to_numpy(pa.array([1, None]))
    np.testing.assert_array_equal(tb.to_numpy(pa.array([1, None]), dtype=np.float32),
                                  np.array([1, np.nan], np.float32))
    with pytest.raises(TypeError, match="holds strings"):
        tb.to_numpy(pa.array(["x"]))
    with pytest.raises(ValueError, match="copy=False.*separate buffers"):
        tb.to_numpy(table, copy=False)


# ---- polars ------------------------------------------------------------------

def test_polars_series_and_frames(pa):
    pl = optional("polars")
    s = pl.Series("x", [1, 2, None], dtype=pl.Int32)
    with pytest.raises(ValueError, match="1 missing value"):
        tb.to_tensor(s)
    np.testing.assert_array_equal(tb.to_tensor(s, dtype=torch.float64).numpy(),
                                  np.array([1, 2, np.nan]))
    df = pl.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "c": [True, False, True]})
    t = tb.to_tensor(df)
    assert t.shape == (3, 3) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), df.to_numpy().astype(np.float32))
    with pytest.raises(TypeError, match="column 's' of the DataFrame holds strings"):
        tb.to_tensor(df.with_columns(s=pl.lit("x")))
    np.testing.assert_array_equal(tb.to_numpy(pl.Series([1.5, 2.5])), np.array([1.5, 2.5]))


# ---- import time ---------------------------------------------------------------

def test_plain_use_imports_no_table_library():
    code = (
        "import sys, numpy as np, torchbridge as tb\n"
        "tb.to_tensor(np.zeros(3)); tb.to_numpy(np.zeros(3)); tb.to_tensor([1.0, 2.0])\n"
        "bad = [m for m in ('pandas', 'pyarrow', 'polars') if m in sys.modules]\n"
        "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
