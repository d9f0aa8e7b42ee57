#pragma once
// SparseView: a Python-free description of a foreign sparse matrix (SciPy's
// CSR/CSC/COO parts, or any C++ program's), and the one place that decides
// how it becomes a torch sparse tensor: what is validated, what is shared,
// what is copied. The Python front-end only fills the view.

#include <torchbridge/array_view.h>
#include <torchbridge/core.h>

#include <ATen/core/Tensor.h>
#include <c10/core/Layout.h>
#include <c10/util/SmallVector.h>

#include <cstdint>
#include <vector>

namespace torchbridge {

struct SparseView {
  // at::kSparseCsr, at::kSparseCsc (2-D) or at::kSparse (COO, any rank).
  at::Layout layout = at::kSparseCsr;
  c10::SmallVector<int64_t, 4> shape;
  // CSR/CSC: {indptr, indices}: indptr has shape[major] + 1 entries (major:
  // rows for CSR, columns for CSC), indices at least indptr[-1].
  // COO: one index buffer per dimension (row, col, ...), nnz entries each.
  // 1-D buffers of any integer type and layout.
  std::vector<ArrayView> indices;
  // 1-D; as long as `indices[1]` (CSR/CSC: only the first indptr[-1] are
  // used, as in SciPy) or nnz (COO).
  ArrayView values;
};

// A torch sparse tensor of the view's layout (CSR -> sparse_csr, CSC ->
// sparse_csc, COO -> sparse_coo). Everything torch would trust is checked
// first, reading each buffer once: indptr starts at 0, never decreases and
// ends within the indices; every index is in range; lengths agree
// (ValueError naming the check; torch's own invariant checks are off by
// default, and a bad index would crash later). Sharing: an index buffer is
// shared when torch can hold it as it is (CSR/CSC: both int32 or else
// int64, contiguous, native; COO indices are one (ndim, nnz) int64 tensor
// in torch, so they are always copied, once, while being checked); the
// values follow to_tensor's rules (the float policy, dtype=, copy=).
// CSR/CSC whose indices are unsorted or repeat within a row/column
// (torch's invariant; SciPy allows them) are canonicalised in a copy,
// duplicates summed as SciPy does; copy=false raises ValueError naming
// that instead. COO is marked coalesced only when it is (sorted, unique).
// device=, pin_memory, non_blocking and requires_grad act as for arrays.
// While a shared buffer is converted (and after), writes to it are writes
// to the tensor: keep them valid.
at::Tensor to_tensor(SparseView view, const CoerceOptions& options = {});

}  // namespace torchbridge
