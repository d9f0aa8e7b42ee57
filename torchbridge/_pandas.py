"""pandas -> plain parts for the C++ front-end (csrc/python/pandas.cpp).

Imported only when an input's type comes from pandas (never by
``import torchbridge``). It only translates: per column a name, a NumPy
view of pandas' memory (or an Arrow-backed column's pyarrow array, or a
categorical's codes) and a missing-value mask; the rules (common dtype, NaN
or ValueError, share or copy) are C++ core's (csrc/core/columns.cpp).

``parts(obj)`` returns None for pandas objects that are no container of
values (a Timestamp), else ``(two_d, rows, what, columns, whole, blocks)``:

- ``columns``: a list of ``(name, kind, a, b)``, kind being
  ``NUMPY`` (a: 1-D ndarray, b: bool mask ndarray, nonzero = missing, or None),
  ``ARROW`` (a: a pyarrow array or ChunkedArray), ``CODES`` (a: categorical
  codes, -1 for missing, counted as int64), ``REFUSED`` (a: what the column
  holds, b: the fix), for which C++ raises TypeError, or ``IN_BLOCK`` (its
  values are a row of one of ``blocks``);
- ``blocks``: a list of ``(positions, block, labels)`` for pandas' numeric
  NumPy blocks: a read-only 2-D array whose row i is column positions[i]
  (labels: their names, or None);
- ``whole``: for a DataFrame held in one NumPy block with its columns in
  order, that block as one read-only (rows, k) view (copy=False shares it),
  else None.

Every ndarray handed out is a read-only view: under copy-on-write other
frames may share pandas' memory, so a tensor must not write to it unless the
caller said copy=False (the same promise as for any read-only array).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api import types as _types

NUMPY, ARROW, CODES, REFUSED, IN_BLOCK = 0, 1, 2, 3, 4
_IN_BLOCK = ("", IN_BLOCK, None, None)
_UNUSED = ("", NUMPY, None, None)  # a column of `whole` (C++ reads no part)
# NumPy kinds every tensor dtype policy takes: bool, ints, floats, complex.
_NUMERIC_KINDS = "biufc"


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def _label(label) -> str:
    return label if isinstance(label, str) else repr(label)


def _fixes(dtype, where: str, drop: str | None) -> tuple[str, str]:
    """(what the values are, how to convert them) for a refused dtype."""
    leave = f" or leave it out ({drop})" if drop else ""
    if isinstance(dtype, pd.SparseDtype):
        return ("sparse values", f"densify it first ({where}.sparse.to_dense()){leave}")
    if _types.is_datetime64_any_dtype(dtype) or _types.is_timedelta64_dtype(dtype) or \
            isinstance(dtype, pd.PeriodDtype):
        return ("dates or times",
                f"convert it to numbers ({where}.astype('int64') gives its integer units){leave}")
    if _types.is_string_dtype(dtype) and dtype != object:
        return ("text", f"encode it ({where}.astype('category').cat.codes){leave}")
    if dtype == object:
        return ("Python objects",
                f"convert it to a numeric dtype ({where}.astype('float32')){leave}")
    return (f"values of dtype {dtype}",
            f"convert it to a numeric dtype ({where}.astype('float32')){leave}")


def _numeric(dtype) -> bool:
    if isinstance(dtype, pd.SparseDtype):
        return False
    return (_types.is_numeric_dtype(dtype) or _types.is_bool_dtype(dtype)) and \
        not _types.is_datetime64_any_dtype(dtype) and not _types.is_timedelta64_dtype(dtype)


def _column(name: str, values, fix_names):
    """One column's part from its pandas values (ndarray or ExtensionArray).
    fix_names() gives (where, drop) for a refusal's fix; called only then."""
    dtype = values.dtype
    if isinstance(values, np.ndarray) and dtype.kind in _NUMERIC_KINDS:
        return (name, NUMPY, _readonly(values), None)
    if isinstance(dtype, pd.CategoricalDtype):
        return (name, CODES, _readonly(np.asarray(values.codes)), None)
    if not _numeric(dtype):
        what, fix = _fixes(dtype, *fix_names())
        return (name, REFUSED, f"{what} (dtype {dtype})", fix)
    if isinstance(values, np.ndarray):
        return (name, NUMPY, _readonly(values), None)
    mask = getattr(values, "_mask", None)
    data = getattr(values, "_data", None)
    if isinstance(mask, np.ndarray) and isinstance(data, np.ndarray):
        # Int64, Float64, boolean: values and a mask (True = missing).
        return (name, NUMPY, _readonly(data), _readonly(mask) if mask.any() else None)
    pa_array = getattr(values, "_pa_array", None)
    if pa_array is not None:  # int64[pyarrow] and friends
        return (name, ARROW, pa_array, None)
    ndarray = getattr(values, "_ndarray", None)  # NumpyExtensionArray
    if isinstance(ndarray, np.ndarray):
        return (name, NUMPY, _readonly(ndarray), None)
    a = values.to_numpy()
    if a.dtype == object:
        what, fix = _fixes(dtype, *fix_names())
        return (name, REFUSED, f"{what} (dtype {dtype})", fix)
    return (name, NUMPY, _readonly(a), None)


