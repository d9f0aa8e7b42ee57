"""pandas -> plain parts for the C++ front-end (csrc/python/pandas.cpp).

Imported only when an input's type comes from pandas (never by
``import torchbridge``). It only translates: per column a name, a NumPy
view of pandas' memory (or an Arrow-backed column's pyarrow array, or a
categorical's codes) and a missing-value mask; the rules (common dtype, NaN
or ValueError, share or copy) are C++ core's (csrc/core/columns.cpp).

``parts(obj)`` returns None for pandas objects that are no container of
values (a Timestamp), else ``(two_d, rows, what, columns, whole)``:

- ``columns``: a list of ``(name, kind, a, b)``, kind being
  ``NUMPY`` (a: 1-D ndarray, b: bool mask ndarray, nonzero = missing, or None),
  ``ARROW`` (a: a pyarrow array or ChunkedArray), ``CODES`` (a: categorical
  codes, -1 for missing, counted as int64) or ``REFUSED`` (a: what the column
  holds, b: the fix), for which C++ raises TypeError;
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

NUMPY, ARROW, CODES, REFUSED = 0, 1, 2, 3


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


def _column(name: str, values, where: str, drop: str | None):
    """One column's part from its pandas values (ndarray or ExtensionArray)."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return (name, CODES, _readonly(np.asarray(values.codes)), None)
    if not _numeric(dtype):
        what, fix = _fixes(dtype, where, drop)
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
        what, fix = _fixes(dtype, where, drop)
        return (name, REFUSED, f"{what} (dtype {dtype})", fix)
    return (name, NUMPY, _readonly(a), None)


def _frame(df: pd.DataFrame):
    k = df.shape[1]
    mgr = getattr(df, "_mgr", None)
    blocks = getattr(mgr, "blocks", None)
    if blocks is not None and len(blocks) == 1 and k > 0:
        # The common frame, one numeric NumPy block in column order: the
        # block is the answer, no per-column work (C++ reads no column part
        # when `whole` is set, so they carry no arrays).
        vals = getattr(blocks[0], "values", None)
        try:
            in_order = isinstance(vals, np.ndarray) and vals.ndim == 2 and \
                vals.dtype.kind in "biufc" and vals.shape[0] == k and \
                np.array_equal(blocks[0].mgr_locs.as_array, np.arange(k))
        except AttributeError:  # another internal layout: the general path
            in_order = False
        if in_order:
            return (True, len(df), "the DataFrame", [("", NUMPY, None, None)] * k,
                    _readonly(vals.T))
    labels = list(df.columns)
    cols: list = [None] * k
    whole = None

    def column(j, values):
        lab = _label(labels[j])
        where = f"df[{labels[j]!r}]"
        return _column(lab, values, where, f"df.drop(columns=[{labels[j]!r}])")

    if blocks is not None:
        try:
            for blk in blocks:
                locs = blk.mgr_locs.as_array
                vals = blk.values
                if isinstance(vals, np.ndarray) and vals.ndim == 2:
                    for i, j in enumerate(locs):
                        cols[j] = column(j, vals[i])
                elif getattr(vals, "ndim", 1) == 2:  # 2-D extension blocks (datetimes)
                    for i, j in enumerate(locs):
                        cols[j] = column(j, vals[i])
                else:
                    cols[int(locs[0])] = column(int(locs[0]), vals)
            if len(blocks) == 1 and k > 0:
                vals = blocks[0].values
                locs = blocks[0].mgr_locs.as_array
                if isinstance(vals, np.ndarray) and vals.ndim == 2 and \
                        cols[0][1] == NUMPY and np.array_equal(locs, np.arange(k)):
                    whole = _readonly(vals.T)
        except (AttributeError, TypeError, IndexError):  # another internal layout
            cols = [None] * k
            whole = None
    if any(c is None for c in cols):
        cols = [column(j, df.iloc[:, j].array) for j in range(k)]
    return (True, len(df), "the DataFrame", cols, whole)


def parts(obj):
    if isinstance(obj, pd.DataFrame):
        return _frame(obj)
    if isinstance(obj, pd.Series):
        name = "" if obj.name is None else _label(obj.name)
        return (False, len(obj), "the Series", [_column(name, obj.array, "s", None)], None)
    if isinstance(obj, pd.MultiIndex):
        return (False, len(obj), "the MultiIndex",
                [("", REFUSED, "tuples of several levels",
                  "convert its levels separately (idx.to_frame() gives a DataFrame)")], None)
    if isinstance(obj, pd.RangeIndex):
        a = np.arange(obj.start, obj.stop, obj.step, dtype=np.int64)
        return (False, len(obj), "the RangeIndex", [("", NUMPY, a, None)], None)
    if isinstance(obj, pd.Index):
        return (False, len(obj), "the Index", [_column("", obj.array, "idx", None)], None)
    if isinstance(obj, pd.api.extensions.ExtensionArray):
        return (False, len(obj), f"the {type(obj).__name__}",
                [_column("", obj, "arr", None)], None)
    return None
