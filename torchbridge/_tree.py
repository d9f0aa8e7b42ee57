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
import sys
from collections.abc import Mapping
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from . import _C

T = TypeVar("T")

_LEAVES = (np.ndarray, np.generic, torch.Tensor)

# Types seen by the walk that are (or are not) foreign array containers,
# so each type is inspected once. Bounded: classes made on the fly must not
# grow it without limit.
_foreign: dict[type, bool] = {}
_FOREIGN_CACHE_MAX = 4096


def _inspect_foreign(tp: type) -> bool:
    # Protocols first: DLPack producers (CuPy, JAX), Arrow producers
    # (pyarrow, polars, DuckDB). pandas and scipy.sparse objects are
    # recognised by their package, which is already imported when one of
    # its objects exists; nothing is imported here.
    if any(hasattr(tp, name) for name in
           ("__dlpack__", "__arrow_c_array__", "__arrow_c_stream__")):
        return True
    module = getattr(tp, "__module__", None) or ""
    root = module.partition(".")[0]
    if root == "pandas":
        pd = sys.modules.get("pandas")
        # Series, DataFrame, Index and extension arrays; not Timestamp or NA.
        return pd is not None and issubclass(
            tp, (pd.Series, pd.DataFrame, pd.Index, pd.api.extensions.ExtensionArray))
    if module.startswith("scipy.sparse"):
        sp = sys.modules.get("scipy.sparse")
        kinds = tuple(getattr(sp, n) for n in ("spmatrix", "sparray") if hasattr(sp, n))
        return bool(kinds) and issubclass(tp, kinds)
    return False


def _is_foreign(tree: Any) -> bool:
    """Whether `tree` is an array container to_tensor/to_numpy accept
    besides ndarrays, NumPy scalars and tensors (the public contract's list)."""
    tp = type(tree)
    found = _foreign.get(tp)
    if found is None:
        found = _inspect_foreign(tp)
        if len(_foreign) >= _FOREIGN_CACHE_MAX:
            _foreign.clear()
        _foreign[tp] = found
    return found


def _quote(key: Any) -> str:
    if isinstance(key, str):
        return '["' + key.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return f"[{key!r}]"


def _note_key(e: BaseException, step: str) -> None:
    """Record one step of the key path on an exception rising out of the
    walk (innermost first); _raise_with_path renders it at the top."""
    path = getattr(e, "_torchbridge_path", None)
    if path is None:
        try:
            e._torchbridge_path = path = []  # type: ignore[attr-defined]
        except AttributeError:  # exceptions without a __dict__
            return
    path.append(step)


def _with_path(e: BaseException, api: str) -> BaseException:
    """Name the key path in the message: `tree_to_tensor: tree["text"][3]: ...`."""
    path = getattr(e, "_torchbridge_path", None)
    if not path:
        return e
    where = "tree" + "".join(reversed(path))
    del e._torchbridge_path  # type: ignore[attr-defined]
    if e.args and isinstance(e.args[0], str):
        # Same exception object, type and traceback; only the message grows.
        e.args = (f"{api}: at {where}: {e.args[0]}",) + e.args[1:]
    else:
        e.add_note(f"{api}: raised at {where}")
    return e