def _in_order(placement, k: int) -> bool:
    """Whether a block's placement is columns 0..k-1 in order."""
    if placement.is_slice_like:
        s = placement.as_slice
        return s.start in (0, None) and s.stop == k and s.step in (1, None)
    return np.array_equal(placement.as_array, np.arange(k))


def _frame(df: pd.DataFrame, names: bool):
    mgr = getattr(df, "_mgr", None)
    blocks = getattr(mgr, "blocks", None)
    if blocks is not None and len(blocks) == 1:
        # The common frame, one numeric NumPy block in column order: the
        # block is the answer, no per-column work (C++ reads no column part
        # when `whole` is set, so they carry no arrays). Its shape gives the
        # frame's (a frame's blocks hold every column).
        vals = getattr(blocks[0], "values", None)
        try:
            if isinstance(vals, np.ndarray) and vals.ndim == 2 and \
                    vals.dtype.kind in _NUMERIC_KINDS:
                k, n = vals.shape
                if k > 0 and k == len(df.columns) and _in_order(blocks[0].mgr_locs, k):
                    whole = vals.T  # a view of its own: marking it read-only is ours
                    whole.flags.writeable = False
                    return (True, n, "the DataFrame", [_UNUSED] * k, whole, [])
        except AttributeError:  # another internal layout: the general path
            pass
    k = df.shape[1]
    labels = df.columns  # read per column, and only when asked for (see parts)
    cols: list = [None] * k
    blocks_out: list = []

    def label(j) -> str:
        return _label(labels[j]) if names else ""

    def column(j, values):
        def fix_names():
            lab = labels[j]
            return f"df[{lab!r}]", f"df.drop(columns=[{lab!r}])"
        return _column(label(j), values, fix_names)

    if blocks is not None:
        try:
            for blk in blocks:
                locs = blk.mgr_locs.as_array.tolist()
                vals = blk.values
                if isinstance(vals, np.ndarray) and vals.ndim == 2 and \
                        vals.dtype.kind in _NUMERIC_KINDS and k > 1:
                    # C++ takes the block's rows itself (a view per column
                    # here cost more than the copy of a small frame).
                    blocks_out.append((locs, _readonly(vals),
                                       [label(j) for j in locs] if names else None))
                    for j in locs:
                        cols[j] = _IN_BLOCK
                elif getattr(vals, "ndim", 1) == 2:  # object and datetime blocks
                    for i, j in enumerate(locs):
                        cols[j] = column(j, vals[i])
                else:
                    cols[locs[0]] = column(locs[0], vals)
        except (AttributeError, TypeError, IndexError):  # another internal layout
            cols = [None] * k
    if any(c is None for c in cols):
        cols = [column(j, df.iloc[:, j].array) for j in range(k)]
        blocks_out = []
    return (True, len(df), "the DataFrame", cols, None, blocks_out)


def parts(obj, names: bool = True):
    """The parts of `obj` (see the module's doc), or None. names=False leaves
    column labels out ("" each): they serve only error messages, and reading
    them is most of a small frame's cost (C++ asks again with names=True
    when the conversion fails)."""
    if isinstance(obj, pd.DataFrame):
        return _frame(obj, names)
    if isinstance(obj, pd.Series):
        name = "" if obj.name is None or not names else _label(obj.name)
        return (False, len(obj), "the Series", [_column(name, obj.array, _SERIES)], None, [])
    if isinstance(obj, pd.MultiIndex):
        return (False, len(obj), "the MultiIndex",
                [("", REFUSED, "tuples of several levels",
                  "convert its levels separately (idx.to_frame() gives a DataFrame)")], None, [])
    if isinstance(obj, pd.RangeIndex):
        a = np.arange(obj.start, obj.stop, obj.step, dtype=np.int64)
        return (False, len(obj), "the RangeIndex", [("", NUMPY, a, None)], None, [])
    if isinstance(obj, pd.Index):
        return (False, len(obj), "the Index", [_column("", obj.array, _INDEX)], None, [])
    if isinstance(obj, pd.api.extensions.ExtensionArray):
        return (False, len(obj), f"the {type(obj).__name__}",
                [_column("", obj, _ARRAY)], None, [])
    return None


def _SERIES():
    return "s", None


def _INDEX():
    return "idx", None


def _ARRAY():
    return "arr", None
