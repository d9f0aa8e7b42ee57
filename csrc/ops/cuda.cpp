// CUDA kernels of the torchbridge operators. They run the core rules, which
// use only ATen ops and device-generic c10 interfaces, so this file needs no
// CUDA headers and compiles with every torch build; the registration is
// simply never reached on a build without CUDA.

#include "kernels.h"

#include <torch/library.h>

TORCH_LIBRARY_IMPL(torchbridge, CUDA, m) {
  m.impl("to_host", &torchbridge::ops::to_host_kernel);
  m.impl("coerce", &torchbridge::ops::coerce_kernel);
}
