"""torchbridge: NumPy <-> PyTorch conversion that is safe and zero-copy.

    import torchbridge as tb
    t = tb.to_tensor(array)        # shares memory when safe; float64 -> float32
    a = tb.to_numpy(tensor)        # any tensor: grad, GPU, conj, sparse, bf16
    h = tb.to_host(tensor)         # the tensor-side half of to_numpy
    tb.tree_to_tensor(batch)       # nested dicts/lists/tuples/dataclasses
    s = tb.to_scipy(sparse_tensor) # torch sparse -> scipy.sparse array, shared
    DataLoader(ds, collate_fn=tb.collate)  # batches in one copy, float32
    t = tb.load("x.npy", mmap=True)  # .npy -> tensor (.npz -> dict), zero-copy
    tb.save("y.npz", {"w": t})     # tensor -> .npy, mapping -> .npz

The conversion functions are implemented in C++ (torchbridge._C) and called
directly, without a Python wrapper, because they sit in hot loops; their
signatures are in torchbridge/_C.pyi. See README.md for the rules.
"""

import atexit as _atexit

from ._load import load_extension as _load_extension
from ._version import __version__

_C = _load_extension()  # also registers the torch.ops.torchbridge operators

from . import _fake  # noqa: E402,F401  (fake kernels, for torch.compile)

from ._C import load, save, to_host, to_numpy, to_tensor  # noqa: E402
from ._tree import tree_to_numpy, tree_to_tensor  # noqa: E402
from ._sparse import to_scipy  # noqa: E402
from ._collate import collate  # noqa: E402
from ._prefetch import prefetch  # noqa: E402

# Decrefs queued by tensors freed on threads without the GIL run before the
# interpreter starts tearing down.
_atexit.register(_C._drain_releases)

__all__ = [
    "__version__",
    "collate",
    "load",
    "prefetch",
    "save",
    "to_host",
    "to_numpy",
    "to_scipy",
    "to_tensor",
    "tree_to_numpy",
    "tree_to_tensor",
]
