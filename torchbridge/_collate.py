"""tb.collate: a drop-in ``collate_fn`` for ``torch.utils.data.DataLoader``.

The walk over the samples follows ``default_collate``'s structure rules
(its own, not tree_to_tensor's: a tuple sample gives a list, as there); each
array/tensor leaf is stacked by ``_C._collate_stack`` in one copy, the float
policy applied inside it, straight into the memory the batch must end in:
shared memory in a DataLoader worker (so pickling it to the main process
copies nothing, as ``default_collate`` does), pinned memory from PyTorch's
caching host allocator with ``pin_memory=True`` in the main process, else
ordinary memory.
"""

from __future__ import annotations

import copy as _copy
import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

import numpy as np
import torch

from . import _C
from ._tree import _is_foreign

_pin_warned = False
_FLOAT = object()  # numbers(): the float_dtype column


def _has_accelerator() -> bool:
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return torch.cuda.is_available()


def _in_worker() -> bool:
    # torch.utils.data is imported by whoever runs a DataLoader; without it
    # there is no worker to be in.
    import sys

    data = sys.modules.get("torch.utils.data")
    return data is not None and data.get_worker_info() is not None


def _shared_empty(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A tensor in shared memory, as default_collate makes one in a worker:
    the DataLoader's pickler then sends its handle, not its bytes."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(nbytes)
    return torch.empty((0,), dtype=dtype).set_(storage, 0, shape)


def _pinned_empty(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=True)


def _allocator(pin_memory: bool) -> Optional[Callable]:
    global _pin_warned
    if _in_worker():
        return _shared_empty  # workers cannot pin: the batch goes to shared memory
    if not pin_memory:
        return None
    if _has_accelerator():
        return _pinned_empty
    if not _pin_warned:
        _pin_warned = True
        warnings.warn(
            "collate(pin_memory=True): no accelerator is available, so the batch "
            "is not pinned (page-locked memory only speeds up copies to an "
            "accelerator); pass pin_memory=False to silence this warning.",
            UserWarning,
            stacklevel=3,
        )
    return None


def _has_key(sample: Any, key: Any) -> bool:
    try:
        sample[key]
        return True
    except (KeyError, TypeError, IndexError):
        return False


class _Walk:
    __slots__ = ("float_dtype", "alloc")

    def __init__(self, float_dtype, alloc):
        self.float_dtype = float_dtype
        self.alloc = alloc

    def stack(self, items: list, where: str) -> torch.Tensor:
        return _C._collate_stack(items, where, self.float_dtype, self.alloc)

    def numbers(self, items: list, where: str, dtype, kind: str) -> torch.Tensor:
        floats = self.float_dtype or torch.float64  # None keeps float64
        try:
            if dtype is not None:
                out = torch.tensor(items, dtype=floats if dtype is _FLOAT else dtype)
            else:
                # ints and bools: torch infers (bool, int64); a float among
                # them makes the column floating, never truncated.
                out = torch.tensor(items)
                if out.is_floating_point():
                    out = torch.tensor(items, dtype=floats)
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            bad = next((i for i, x in enumerate(items)
                        if not isinstance(x, (bool, int, float))), None)
            if bad is not None:
                raise TypeError(
                    f"collate: cannot stack {where}: sample [{bad}] is a "
                    f"{type(items[bad]).__name__}, but sample [0] is {kind}; every "
                    "sample must hold the same kind of value at each key.") from None
            raise ValueError(f"collate: cannot stack {where}: {e}.") from None
        if self.alloc is None:
            return out
        # Into the same memory as the stacked leaves (shared or pinned): a
        # small copy here instead of the pickler's or the pin thread's.
        dst = self.alloc(tuple(out.shape), out.dtype)
        dst.copy_(out)
        return dst

    def containers(self, items: list, where: str) -> torch.Tensor:
        # pandas / Arrow / scipy.sparse / array-likes: to_tensor's rules per
        # sample (float policy deferred to the stack), then one stack.
        tensors = []
        for i, x in enumerate(items):
            try:
                tensors.append(_C.to_tensor(x, float_dtype=None))
            except (TypeError, ValueError) as e:
                raise type(e)(f"collate: {where} of sample [{i}]: {e}") from None
        if tensors[0].layout != torch.strided:
            return self.sparse(tensors, where)
        return self.stack(tensors, where)

    def sparse(self, items: list, where: str) -> torch.Tensor:
        first = items[0]
        for i, t in enumerate(items):
            if not isinstance(t, torch.Tensor) or t.layout != first.layout:
                kind = (t.layout if isinstance(t, torch.Tensor) else type(t).__name__)
                raise TypeError(
                    f"collate: cannot stack {where}: sample [{i}] is {kind}, but "
                    f"sample [0] is a tensor of layout {first.layout}; every sample "
                    "must hold the same kind of value at each key.")
            if t.shape != first.shape:
                raise ValueError(
                    f"collate: cannot stack {where}: sample [{i}] has shape "
                    f"{tuple(t.shape)}, but sample [0] has shape {tuple(first.shape)}; "
                    "samples stack only when their shapes are equal.")
        if first.layout != torch.sparse_coo:
            # Batched CSR/CSC/BSR need equal nnz in every sample; COO has no
            # such limit, so compressed samples stack as COO.
            items = [t.to_sparse_coo() for t in items]
        out = torch.stack(items)
        target = _C._policy_dtype(out.dtype, None, self.float_dtype)
        return out if target == out.dtype else out.to(target)

    def walk(self, items: list, where: str) -> Any:
        elem = items[0]
        tp = type(elem)
        # Exact types first: one comparison each for the common cases.
        if tp is dict:
            return self.mapping(items, where)
        if tp is np.ndarray or tp is torch.Tensor:
            if tp is torch.Tensor and elem.layout != torch.strided:
                return self.sparse(items, where)
            return self.stack(items, where)
        if tp is float:
            return self.numbers(items, where, _FLOAT, "a float")
        if tp is int:
            return self.numbers(items, where, None, "an int")
        if tp is bool:
            return self.numbers(items, where, None, "a bool")
        if tp is str or tp is bytes or elem is None:
            return list(items)
        if isinstance(elem, (str, bytes)):  # np.str_ and np.bytes_ too
            return list(items)
        if isinstance(elem, (np.ndarray, np.generic)):  # before float: np.float64
            return self.stack(items, where)
        if isinstance(elem, torch.Tensor):
            if elem.layout != torch.strided:
                return self.sparse(items, where)
            return self.stack(items, where)
        if isinstance(elem, bool):
            return self.numbers(items, where, None, "a bool")
        if isinstance(elem, int):
            return self.numbers(items, where, None, "an int")
        if isinstance(elem, float):
            return self.numbers(items, where, _FLOAT, "a float")
        if isinstance(elem, Mapping):
            return self.mapping(items, where)
        if isinstance(elem, tuple) and hasattr(tp, "_fields") and hasattr(tp, "_make"):
            self.check_lengths(items, where)
            return tp._make([self.walk(list(s), f"{where}.{name}")
                             for name, s in zip(tp._fields, zip(*items))])
        if dataclasses.is_dataclass(elem) and not isinstance(elem, type):
            return self.dataclass(items, where)
        # The containers the tree functions convert (pandas, Arrow and DLPack
        # producers, scipy.sparse; recognised without importing them) become
        # tensors through to_tensor before stacking.
        if _is_foreign(elem):
            return self.containers(items, where)
        if isinstance(elem, Sequence):
            return self.sequence(items, where)
        if (hasattr(elem, "__array__") or hasattr(elem, "__array_interface__")
                or hasattr(elem, "__dlpack__")):
            return self.containers(items, where)
        raise TypeError(
            f"collate: {where} is a {tp.__module__}.{tp.__qualname__}, which collate "
            "cannot batch; samples may hold arrays, tensors, numbers, str, bytes, "
            "None, and dicts, lists, tuples, namedtuples or dataclasses of these. "
            "Convert it in the dataset.")

    def check_lengths(self, items: list, where: str) -> None:
        n = len(items[0])
        for i, s in enumerate(items):
            if type(s) is not type(items[0]) and not isinstance(s, Sequence):
                raise TypeError(
                    f"collate: cannot batch {where}: sample [{i}] is a "
                    f"{type(s).__name__}, but sample [0] is a "
                    f"{type(items[0]).__name__}.")
            if len(s) != n:
                raise ValueError(
                    f"collate: cannot batch {where}: sample [{i}] has {len(s)} "
                    f"items, but sample [0] has {n}; every sample must have the "
                    "same length.")

    def sequence(self, items: list, where: str) -> Any:
        self.check_lengths(items, where)
        out = [self.walk(list(s), f"{where}[{k}]") for k, s in enumerate(zip(*items))]
        elem = items[0]
        if isinstance(elem, tuple):
            return out  # default_collate gives a list for tuples
        if type(elem) is list:
            return out
        try:  # default_collate keeps a sequence type that accepts item assignment
            clone = _copy.copy(elem)
            for k, v in enumerate(out):
                clone[k] = v
            return clone
        except TypeError:
            return out

    def mapping(self, items: list, where: str) -> Any:
        elem = items[0]
        out = {}
        for key in elem:
            try:
                column = [s[key] for s in items]
            except (KeyError, TypeError, IndexError):
                i = next(i for i, s in enumerate(items) if not _has_key(s, key))
                raise ValueError(
                    f"collate: cannot batch {where}: sample [{i}] has no key "
                    f"{key!r}, which sample [0] has; every sample must have "
                    "the same keys.") from None
            out[key] = self.walk(column, f"{where}[{key!r}]")
        if type(elem) is dict:
            return out
        if isinstance(elem, dict):
            clone = _copy.copy(elem)  # keeps the subclass (OrderedDict, defaultdict)
            clone.update(out)
            return clone
        try:
            return type(elem)(out)
        except TypeError:
            return out

    def dataclass(self, items: list, where: str) -> Any:
        elem = items[0]
        tp = type(elem)
        changes, late = {}, {}
        for f in dataclasses.fields(elem):
            if not hasattr(elem, f.name):
                continue
            column = []
            for i, s in enumerate(items):
                if type(s) is not tp:
                    raise TypeError(
                        f"collate: cannot batch {where}: sample [{i}] is a "
                        f"{type(s).__name__}, but sample [0] is a {tp.__name__}.")
                column.append(getattr(s, f.name))
            new = self.walk(column, f"{where}.{f.name}")
            (changes if f.init else late)[f.name] = new
        out = dataclasses.replace(elem, **changes)
        for name, new in late.items():
            object.__setattr__(out, name, new)
        return out


def collate(samples: Sequence[Any], *, float_dtype: Optional[torch.dtype] = torch.float32,
            pin_memory: bool = False) -> Any:
    """Batch a list of samples, as ``default_collate`` does, in one copy.

    Each sample is a tensor, ndarray, NumPy scalar, number, str/bytes, None,
    Mapping, sequence, namedtuple or dataclass (nested freely); the result
    has the sample's structure with every leaf batched along a new first
    axis. Arrays and tensors are stacked in one copy with the float policy
    applied in it (float64 -> ``float_dtype``, complex128 -> its complex
    type; ``float_dtype=None`` keeps them); Python floats become
    ``float_dtype``, ints int64, bools bool; str, bytes and None leaves
    become lists; pandas, Arrow and scipy.sparse leaves go through
    :func:`torchbridge.to_tensor` first (sparse samples give a sparse
    batch). Leaves of different shapes raise ``ValueError`` naming the key
    path and the shapes.

    Inside a DataLoader worker the batch is allocated in shared memory (as
    ``default_collate`` does: it reaches the main process without a
    copy). With ``pin_memory=True`` in the main process it is allocated in
    pinned memory, so the DataLoader's pin thread has nothing to copy; with
    no accelerator it warns once and does not pin.
    """
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
        try:
            samples = list(samples)
        except TypeError:
            raise TypeError(
                f"collate: expects a list of samples, got {type(samples).__name__}"
            ) from None
    if len(samples) == 0:
        raise ValueError("collate: there are no samples to batch (an empty list).")
    if not isinstance(samples, list):
        samples = list(samples)
    return _Walk(float_dtype, _allocator(pin_memory)).walk(samples, "sample")