def _map(fn: Callable[[Any], Any], tree: Any, leaves: tuple = _LEAVES) -> Any:
    """Rebuild `tree` with fn applied to every instance of `leaves` (and, for
    the conversion walk, every foreign array container). An exception from
    fn carries the key path of its leaf (see _note_key)."""
    tp = type(tree)
    convert = leaves is _LEAVES
    # Exact-type checks first: the common containers and leaves cost one
    # comparison each in this hot walk. Loops rather than comprehensions so
    # that a failing key is known (a try costs nothing until it raises).
    if tp is np.ndarray or tp is torch.Tensor:
        return fn(tree) if convert else tree
    if tp is dict:
        out = {}
        try:
            for k, v in tree.items():
                out[k] = _map(fn, v, leaves)
        except Exception as e:
            _note_key(e, _quote(k))
            raise
        return out
    if tp is list or tp is tuple:
        items = []
        try:
            for i, v in enumerate(tree):
                items.append(_map(fn, v, leaves))
        except Exception as e:
            _note_key(e, f"[{i}]")
            raise
        return items if tp is list else tuple(items)
    if isinstance(tree, leaves) or (convert and _is_foreign(tree)):
        return fn(tree)
    if isinstance(tree, Mapping):
        items = []
        try:
            for k, v in tree.items():
                items.append((k, _map(fn, v, leaves)))
        except Exception as e:
            _note_key(e, _quote(k))
            raise
        if isinstance(tree, dict):
            # copy.copy keeps the subclass and its state (default_factory,
            # attributes); the values are then replaced in place, in order.
            out = _copy.copy(tree)
            for k, v in items:
                out[k] = v
            return out
        return dict(items)
    if isinstance(tree, (tuple, list)):
        named = isinstance(tree, tuple) and hasattr(tp, "_fields") and hasattr(tp, "_make")
        values = []
        try:
            for i, v in enumerate(tree):
                values.append(_map(fn, v, leaves))
        except Exception as e:
            _note_key(e, f".{tp._fields[i]}" if named else f"[{i}]")
            raise
        if named:
            return tp._make(values)
        if isinstance(tree, tuple):
            return tp(values)
        out = _copy.copy(tree)
        out[:] = values
        return out
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        changes, late = {}, {}
        for f in dataclasses.fields(tree):
            if not hasattr(tree, f.name):
                continue
            try:
                new = _map(fn, getattr(tree, f.name), leaves)
            except Exception as e:
                _note_key(e, f".{f.name}")
                raise
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
    try:
        done = batch(pending)  # validates every leaf before anything moves
    except Exception:
        # Which leaf? Convert them one by one to find it (and its key path);
        # only on this error path. If none fails alone, the batch's own
        # error stands.
        _map(lambda leaf: batch([leaf]) if defer(leaf) else None, tree)
        raise
    return _map(lambda p: done[p.index], out, (_Pending,))


def tree_to_tensor(tree: T, **kw: Any) -> T:
    """Apply :func:`torchbridge.to_tensor` (same keywords) to every leaf.

    Leaves are ``np.ndarray``, NumPy scalars, tensors and the array
    containers to_tensor accepts (DLPack and Arrow producers, pandas,
    scipy.sparse); every other leaf (str, bytes, None, numbers, objects) is
    returned unchanged. Containers keep their structure and types; the input
    is never mutated. An error names the key path of its leaf
    (``tree["text"][3]``). With a device, all leaves move in one coalesced
    transfer (the results are views of one device buffer) and the result
    equals leaf-by-leaf conversion.
    """
    try:
        if not kw:
            return _map(_C.to_tensor, tree)
        if _is_cpu(kw.get("device")):
            return _map(lambda leaf: _C.to_tensor(leaf, **kw), tree)
        return _batched(tree, lambda leaf: True, None,
                        lambda leaves: _C._to_tensor_batch(leaves, **kw))
    except Exception as e:
        raise _with_path(e, "tree_to_tensor")


def _on_cuda(leaf: Any) -> bool:
    return isinstance(leaf, torch.Tensor) and leaf.is_cuda


def tree_to_numpy(tree: T, **kw: Any) -> T:
    """Apply :func:`torchbridge.to_numpy` (same keywords) to every leaf.

    Leaves are tensors, ``np.ndarray``, NumPy scalars (which become 0-d
    arrays) and the array containers to_numpy accepts (as for
    tree_to_tensor); every other leaf is returned unchanged. CUDA leaves
    come back in one coalesced transfer (the arrays share one pinned host
    buffer). An error names the key path of its leaf.
    """
    now = _C.to_numpy if not kw else (lambda leaf: _C.to_numpy(leaf, **kw))
    try:
        return _batched(tree, _on_cuda, now,
                        lambda leaves: _C._to_numpy_batch(leaves, **kw))
    except Exception as e:
        raise _with_path(e, "tree_to_numpy")
