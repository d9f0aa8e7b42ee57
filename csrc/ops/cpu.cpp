// CPU kernels of the torchbridge operators.

#include "kernels.h"

#include <torch/library.h>

TORCH_LIBRARY_IMPL(torchbridge, CPU, m) {
  m.impl("to_host", &torchbridge::ops::to_host_kernel);
  m.impl("coerce", &torchbridge::ops::coerce_kernel);
}
