"""Ray Data integration: ``torchbridge.ray.CollateFn``.

    from torchbridge.ray import CollateFn
    for batch in ds.iter_torch_batches(collate_fn=CollateFn(), batch_size=64):
        ...

Importing this module imports Ray (``import torchbridge`` never does).
``CollateFn`` is a ``ray.data.collate_fn.NumpyBatchCollateFn``, the class Ray
2.47+ expects (a plain function is deprecated there): Ray hands it one batch
as a dict of column arrays, which it converts as ``tree_to_tensor`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Optional

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from . import _C
from ._tree import tree_to_tensor

__all__ = ["CollateFn"]

_KEYWORDS = ("dtype", "float_dtype", "copy", "pin_memory", "non_blocking",
             "requires_grad")
_API = "torchbridge.ray.CollateFn"


def _stack_object_column(name: str, col: np.ndarray) -> Any:
    """A column of per-row arrays (Ray's variable-shaped tensor columns come
    as object arrays): their list, after checking they stack."""
    rows = list(col.reshape(-1)) if col.ndim != 1 else list(col)
    if not rows:
        return col
    first = rows[0]
    if not isinstance(first, np.ndarray):
        raise TypeError(
            f"{_API}: column {name!r} holds {type(first).__name__} values (an object "
            "array), which have no tensor form; drop the column (ds.drop_columns) "
            "or encode it to numbers in a map_batches step.")
    for i, r in enumerate(rows):
        if not isinstance(r, np.ndarray):
            raise TypeError(
                f"{_API}: column {name!r}: row {i} is a {type(r).__name__}, but row 0 "
                "is an array; a column must hold arrays in every row.")
        if r.shape != first.shape:
            raise ValueError(
                f"{_API}: column {name!r} holds arrays of different shapes: row {i} "
                f"has shape {r.shape}, but row 0 has shape {first.shape}; pad or "
                "crop them to one shape in a map_batches step (batches stack only "
                "equal shapes).")
    return rows


class CollateFn(NumpyBatchCollateFn):
    """``collate_fn`` for ``Dataset.iter_torch_batches``: each NumPy batch (a
    dict of column arrays) becomes ``tree_to_tensor(batch, device=device,
    **to_tensor_kw)``.

    - the float policy applies (float64 -> float32 unless ``float_dtype=``);
    - read-only object-store columns are copied exactly once (a cast is that
      copy) and never aliased writable (``copy=False`` shares them: you then
      promise not to write);
    - object columns of equal-shape arrays are stacked in one copy; of
      different shapes they raise ``ValueError`` naming the column;
    - with a CUDA ``device`` all columns move as one coalesced transfer.
      Pass the same device to ``iter_torch_batches(device=...)``, which
      otherwise moves the batch to its own device (the CPU by default).
    """

    def __init__(self, device: Optional[Any] = None, **to_tensor_kw: Any) -> None:
        bad = sorted(set(to_tensor_kw) - set(_KEYWORDS))
        if bad:
            raise TypeError(
                f"{_API}: unexpected keyword argument(s) {', '.join(bad)}; it takes "
                f"device= and to_tensor's keywords ({', '.join(_KEYWORDS)}).")
        self.device = torch.device(device) if isinstance(device, str) else device
        self.to_tensor_kw = to_tensor_kw

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"{_API}: expects Ray's NumPy batch (a dict of column arrays), got "
                f"{type(batch).__name__}; use it only as iter_torch_batches(collate_fn=...).")
        columns = {}
        for name, col in batch.items():
            if isinstance(col, np.ndarray) and col.dtype == object:
                col = _stack_object_column(name, col)
            columns[name] = col
        try:
            if self.device is None:
                return {name: _C.to_tensor(col, **self.to_tensor_kw)
                        for name, col in columns.items()}
            return tree_to_tensor(columns, device=self.device, **self.to_tensor_kw)
        except (TypeError, ValueError) as e:
            raise self._name_column(columns, e) from None

    def _name_column(self, columns: dict, error: Exception) -> Exception:
        """The error again, naming the first column that fails on the host."""
        for name, col in columns.items():
            try:
                _C.to_tensor(col, **self.to_tensor_kw)
            except (TypeError, ValueError) as e:
                return type(e)(f"{_API}: column {name!r}: {e}")
        return error

    def __repr__(self) -> str:
        kw = "".join(f", {k}={v!r}" for k, v in self.to_tensor_kw.items())
        return f"CollateFn(device={self.device!r}{kw})"
