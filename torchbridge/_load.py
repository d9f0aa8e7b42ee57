"""Loads the compiled extension, or explains exactly why it cannot.

A failed load is never swallowed: the error names what the extension was
built for (recorded by setup.py), what is installed, and how to fix it.
"""

from __future__ import annotations

import json
import os
import platform
import types

_MIN_NUMPY = (1, 22)
_REBUILD = ("rebuild it in this environment: "
            "pip install --no-build-isolation --no-deps -e . "
            "(or run: bash scripts/setup.sh)")


def _build_info() -> dict:
    path = os.path.join(os.path.dirname(__file__), "_build_info.json")
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return {}


def _explain(err: BaseException) -> str:
    import torch

    info = _build_info()
    if not info:
        return (f"torchbridge's C++ extension is not built ({err}); build it: "
                "pip install --no-build-isolation -e . (see README.md).")
    have = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "python": platform.python_version(),
    }
    diffs = [f"{k} {info.get(k) or 'none'} (you have {have[k] or 'none'})"
             for k in ("torch", "cuda", "python")
             if str(info.get(k, "")).rsplit(".", 1)[0] != have[k].rsplit(".", 1)[0]
             or (k == "torch" and info.get(k) != have[k])]
    built_for = "; ".join(diffs) if diffs else (
        f"torch {info.get('torch')}, Python {info.get('python')} "
        "(which match what you have)")
    return (f"torchbridge's C++ extension failed to load: {err}. "
            f"It was built for {built_for}; {_REBUILD}.")


def _check_numpy() -> None:
    import numpy

    version = tuple(int(p) for p in numpy.__version__.split(".")[:2])
    if version < _MIN_NUMPY:
        raise ImportError(
            f"torchbridge needs NumPy >= {_MIN_NUMPY[0]}.{_MIN_NUMPY[1]}, "
            f"found {numpy.__version__}; pip install 'numpy>=1.22'.")


def load_extension() -> types.ModuleType:
    _check_numpy()
    import torch  # noqa: F401  (_C uses torch's Python bindings: load them first)

    try:
        from . import _C
    except ImportError as err:
        raise ImportError(_explain(err)) from err
    return _C
