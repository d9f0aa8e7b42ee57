#pragma once
// Private interface of core/sparse.cpp for the front-ends and to_host.

#include <torchbridge/core.h>
#include <torchbridge/sparse.h>

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace torchbridge::detail {

// to_tensor(SparseView) naming `api` in errors. Takes the views' owners of
// the buffers it shares (the others still hold theirs on return).
at::Tensor sparse_to_tensor(SparseView& v, const CoerceOptions& o, const char* api);

// t.to_dense() for a sparse (or other non-strided) tensor, unless the dense
// result cannot fit: more bytes than this machine's physical memory, or an
// allocation that fails. Both raise torch.OutOfMemoryError naming the
// shape, the size and how to keep it sparse (torchbridge.to_scipy).
at::Tensor densify(const at::Tensor& t, const char* api);

// The physical memory of this machine in bytes (0 when unknown); what
// densify compares against.
uint64_t physical_memory_bytes();

}  // namespace torchbridge::detail
