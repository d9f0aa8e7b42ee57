"""torch sparse tensor -> scipy.sparse array (tb.to_scipy).

A translator only: the tensor's parts (values, index tensors) go through
tb.to_numpy, which shares CPU memory (and detaches, moves device tensors to
the host); SciPy gets them with copy=False. SciPy is imported only here,
inside the call.
"""

from __future__ import annotations

import torch

from ._C import to_numpy as _to_numpy

# The value dtypes scipy.sparse holds (scipy.sparse._sputils.supported_dtypes
# less the long double types torch lacks).
_SCIPY_DTYPES = frozenset({
    torch.bool, torch.int8, torch.uint8, torch.int16, torch.uint16, torch.int32,
    torch.uint32, torch.int64, torch.uint64, torch.float32, torch.float64,
    torch.complex64, torch.complex128,
})

_LAYOUTS = {
    torch.sparse_coo: "coo",
    torch.sparse_csr: "csr",
    torch.sparse_csc: "csc",
}


def to_scipy(tensor):
    """to_scipy(tensor)

    A scipy.sparse array of the tensor's layout: ``torch.sparse_coo`` ->
    ``coo_array``, ``torch.sparse_csr`` -> ``csr_array``,
    ``torch.sparse_csc`` -> ``csc_array``. On the CPU the array shares the
    tensor's memory (its ``data`` and index arrays are views of the
    tensor's values and indices; writes show on both sides); device tensors
    are copied to the host, tensors that require grad are detached.

    An uncoalesced COO tensor gives a COO array with its duplicates as they
    are (SciPy allows them and sums them wherever it matters, as torch
    does; ``has_canonical_format`` says which it is); call
    ``tensor.coalesce()`` first for a canonical one. torch's COO indices
    are one (ndim, nnz) int64 tensor: the array's coordinate arrays are
    views of its rows.

    Value dtypes SciPy lacks (float16, bfloat16, float8, complex32) raise
    TypeError: convert the tensor first (``tensor.float()``). A dense
    tensor raises TypeError pointing to ``tb.to_numpy``; hybrid tensors
    (dense dimensions in the values) and batched CSR/CSC raise ValueError.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(
            f"to_scipy: got {type(tensor).__name__}, not a torch sparse tensor; "
            "pass a tensor of layout torch.sparse_coo, sparse_csr or sparse_csc "
            "(torchbridge.to_tensor makes one from a scipy.sparse matrix).")
    layout = tensor.layout
    if layout == torch.strided:
        raise TypeError(
            "to_scipy: the tensor is dense (torch.strided), and scipy.sparse "
            "holds sparse matrices; use torchbridge.to_numpy(tensor) for a dense "
            "array, or tensor.to_sparse() first for a sparse one.")
    fmt = _LAYOUTS.get(layout)
    if fmt is None:
        raise TypeError(
            f"to_scipy: tensors of layout {layout} have no scipy.sparse array "
            "here; convert to torch.sparse_csr (tensor.to_sparse_csr()) or "
            "torch.sparse_coo (tensor.to_sparse()) first.")
    if tensor.dtype not in _SCIPY_DTYPES:
        raise TypeError(
            f"to_scipy: scipy.sparse has no {str(tensor.dtype).replace('torch.', '')} "
            "values; convert them first, e.g. tensor.to(torch.float32).")
    if tensor.dense_dim() != 0:
        raise ValueError(
            f"to_scipy: the tensor is hybrid ({tensor.dense_dim()} dense dimension(s) "
            "in its values), and scipy.sparse holds one number per entry; "
            "convert it with tensor.to_dense().to_sparse() first.")
    if fmt != "coo" and tensor.dim() != 2:
        raise ValueError(
            f"to_scipy: a batched {fmt.upper()} tensor (shape {tuple(tensor.shape)}) "
            f"has no scipy.sparse form; convert each matrix of the batch (tensor[i]).")

    import scipy.sparse as sp  # only here: importing torchbridge never needs SciPy

    t = tensor.detach()
    shape = tuple(t.shape)
    if fmt == "coo":
        coalesced = t.is_coalesced()
        indices = _to_numpy(t._indices())
        data = _to_numpy(t._values())
        out = sp.coo_array((data, tuple(indices)), shape=shape, copy=False)
        # SciPy may pick a narrower index dtype (a copy); keep ours, shared.
        if any(c.dtype != indices.dtype for c in out.coords):
            out.coords = tuple(indices)
        out.has_canonical_format = coalesced
        return out
    if fmt == "csr":
        ptr, idx = t.crow_indices(), t.col_indices()
        cls = sp.csr_array
    else:
        ptr, idx = t.ccol_indices(), t.row_indices()
        cls = sp.csc_array
    indptr, indices, data = _to_numpy(ptr), _to_numpy(idx), _to_numpy(t.values())
    out = cls((data, indices, indptr), shape=shape, copy=False)
    if out.indices.dtype != indices.dtype or out.indptr.dtype != indptr.dtype:
        out.indices, out.indptr = indices, indptr  # SciPy narrowed them (a copy)
    return out
