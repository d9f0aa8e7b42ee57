// Meta kernels for C++ programs (the CMake library). In Python the fake
// kernels of torchbridge/_fake.py serve torch.compile, and
// torch.library.register_fake refuses an op that already has a C++ Meta
// kernel, so setup.py compiles this file out (TORCHBRIDGE_PYTHON_EXTENSION).

#ifndef TORCHBRIDGE_PYTHON_EXTENSION

#include "kernels.h"

#include "../core/internal.h"

#include <torch/library.h>

namespace torchbridge::ops {
namespace {

// A meta tensor has no data to bring to the host: the same ValueError as
// torchbridge::to_host gives.
at::Tensor to_host_meta(const at::Tensor& self, std::optional<at::ScalarType>,
                        bool) {
  detail::check_has_data(self, "torchbridge::to_host");
  TORCH_INTERNAL_ASSERT(false, "unreachable: a meta tensor has no data");
}

}  // namespace
}  // namespace torchbridge::ops

TORCH_LIBRARY_IMPL(torchbridge, Meta, m) {
  m.impl("to_host", &torchbridge::ops::to_host_meta);
  // coerce's rules work on meta tensors as they are (shape and dtype only;
  // moving one to a real device is refused with a ValueError).
  m.impl("coerce", &torchbridge::ops::coerce_kernel);
}

#endif  // TORCHBRIDGE_PYTHON_EXTENSION
