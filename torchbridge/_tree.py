"""tree_to_tensor / tree_to_numpy: map a conversion over nested containers.

Only the walk lives here; every leaf goes through the C++ conversion. When
leaves cross the bus (tree_to_tensor with a device, tree_to_numpy of CUDA
tensors) they are collected first and moved as one coalesced transfer
(``_C._to_tensor_batch`` / ``_C._to_numpy_batch``), then put back in place.
Containers keep their types (dict subclasses such as OrderedDict and
defaultdict, namedtuples, list/tuple subclasses, dataclasses); other
Mappings become dict. The input is never mutated.
"""

from __future__ import annotations

import copy as _copy
import dataclasses
from collections.abc import Mapping
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from . import _C

T = TypeVar("T")

_LEAVES = (np.ndarray, np.generic, torch.Tensor)


def _map(fn: Callable[[Any], Any], tree: Any, leaves: tuple = _LEAVES) -> Any:
    """Rebuild `tree` with fn applied to every instance of `leaves`."""
    tp = type(tree)
    # Exact-type checks first: the common containers and leaves cost one
    # comparison each in this hot walk.
    if tp is np.ndarray or tp is torch.Tensor:
        return fn(tree) if leaves is _LEAVES else tree
    if tp is dict:
        return {k: _map(fn, v, leaves) for k, v in tree.items()}
    if tp is list:
        return [_map(fn, v, leaves) for v in tree]
    if tp is tuple:
        return tuple([_map(fn, v, leaves) for v in tree])
    if isinstance(tree, leaves):
        return fn(tree)
    if isinstance(tree, Mapping):
        items = [(k, _map(fn, v, leaves)) for k, v in tree.items()]
        if isinstance(tree, dict):
            # copy.copy keeps the subclass and its state (default_factory,
            # attributes); the values are then replaced in place, in order.
            out = _copy.copy(tree)
            for k, v in items:
                out[k] = v
            return out
        return dict(items)
    if isinstance(tree, tuple):
        values = [_map(fn, v, leaves) for v in tree]
        if hasattr(tp, "_fields") and hasattr(tp, "_make"):  # namedtuple
            return tp._make(values)
        return tp(values)
    if isinstance(tree, list):
        out = _copy.copy(tree)
        out[:] = [_map(fn, v, leaves) for v in tree]
        return out
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        changes, late = {}, {}
        for f in dataclasses.fields(tree):
            if not hasattr(tree, f.name):
                continue
            new = _map(fn, getattr(tree, f.name), leaves)
            (changes if f.init else late)[f.name] = new
        out = dataclasses.replace(tree, **changes)
        # Fields with init=False cannot go through replace(); set them as
        # __init__ would (object.__setattr__ also works on frozen classes).
        for name, new in late.items():
            object.__setattr__(out, name, new)
        return out
    return tree


class _Pending:
    """Marks where a batched leaf goes back into the rebuilt tree."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _is_cpu(device: Any) -> bool:
    return device is None or torch.device(device).type == "cpu"


def _batched(tree: Any, defer: Callable[[Any], bool], now: Callable[[Any], Any],
             batch: Callable[[list], list]) -> Any:
    """Convert leaves for which `defer` is false at once with `now`; collect
    the others, convert them with one `batch` call, and put them back."""
    pending: list = []

    def visit(leaf):
        if defer(leaf):
            pending.append(leaf)
            return _Pending(len(pending) - 1)
        return now(leaf)

    out = _map(visit, tree)
    if not pending:
        return out
    done = batch(pending)  # validates every leaf before anything moves
    return _map(lambda p: done[p.index], out, (_Pending,))


def tree_to_tensor(tree: T, **kw: Any) -> T:
    """Apply :func:`torchbridge.to_tensor` (same keywords) to every leaf.

    Leaves are ``np.ndarray``, NumPy scalars and tensors; every other leaf
    (str, None, int, float, objects) is returned unchanged. Containers keep
    their structure and types; the input is never mutated. With a device,
    all leaves move in one coalesced transfer (the results are views of one
    device buffer) and the result equals leaf-by-leaf conversion.
    """
    if not kw:
        return _map(_C.to_tensor, tree)
    if _is_cpu(kw.get("device")):
        return _map(lambda leaf: _C.to_tensor(leaf, **kw), tree)
    return _batched(tree, lambda leaf: True, None,
                    lambda leaves: _C._to_tensor_batch(leaves, **kw))


def _on_cuda(leaf: Any) -> bool:
    return isinstance(leaf, torch.Tensor) and leaf.is_cuda


def tree_to_numpy(tree: T, **kw: Any) -> T:
    """Apply :func:`torchbridge.to_numpy` (same keywords) to every leaf.

    Leaves are tensors, ``np.ndarray`` and NumPy scalars (which become 0-d
    arrays); every other leaf is returned unchanged. CUDA leaves come back
    in one coalesced transfer (the arrays share one pinned host buffer).
    """
    now = _C.to_numpy if not kw else (lambda leaf: _C.to_numpy(leaf, **kw))
    return _batched(tree, _on_cuda, now,
                    lambda leaves: _C._to_numpy_batch(leaves, **kw))
