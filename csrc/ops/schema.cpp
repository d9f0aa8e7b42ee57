// The operator schemas: the only TORCH_LIBRARY block of the namespace.
// Backends register kernels in their own files (cpu.cpp, cuda.cpp,
// autograd.cpp); fake kernels for torch.compile live in torchbridge/_fake.py.

#include "kernels.h"

#include <torch/library.h>

TORCH_LIBRARY(torchbridge, m) {
  // coerce moves devices, which a C++ Meta kernel cannot express
  // (pytorch/pytorch#101807, #104367); Python processes load the fakes from
  // this module when they first trace the ops.
  m.set_python_module("torchbridge._fake");
  m.def(
      "to_host(Tensor self, ScalarType? dtype=None, bool pin_memory=False) "
      "-> Tensor");
  m.def(
      "coerce(Tensor self, ScalarType? dtype=None, Device? device=None, "
      "bool non_blocking=False) -> Tensor");
}
