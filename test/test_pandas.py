"""pandas Series, Index and DataFrame through torchbridge/_pandas.py and the
columns core."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import torchbridge as tb
from conftest import optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


@pytest.fixture(scope="module")
def pd():
    return optional("pandas")


def test_float_frame_is_column_major_in_the_policy_dtype(pd):
    # Column-major, as df.to_numpy() gives it (pandas blocks hold columns).
    values = np.random.default_rng(0).standard_normal((1000, 4))
    df = pd.DataFrame(values, columns=list("abcd"))
    t = tb.to_tensor(df)
    assert t.dtype == torch.float32 and t.shape == (1000, 4) and t.stride() == (1, 1000)
    assert t.stride() == tuple(s // 8 for s in df.to_numpy().strides)
    np.testing.assert_array_equal(t.numpy(), values.astype(np.float32))
    t64 = tb.to_tensor(df, float_dtype=None)
    np.testing.assert_array_equal(t64.numpy(), values)


def test_copy_false_shares_a_single_block_read_only_and_default_copies(pd):
    df = pd.DataFrame(np.arange(12.0).reshape(4, 3))
    block = df._mgr.blocks[0].values  # (3, 4): pandas keeps columns as rows
    t = tb.to_tensor(df, copy=False, float_dtype=None)
    assert t.data_ptr() == block.ctypes.data and t.stride() == (1, 4)
    np.testing.assert_array_equal(t.numpy(), df.to_numpy())
    c = tb.to_tensor(df, float_dtype=None)  # copy-on-write memory: copied once
    assert c.data_ptr() != block.ctypes.data and c.stride() == (1, 4)
    with pytest.raises(ValueError, match="float64 becomes float32"):
        tb.to_tensor(df, copy=False)


def test_series_and_index_are_1d(pd):
    s = pd.Series(np.arange(5, dtype=np.int32), name="n")
    t = tb.to_tensor(s, copy=False)
    assert t.dtype == torch.int32 and t.tolist() == list(range(5))
    assert t.data_ptr() == s.to_numpy().ctypes.data
    assert tb.to_tensor(s).data_ptr() != t.data_ptr()  # read-only: one copy
    assert tb.to_tensor(pd.RangeIndex(2, 8, 2)).tolist() == [2, 4, 6]
    t = tb.to_tensor(pd.Index([0.5, 1.5]))
    assert t.dtype == torch.float32 and t.tolist() == [0.5, 1.5]
    with pytest.raises(TypeError, match="the Index holds text"):
        tb.to_tensor(pd.Index(["a", "b"]))


@pytest.mark.parametrize("dtype,value", [("Int64", 3), ("Int8", 3), ("UInt32", 3),
                                         ("Float64", 2.5), ("boolean", True),
                                         ("int64[pyarrow]", 3), ("double[pyarrow]", 2.5)])
def test_nullable_columns_nan_or_value_error(pd, dtype, value):
    s = pd.Series(pd.array([value, None, value], dtype=dtype), name="q")
    t = tb.to_tensor(s, dtype=torch.float64)
    assert t[0] == float(value) and torch.isnan(t[1]) and t[2] == float(value)
    if "Float" in dtype or "double" in dtype:
        t = tb.to_tensor(s)  # already floating: NaN without dtype=
        assert torch.isnan(t[1])
    else:
        with pytest.raises(ValueError, match=r"the Series has 1 missing value \(of 3\).*"
                           r"dtype=torch.float32.*fillna"):
            tb.to_tensor(s)
    df = pd.DataFrame({"ok": [1, 2, 3], "q": s})
    if "Float" not in dtype and "double" not in dtype:
        with pytest.raises(ValueError, match=r"column 'q' of the DataFrame has 1 missing"):
            tb.to_tensor(df)
    t = tb.to_tensor(df, dtype=torch.float32)
    assert torch.isnan(t[1, 1]) and t[1, 0] == 2


def test_nullable_columns_without_missing_values_convert_as_integers(pd):
    s = pd.Series(pd.array([1, 2, 3], dtype="Int64"))
    t = tb.to_tensor(s)
    assert t.dtype == torch.int64 and t.tolist() == [1, 2, 3]
    b = pd.Series(pd.array([True, False], dtype="boolean"))
    assert tb.to_tensor(b).tolist() == [True, False]


def test_categoricals_give_int64_codes(pd):
    s = pd.Series(pd.Categorical(["b", "a", None, "b"]), name="cat")
    t = tb.to_tensor(s)
    assert t.dtype == torch.int64 and t.tolist() == [1, 0, -1, 1]
    df = pd.DataFrame({"x": [0.5, 1.5, 2.5, 3.5], "cat": s})
    np.testing.assert_array_equal(tb.to_tensor(df, float_dtype=None)[:, 1].numpy(),
                                  [1, 0, -1, 1])


@pytest.mark.parametrize("col,what,fix", [
    (["a", "b"], "text", r"df\['s'\].astype\('category'\).cat.codes"),
    ([object(), 1], "Python objects", r"df\['s'\].astype\('float32'\)"),
    (["2020-01-01", "2021-01-01"], "dates or times", r"df\['s'\].astype\('int64'\)"),
])
def test_unconvertible_columns_name_the_column_and_the_fix(pd, col, what, fix):
    df = pd.DataFrame({"x": [1, 2], "s": col})
    if what == "dates or times":
        df["s"] = pd.to_datetime(df["s"])
    with pytest.raises(TypeError, match=rf"column 's' of the DataFrame holds {what} \(dtype "
                       rf".*{fix}.* or leave it out \(df.drop\(columns=\['s'\]\)\)"):
        tb.to_tensor(df)
    with pytest.raises(TypeError, match="column 's'"):
        tb.to_numpy(df)


def test_mixed_dtype_frames_follow_numpy_result_type(pd):
    df = pd.DataFrame({"i8": np.array([1, -2], np.int8), "u8": np.array([3, 4], np.uint8)})
    t = tb.to_tensor(df)
    assert t.dtype == torch.int16 and t.tolist() == [[1, 3], [-2, 4]]
    df = pd.DataFrame({"i": np.array([1, 2], np.int64), "f": np.array([0.5, 1.5], np.float32),
                       "b": [True, False]})
    t = tb.to_tensor(df, float_dtype=None)
    assert t.dtype == torch.float64  # int64 with float32 is float64 in NumPy
    np.testing.assert_array_equal(t.numpy(), df.to_numpy(dtype=np.float64))
    with pytest.raises(ValueError, match="3 columns are separate buffers"):
        tb.to_tensor(df, copy=False)


def test_column_order_survives_interleaved_blocks(pd):
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4], "c": [5.0, 6.0], "d": [7, 8]})
    assert tb.to_tensor(df, float_dtype=None).tolist() == [[1, 3, 5, 7], [2, 4, 6, 8]]
    sub = df[["d", "a"]]
    assert tb.to_tensor(sub, float_dtype=None).tolist() == [[7, 1], [8, 2]]


def test_sliced_frames_and_series(pd):
    df = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10)})
    np.testing.assert_array_equal(tb.to_tensor(df.iloc[2:8:2], float_dtype=None).numpy(),
                                  df.iloc[2:8:2].to_numpy())
    s = pd.Series(pd.array(range(10), dtype="Int64"))[1::3]
    assert tb.to_tensor(s).tolist() == [1, 4, 7]


def test_empty_frames(pd):
    assert tb.to_tensor(pd.DataFrame()).shape == (0, 0)
    t = tb.to_tensor(pd.DataFrame(index=range(3)))
    assert t.shape == (3, 0) and t.dtype == torch.float32
    t = tb.to_tensor(pd.DataFrame({"a": np.array([], np.int32)}))
    assert t.shape == (0, 1) and t.dtype == torch.int32


def test_large_frame_with_nulls_matches_pandas(pd):
    rng = np.random.default_rng(1)
    n = 200_000
    df = pd.DataFrame({f"c{i}": rng.standard_normal(n) for i in range(6)})
    df["n"] = pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 9, n)),
                       dtype="Int64")
    t = tb.to_tensor(df, dtype=torch.float64)
    np.testing.assert_array_equal(t.numpy(), df.to_numpy(dtype=np.float64, na_value=np.nan))


def test_the_frame_can_die_while_the_tensor_lives(pd):
    import gc
    df = pd.DataFrame(np.arange(6.0).reshape(3, 2))
    t = tb.to_tensor(df, copy=False, float_dtype=None)
    s = pd.Series(np.arange(4.0))
    u = tb.to_tensor(s, copy=False, float_dtype=None)
    del df, s
    gc.collect()
    assert t.tolist() == [[0, 1], [2, 3], [4, 5]] and u.tolist() == [0, 1, 2, 3]


def test_to_numpy_never_gives_object_arrays(pd):
    df = pd.DataFrame({"a": pd.array([1, None], dtype="Int64"), "b": [0.5, 1.5]})
    a = tb.to_numpy(df)
    assert a.dtype == np.float64
    np.testing.assert_array_equal(a, np.array([[1, 0.5], [np.nan, 1.5]]))
    with pytest.raises(ValueError, match="1 missing value"):
        tb.to_numpy(df["a"])
    np.testing.assert_array_equal(tb.to_numpy(df["a"], dtype=np.float32),
                                  np.array([1, np.nan], np.float32))
    s = pd.Series(np.arange(3.0))
    r = tb.to_numpy(s)
    assert r.ctypes.data == s.to_numpy().ctypes.data and not r.flags.writeable
    assert tb.to_numpy(s, copy=True).flags.writeable


def test_importing_torchbridge_does_not_import_pandas():
    import subprocess
    import sys
    code = ("import sys, numpy as np, torchbridge as tb\n"
            "tb.to_tensor(np.zeros(2)); tb.to_numpy(np.zeros(2))\n"
            "assert 'pandas' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_interleaved_blocks_give_each_column_its_own_values(pd):
    # Columns of three NumPy blocks, interleaved (positions 0, 3, 6, ... in
    # one block): the C++ side takes each block's rows at their positions.
    rng = np.random.default_rng(3)
    data = {}
    for j in range(12):
        kind = j % 3
        data[f"c{j}"] = (rng.standard_normal(50) if kind == 0 else
                         rng.integers(-9, 9, 50, dtype=np.int16) if kind == 1 else
                         rng.standard_normal(50).astype(np.float32))
    df = pd.DataFrame(data)
    assert len(df._mgr.blocks) == 3
    want = df.to_numpy(np.float64)
    t = tb.to_tensor(df, dtype=torch.float64)
    assert t.shape == (50, 12)
    assert np.array_equal(t.numpy(), want)
    # A block that is a strided view (a frame over every other row of a
    # 2-D array, plus a column of another dtype).
    base = rng.standard_normal((100, 4))
    f = pd.DataFrame(base[::2], columns=list("abcd"), copy=False)
    f["e"] = np.arange(50, dtype=np.int32)
    assert np.array_equal(tb.to_tensor(f, dtype=torch.float64).numpy(), f.to_numpy(np.float64))


def test_errors_in_a_multi_block_frame_name_the_column(pd):
    # The first pass goes without labels; the error comes from the second.
    df = pd.DataFrame({"x": np.arange(3.0), "k": np.arange(3, dtype=np.int8),
                       "n": pd.array([1, None, 3], dtype="Int64")})
    with pytest.raises(ValueError, match="column 'n' of the DataFrame has 1 missing value"):
        tb.to_tensor(df, dtype=torch.int64)
    row = tb.to_tensor(df, dtype=torch.float64)[1].numpy()
    assert np.array_equal(row, [1.0, 1.0, np.nan], equal_nan=True)


def test_reversed_frames_with_columns_outside_the_typed_copy(pd):
    # Complex columns and float64 -> float16 go through ATen's copy; a
    # reversed frame (negative strides) used to hand it a borrowed view of
    # the wrong memory: a crash (in a subprocess here, so a regression fails
    # the test instead of killing the run) or wrong values.
    code = """
import numpy as np, pandas as pd, torch, torchbridge as tb
df = pd.DataFrame({'a': np.arange(200000) + 0.5, 'c': np.arange(200000) + 1j})
r = tb.to_tensor(df.iloc[::-1])
assert torch.equal(r, torch.from_numpy(df.iloc[::-1].to_numpy(np.complex64)))
f = pd.DataFrame({'a': np.arange(5) + 0.5, 'b': np.ones(5, np.int8)})
h = tb.to_tensor(f.iloc[::-1], dtype=torch.float16)
assert h[:, 0].tolist() == [4.5, 3.5, 2.5, 1.5, 0.5], h
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env=_env())
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


@pytest.mark.parametrize("swapped", [">f8", ">i4", ">c16"])
def test_byte_swapped_columns_next_to_native_ones(pd, swapped):
    df = pd.DataFrame({"s": np.arange(4, dtype=swapped) * 3,
                       "n": np.arange(4, dtype=np.int32),
                       "m": pd.array([1.5, None, 3.5, 4.5], dtype="Float64")})
    want = df.to_numpy(np.complex128 if swapped == ">c16" else np.float64, na_value=np.nan)
    got = tb.to_tensor(df, float_dtype=None)
    assert np.array_equal(got.numpy().astype(want.dtype), want, equal_nan=True)


def test_labels_that_cannot_be_read_keep_the_rules_error(pd):
    # The labels are read only for the error; one whose repr raises, or
    # that is not valid UTF-8, must not replace the error itself.
    class Label:
        def __repr__(self):
            raise RuntimeError("repr boom")

    data = {"x": pd.array([1, None, 3], dtype="Int64"), "b": np.arange(3.0)}
    for label in (Label(), "\udc80"):
        df = pd.DataFrame(data)
        df.columns = pd.Index([label, "b"], dtype=object)
        with pytest.raises(ValueError, match="has 1 missing value"):
            tb.to_tensor(df, dtype=torch.int64)
        out = tb.to_tensor(df)  # labels play no part in a conversion
        assert np.array_equal(out.numpy(), [[1, 0], [np.nan, 1], [3, 2]], equal_nan=True)
